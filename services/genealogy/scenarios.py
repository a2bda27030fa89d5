"""Mock-recall drills: run the full recall, freeze the answer with who ran it, when and how long
it took. A snapshot is stored as JSON and read back unchanged, whatever happens later."""

from __future__ import annotations

import asyncpg
import orjson

from flowviz.core.db import DB
from flowviz.core.protojson import fill
from flowviz.genealogy.v1 import genealogy_pb2

COLUMNS = """
s.id, s.name, l.lot_code AS root_lot_code, u.username AS created_by, s.created_at, s.duration_ms
"""
FROM = "scenarios s JOIN lots l ON l.id = s.root_lot_id JOIN users u ON u.id = s.created_by"


async def insert(
    conn: DB, name: str, lot_code: str, username: str, duration_ms: float, snapshot: bytes
) -> int:
    value = await conn.fetchval(
        "INSERT INTO scenarios (name, root_lot_id, created_by, duration_ms, snapshot) "
        "SELECT $1, l.id, u.id, $4, $5::jsonb FROM lots l, users u WHERE l.lot_code = $2 AND u.username = $3 "
        "RETURNING id",
        name,
        lot_code,
        username,
        duration_ms,
        snapshot.decode(),
    )
    assert value is not None, "lot and user were checked before"
    return int(value)


async def get(db: DB, scenario_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {COLUMNS}, s.snapshot::text AS snapshot FROM {FROM} WHERE s.id = $1", scenario_id
    )


async def page(db: DB, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {COLUMNS} FROM {FROM} WHERE s.id > $1 ORDER BY s.id LIMIT $2", after_id, limit
    )


def message(row: asyncpg.Record, with_snapshot: bool = True) -> genealogy_pb2.Scenario:
    scenario = genealogy_pb2.Scenario(
        id=row["id"],
        name=row["name"],
        root_lot_code=row["root_lot_code"],
        created_by=row["created_by"],
        duration_ms=row["duration_ms"],
    )
    scenario.created_at.FromDatetime(row["created_at"])
    if with_snapshot:
        # Re-serialized compactly; jsonb keeps the content, not the byte layout.
        snapshot = orjson.loads(row["snapshot"])
        scenario.snapshot_json = orjson.dumps(snapshot).decode()
        if isinstance(snapshot, dict) and snapshot.get("accountability"):
            fill(scenario.accountability, snapshot["accountability"])
    return scenario
