"""Effective QC status of the lots of an answer, from qc's read model (qc_lot_blocks).

A lot is blocked when it or any ancestor has a row in qc_lot_blocks (its own latest decision
is hold or reject; qc maintains the table in the decision's transaction). One statement per
answer: the ancestors of the answer's lots, the blocks among them, and the walk down from
each block within those ancestors to the lots it blocks. It costs nothing beyond one probe
while no lot is blocked at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flowviz.core.db import DB
from flowviz.core.lotrow import effective_status
from flowviz.lots.v1 import lots_pb2

# $1: the answer's lot ids, sorted. Each step looks edges up by index (LATERAL ... OFFSET 0):
# the planner cannot size a recursive CTE, and its guesses hash-joined the whole edge table on
# every step (seconds for a 10,000-lot answer). Membership in a sorted id array is a binary
# search (width_bucket), as in trace.py.
_BLOCKS = """
WITH RECURSIVE
up(id) AS (
    SELECT unnest($1::bigint[]) WHERE EXISTS (SELECT 1 FROM qc_lot_blocks)
    UNION
    SELECT p.parent_lot_id
    FROM up u
    CROSS JOIN LATERAL (
        SELECT g.parent_lot_id FROM lot_genealogy g WHERE g.child_lot_id = u.id OFFSET 0
    ) p
),
closure AS (SELECT array_agg(id ORDER BY id) AS a FROM up),
found AS (
    SELECT b.lot_id, b.status, b.decision_id, b.reason,
           (SELECT l.lot_code FROM lots l WHERE l.id = b.lot_id) AS lot_code
    FROM closure c CROSS JOIN LATERAL unnest(c.a) AS x (id) JOIN qc_lot_blocks b ON b.lot_id = x.id
),
reach(block_id, id) AS (
    SELECT lot_id, lot_id FROM found
    UNION
    SELECT r.block_id, e.child_lot_id
    FROM reach r
    CROSS JOIN LATERAL (
        SELECT g.child_lot_id FROM lot_genealogy g WHERE g.parent_lot_id = r.id OFFSET 0
    ) e
    CROSS JOIN closure c
    WHERE coalesce(c.a[width_bucket(e.child_lot_id, c.a)] = e.child_lot_id, false)
)
SELECT r.id, f.lot_code, f.status, f.decision_id, f.reason
FROM reach r JOIN found f ON f.lot_id = r.block_id
WHERE coalesce(($1::bigint[])[width_bucket(r.id, $1::bigint[])] = r.id, false)
ORDER BY r.id, r.block_id <> r.id, f.lot_code
"""


@dataclass(frozen=True, slots=True)
class Block:
    lot_code: str  # the lot whose own decision blocks (the lot itself or an ancestor)
    status: str  # on_hold or rejected
    decision_id: int
    reason: str


async def blocks(db: DB, lots: Mapping[int, str]) -> dict[str, list[Block]]:
    """lot code -> what blocks it (its own block first), for the blocked ones among `lots`
    (lot id -> code)."""
    found: dict[str, list[Block]] = {}
    for row in await db.fetch(_BLOCKS, sorted(lots)):
        found.setdefault(lots[row[0]], []).append(Block(row[1], row[2], row[3], row[4]))
    return found


def fill(lots: Iterable[lots_pb2.Lot], found: dict[str, list[Block]]) -> None:
    """Set effective_status and blocking on each lot message (own status already set)."""
    for lot in lots:
        blocking = found.get(lot.lot_code)
        if not blocking:
            lot.effective_status = lot.status
            continue
        lot.effective_status = effective_status(lot.status, (b.status for b in blocking))
        lot.blocking.extend(
            lots_pb2.LotBlock(
                lot_code=b.lot_code, status=b.status, decision_id=b.decision_id, reason=b.reason
            )
            for b in blocking
        )
