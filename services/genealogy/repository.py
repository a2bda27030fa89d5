"""SQL of the genealogy service (the only writer of lot_genealogy, production_runs, scenarios)."""

from __future__ import annotations

import asyncpg

from flowviz.core.lotrow import LOT_COLUMNS, LOT_STATUS_JOIN

LOT = f"SELECT {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN} WHERE l.lot_code = $1"

# The lot and both its neighbour levels in one round trip; `rel` says which is which.
NEIGHBOURS = f"""
WITH root AS (SELECT id FROM lots WHERE lot_code = $1)
SELECT 'self' AS rel, {LOT_COLUMNS}, NULL::numeric AS edge_quantity, NULL::text AS edge_uom,
       NULL::text AS run_code, 0::bigint AS edge_id
FROM root JOIN lots l ON l.id = root.id {LOT_STATUS_JOIN}
UNION ALL
SELECT 'parent', {LOT_COLUMNS}, e.quantity, e.uom, r.run_code, e.id
FROM root JOIN lot_genealogy e ON e.child_lot_id = root.id
JOIN lots l ON l.id = e.parent_lot_id {LOT_STATUS_JOIN}
LEFT JOIN production_runs r ON r.id = e.run_id
UNION ALL
SELECT 'child', {LOT_COLUMNS}, e.quantity, e.uom, r.run_code, e.id
FROM root JOIN lot_genealogy e ON e.parent_lot_id = root.id
JOIN lots l ON l.id = e.child_lot_id {LOT_STATUS_JOIN}
LEFT JOIN production_runs r ON r.id = e.run_id
ORDER BY rel DESC, edge_id
"""


async def neighbours(pool: asyncpg.Pool, lot_code: str) -> list[asyncpg.Record]:
    return await pool.fetch(NEIGHBOURS, lot_code)
