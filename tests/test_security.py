"""Hardening (issue 19): each test names the finding it covers and fails on the code before its fix."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import grpc
import httpx
import psycopg
import pytest

from flowviz.core import validation
from flowviz.core.errors import DomainError
from flowviz.core.server import database_error
from services.lots import users

# --- 8: validation matches the whole string; the database checks the same codes ---------------

RULES: list[tuple[Callable[[str], str], str]] = [
    (validation.lot_code, "SEC-NL"),
    (validation.kind, "RAW"),
    (validation.code, "DONER"),
    (users.username, "eve"),
]


@pytest.mark.parametrize(("rule", "good"), RULES, ids=lambda r: getattr(r, "__name__", r))
def test_a_trailing_newline_fails_every_rule(rule: Callable[[str], str], good: str) -> None:
    assert rule(good) == good
    with pytest.raises(DomainError) as refused:
        rule(good + "\n")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


LOT = {"kind": "RAW", "product": "x", "quantity": 1, "uom": "kg"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [("/api/lots", {**LOT, "lot_code": "SEC-NL\n"}, "lot_code"),
     ("/api/lots", {**LOT, "lot_code": "SEC-NL-KIND", "kind": "RAW\n"}, "kind"),
     ("/api/users", {"username": "eve\n", "role": "viewer", "password": "a-long-pass-phrase-2026"}, "username"),
     ("/api/streams", {"code": "SECNL\n", "name": "x"}, "code")],
)  # fmt: skip
def test_a_trailing_newline_is_a_400_naming_the_field(
    http: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == field
    if field == "lot_code":
        assert http.get("/api/lots/SEC-NL").status_code == 404


def test_a_code_with_a_newline_in_a_path_or_query_is_a_400(http: httpx.Client) -> None:
    assert http.get("/api/traceability/FG-DONER-X1%0A/export.csv").status_code == 400
    r = http.get("/api/lots", params={"lot_code_prefix": "FG\n"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "lot_code_prefix", r.text


BAD_ROWS = [
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('SEC-NL\n', 'RAW', 'x', 1, 'kg')"),
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('bad code', 'RAW', 'x', 1, 'kg')"),
    ("production_runs", "INSERT INTO production_runs (run_code) VALUES ('RUN-1\n')"),
    ("streams", "INSERT INTO streams (code, name) VALUES ('doner', 'x')"),
    ("phases", "INSERT INTO phases (stream_id, code, name, seq) SELECT id, 'MIX\n', 'x', 9 FROM streams"),
    ("qc_gates", "INSERT INTO qc_gates (code, name, phase_id) SELECT 'G 1', 'x', min(id) FROM phases"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "sql"), BAD_ROWS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(BAD_ROWS)])
def test_the_database_refuses_a_code_the_api_refuses(seeded_db_url: str, table: str, sql: str) -> None:
    with psycopg.connect(seeded_db_url) as conn, pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(sql)
    assert refused.value.diag.table_name == table


async def test_a_check_violation_is_a_400_naming_the_field(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await conn.execute(BAD_ROWS[0][1])
    finally:
        await conn.close()
    error = database_error(refused.value)
    assert error is not None and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "lot_code" and error.message.startswith("lot_code ")
