"""SQL of the genealogy service (the only writer of lot_genealogy, production_runs, scenarios)
that reads lots as rows: the lot row's columns and the one-level trace."""

from __future__ import annotations

import asyncpg

from services.genealogy.effective import BLOCK_CTES

# Columns of a lot row (flowviz.core.lotrow.lot_message) with its own QC status from qc's read
# model; use with `FROM lots l` + LOT_STATUS_JOIN.
LOT_COLUMNS = (
    "l.lot_code, l.kind, l.product, l.quantity, l.uom, l.produced_at, l.created_at, q.status AS qc_status"
)
LOT_STATUS_JOIN = "LEFT JOIN qc_lot_status q ON q.lot_id = l.id"

LOT = f"SELECT l.id, {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN} WHERE l.lot_code = $1"

# The lot and both its neighbour levels, and what blocks each of them (effective.BLOCK_CTES),
# in one statement: one snapshot, one round trip. `rel` says which row is which: self, parent,
# child (by edge id), then 'block' rows (lot_id: the blocked lot; lot_code: the blocking lot;
# qc_status: its block status; edge_id: the decision; run_code: its reason).
NEIGHBOURS = f"""
WITH RECURSIVE
root AS (SELECT id FROM lots WHERE lot_code = $1),
nb AS (
    SELECT 'self' AS rel, root.id AS lot_id, NULL::numeric AS quantity, NULL::text AS uom,
           NULL::bigint AS run_id, 0::bigint AS edge_id
    FROM root
    UNION ALL
    SELECT 'parent', e.parent_lot_id, e.quantity, e.uom, e.run_id, e.id
    FROM root JOIN lot_genealogy e ON e.child_lot_id = root.id
    UNION ALL
    SELECT 'child', e.child_lot_id, e.quantity, e.uom, e.run_id, e.id
    FROM root JOIN lot_genealogy e ON e.parent_lot_id = root.id
),
answer_ids(a) AS (SELECT array_agg(DISTINCT lot_id ORDER BY lot_id) FROM nb),
{BLOCK_CTES}
SELECT nb.rel, nb.lot_id, {LOT_COLUMNS}, nb.quantity AS edge_quantity, nb.uom AS edge_uom,
       r.run_code, nb.edge_id, NULL::boolean AS own
FROM nb JOIN lots l ON l.id = nb.lot_id {LOT_STATUS_JOIN}
LEFT JOIN production_runs r ON r.id = nb.run_id
UNION ALL
SELECT 'block', b.id, b.lot_code, NULL, NULL, NULL, NULL, NULL, NULL, b.status, NULL, NULL,
       b.reason, b.decision_id, b.own
FROM eff_blocks b
ORDER BY rel DESC, edge_id
"""


async def neighbours(pool: asyncpg.Pool, lot_code: str) -> list[asyncpg.Record]:
    return await pool.fetch(NEIGHBOURS, lot_code)
