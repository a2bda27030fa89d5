"""The one table from database constraint to reason (flowviz/core/constraints.py), against the
real schema: every unique key is in it or answered in SQL, and a real violation maps to the
reason, field and value a caller needs."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from flowviz.core.constraints import ANSWERED_IN_SQL, UNIQUE, database_error

UNIQUE_KEYS = """
SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND NOT i.indisprimary AND n.nspname = 'public'
"""


async def test_every_unique_key_has_a_reason(empty_db_url: str) -> None:
    conn = await asyncpg.connect(empty_db_url)
    try:
        names = {r[0] for r in await conn.fetch(UNIQUE_KEYS)}
    finally:
        await conn.close()
    assert names - UNIQUE.keys() - ANSWERED_IN_SQL == set(), "a unique key without a reason"
    assert (UNIQUE.keys() | ANSWERED_IN_SQL) - names == set(), "a reason for a key the schema lacks"


async def _violation(url: str, sql: str) -> asyncpg.UniqueViolationError:
    conn = await asyncpg.connect(url)
    try:
        with pytest.raises(asyncpg.UniqueViolationError) as caught:
            await conn.execute(sql)
    finally:
        await conn.close()
    return caught.value


async def test_a_taken_lot_code_is_lot_exists_naming_it(seeded_db_url: str) -> None:
    exc = await _violation(
        seeded_db_url,
        "INSERT INTO lots (lot_code, product, kind, quantity, uom, produced_at) "
        "SELECT lot_code, product, kind, quantity, uom, produced_at FROM lots WHERE lot_code = 'FG-DONER-X1'",
    )
    error = database_error(exc)
    assert error is not None and error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "LOT_EXISTS" and error.message == "lot FG-DONER-X1 already exists"
    assert error.metadata == {"field": "lot_code", "lot_code": "FG-DONER-X1"}


async def test_a_composite_key_names_the_callers_value(seeded_db_url: str) -> None:
    exc = await _violation(
        seeded_db_url,
        "INSERT INTO streams (code, name) VALUES ('S-KEY', 'keys');"
        "INSERT INTO phases (stream_id, code, name, seq) SELECT id, 'MIX', 'mix', 1 FROM streams WHERE code = 'S-KEY';"
        "INSERT INTO phases (stream_id, code, name, seq) SELECT id, 'MIX', 'again', 2 FROM streams WHERE code = 'S-KEY'",
    )
    error = database_error(exc)
    assert error is not None and error.reason == "PHASE_EXISTS" and error.metadata["field"] == "code"
    assert error.message == "the stream already has phase MIX" and error.metadata["code"] == "MIX"


def test_an_unknown_key_is_still_a_409() -> None:
    exc = asyncpg.UniqueViolationError("duplicate key")
    exc.constraint_name = "some_new_key"  # type: ignore[attr-defined]
    error = database_error(exc)
    assert (
        error is not None
        and error.code == grpc.StatusCode.ALREADY_EXISTS
        and error.reason == "ALREADY_EXISTS"
    )
