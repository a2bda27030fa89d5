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
),
-- every ancestor of the lots downstream: their traces, graphs and recalls show those lots
down_up(id) AS (
    SELECT id FROM down WHERE $4
    UNION
    SELECT e.parent_lot_id FROM lot_genealogy e JOIN down_up ON e.child_lot_id = down_up.id
)
-- Codes looked up one id at a time (index): the planner cannot size a recursive CTE and would
-- otherwise hash-join the whole lots table.
SELECT (SELECT l.lot_code FROM lots l WHERE l.id = x.id) AS lot_code
FROM (
    SELECT id FROM seed UNION SELECT id FROM up UNION SELECT id FROM down UNION SELECT id FROM down_up
) x
"""

# Each seed with each of its ancestors (not itself); {seed} selects the seeds' ids.
_ANCESTORS_OF = """
WITH RECURSIVE seed(id) AS ({seed}),
up(root, id) AS (
    SELECT id, id FROM seed
    UNION
    SELECT up.root, e.parent_lot_id FROM lot_genealogy e JOIN up ON e.child_lot_id = up.id
)
SELECT (SELECT l.lot_code FROM lots l WHERE l.id = up.root) AS lot_code,
       array_agg((SELECT l.lot_code FROM lots l WHERE l.id = up.id)) FILTER (WHERE up.id <> up.root) AS ancestors
FROM up GROUP BY up.root
"""
ANCESTORS = _ANCESTORS_OF.format(seed="SELECT id FROM lots WHERE lot_code = ANY($1::text[])")
# The same for a lot and its direct parents and children, from the lot's code alone.
NEIGHBOURHOOD_ANCESTORS = _ANCESTORS_OF.format(
    seed="""
    SELECT id FROM lots WHERE lot_code = $1
    UNION SELECT e.parent_lot_id FROM lots l JOIN lot_genealogy e ON e.child_lot_id = l.id WHERE l.lot_code = $1
    UNION SELECT e.child_lot_id FROM lots l JOIN lot_genealogy e ON e.parent_lot_id = l.id WHERE l.lot_code = $1"""
)


async def related(
    conn: DB, lot_codes: list[str], *, up: bool, down: bool, down_parents: bool = False
) -> list[str]:
    """The lots whose cached answers can show the seeds (or, with `down_parents`, lots whose
    effective status the seeds decide: every lot whose walk reaches a lot downstream)."""
    return [r["lot_code"] for r in await conn.fetch(RELATED, lot_codes, up, down, down_parents)]


async def ancestors(conn: DB, lot_codes: list[str]) -> dict[str, list[str]]:
    return {r["lot_code"]: list(r["ancestors"] or ()) for r in await conn.fetch(ANCESTORS, lot_codes)}


async def neighbourhood_ancestors(conn: DB, lot_code: str) -> dict[str, list[str]]:
    """`ancestors()` of the lot and of its direct parents and children, without knowing them first
    (so it can run beside the query that reads them)."""
    return {
        r["lot_code"]: list(r["ancestors"] or ()) for r in await conn.fetch(NEIGHBOURHOOD_ANCESTORS, lot_code)
    }
