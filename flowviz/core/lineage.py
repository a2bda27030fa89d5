"""Read-only lineage SQL shared by the services that must know who is related to whom.

UNION (not UNION ALL) in the recursive terms makes each lot appear once, so these walks
terminate on cycles and stay proportional to the number of lots reached.
"""

from __future__ import annotations

from flowviz.core.db import DB

# Every lot upstream and/or downstream of the seeds, the seeds included.
RELATED = """
WITH RECURSIVE
seed AS (SELECT id FROM lots WHERE lot_code = ANY($1::text[])),
up(id) AS (
    SELECT id FROM seed WHERE $2
    UNION
    SELECT e.parent_lot_id FROM lot_genealogy e JOIN up ON e.child_lot_id = up.id
),
down(id) AS (
    SELECT id FROM seed WHERE $3
    UNION
    SELECT e.child_lot_id FROM lot_genealogy e JOIN down ON e.parent_lot_id = down.id
)
SELECT l.lot_code FROM lots l
WHERE l.id IN (
    SELECT id FROM seed UNION SELECT id FROM up UNION SELECT id FROM down
    -- the other parents of the lots downstream: their one-level answers show those lots
    UNION SELECT e.parent_lot_id FROM lot_genealogy e JOIN down ON e.child_lot_id = down.id WHERE $4
)
"""

# Each seed with each of its ancestors (not itself).
ANCESTORS = """
WITH RECURSIVE up(root, id) AS (
    SELECT id, id FROM lots WHERE lot_code = ANY($1::text[])
    UNION
    SELECT up.root, e.parent_lot_id FROM lot_genealogy e JOIN up ON e.child_lot_id = up.id
)
SELECT r.lot_code AS lot_code, array_remove(array_agg(a.lot_code), r.lot_code) AS ancestors
FROM up JOIN lots r ON r.id = up.root JOIN lots a ON a.id = up.id
GROUP BY r.lot_code
"""


async def related(
    conn: DB, lot_codes: list[str], *, up: bool, down: bool, down_parents: bool = False
) -> list[str]:
    """The lots whose cached answers can show the seeds (or, with `down_parents`, lots whose
    effective status the seeds decide)."""
    return [r["lot_code"] for r in await conn.fetch(RELATED, lot_codes, up, down, down_parents)]


async def ancestors(conn: DB, lot_codes: list[str]) -> dict[str, list[str]]:
    return {r["lot_code"]: list(r["ancestors"]) for r in await conn.fetch(ANCESTORS, lot_codes)}
