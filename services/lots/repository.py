"""SQL of the lots service (the only writer of lots, streams, phases and users)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from flowviz.core.lotrow import LOT_COLUMNS, LOT_STATUS_JOIN

GET_LOT = f"SELECT {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN} WHERE l.lot_code = $1"

LIST_LOTS = f"""
SELECT l.id, {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN}
WHERE l.id > $1 AND ($2 = '' OR l.kind = $2) AND ($3 = '' OR l.product = $3)
ORDER BY l.id LIMIT $4
"""

INSERT_LOT = """
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING lot_code, kind, product, quantity, uom, produced_at, created_at, NULL::text AS decision
"""


async def get_lot(pool: asyncpg.Pool, lot_code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(GET_LOT, lot_code)


async def list_lots(
    pool: asyncpg.Pool, *, after_id: int, kind: str, product: str, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_LOTS, after_id, kind, product, limit)


async def insert_lot(
    pool: asyncpg.Pool,
    *,
    lot_code: str,
    kind: str,
    product: str,
    quantity: float,
    uom: str,
    produced_at: datetime | None,
) -> asyncpg.Record:
    row = await pool.fetchrow(INSERT_LOT, lot_code, kind, product, quantity, uom, produced_at)
    assert row is not None
    return row
