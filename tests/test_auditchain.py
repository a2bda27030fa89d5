"""The audit log as a hash chain (migration 0010) and `flowviz audit verify`: concurrent writers
keep one linear chain; a row edited, deleted or inserted behind the database's rules (as the
superuser, with the append-only and chain triggers off) is named by the walk."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import psycopg
import pytest

from flowviz.tools import auditchain
from tests.conftest import ROOT

INSERT = "INSERT INTO audit_log (actor, action, entity, entity_key, reason, details) VALUES (%s, %s, %s, %s, %s, %s)"


def write(url: str, n: int, who: str = "t") -> None:
    with psycopg.connect(url) as conn:
        for i in range(n):
            with conn.transaction():
                conn.execute(INSERT, (who, "create", "lot", f"L{i}", "", f'{{"i": {i}}}'))


def ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY seq")]


def behind_the_rules(url: str, sql: str, *args: object) -> None:
    """As the database superuser, with every trigger off (session_replication_role = replica)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql, args or None)


@pytest.fixture
def chained(empty_db_url: str) -> str:
    """A log of 30 rows: single inserts, one multi-row statement, and six writers at once."""
    write(empty_db_url, 5)
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_key) "
            "SELECT 'bulk', 'create', 'lot', 'B' || g FROM generate_series(1, 7) g"
        )
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda w: write(empty_db_url, 3, f"w{w}"), range(6)))
    return empty_db_url


def test_concurrent_writers_make_one_linear_chain(chained: str) -> None:
    result = auditchain.verify(chained)
    assert result.ok, result.message
    assert result.rows == 30
    with psycopg.connect(chained) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_log ORDER BY seq")]
        head = conn.execute("SELECT encode(hash, 'hex') FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert seqs == list(range(1, 31))
    assert head is not None and result.head == head[0]


def test_the_rules_still_refuse_a_plain_update(chained: str) -> None:
    with psycopg.connect(chained) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE audit_log SET reason = 'x'")


def test_an_edited_row_is_named(chained: str) -> None:
    target = ids(chained)[11]
    behind_the_rules(chained, "UPDATE audit_log SET details = '{\"i\": 99}' WHERE id = %s", target)
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem, result.rows) == (target, "edited", 11)


def test_an_edited_and_rehashed_row_is_named(chained: str) -> None:
    order = ids(chained)
    target = order[4]
    behind_the_rules(
        chained,
        "UPDATE audit_log SET actor = 'someone else', hash = flowviz_audit_digest(seq, prev_hash, at, "
        "'someone else', action, entity, entity_key, reason, details) WHERE id = %s",
        target,
    )
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem) == (target, "edited"), result.message


def test_a_deleted_row_is_found_at_the_gap(chained: str) -> None:
    order = ids(chained)
    behind_the_rules(chained, "DELETE FROM audit_log WHERE id = %s", order[20])
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem, result.rows) == (order[21], "deleted", 20)
    assert "seq 21..21" in result.message


def test_a_row_inserted_behind_the_rules_is_named(chained: str) -> None:
    with psycopg.connect(chained, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        row = conn.execute(INSERT + " RETURNING id", ("intruder", "create", "lot", "X", "", "{}")).fetchone()
    assert row is not None
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem) == (row[0], "inserted")


def test_the_command_says_it(chained: str) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": chained, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "flowviz.tools.cli", "audit", "verify"],
            env=env,
            capture_output=True,
            text=True,
        )

    ok = run()
    assert ok.returncode == 0 and "audit chain intact: 30 rows" in ok.stdout, ok.stderr
    target = ids(chained)[2]
    behind_the_rules(chained, "UPDATE audit_log SET reason = 'changed' WHERE id = %s", target)
    broken = run()
    assert broken.returncode == 1
    assert f"row {target} (seq 3) was edited" in broken.stderr
