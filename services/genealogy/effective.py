"""Effective QC status of the lots of an answer, from qc's read model (qc_lot_blocks).

A lot is blocked when it or any ancestor has a row in qc_lot_blocks (its own latest decision
is hold or reject; qc maintains the table in the decision's transaction). One statement per
answer: the ancestors of the answer's lots, the blocks among them, and the walk down from
each block within those ancestors to the lots it blocks. It costs nothing beyond one probe
while no lot is blocked at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flowviz.core.db import DB
from flowviz.core.lotrow import effective_status
from flowviz.lots.v1 import lots_pb2

_BLOCKS = """
WITH RECURSIVE
kept(id) AS (SELECT unnest($1::bigint[])),
up(id) AS (
    SELECT id FROM kept WHERE EXISTS (SELECT 1 FROM qc_lot_blocks)
    UNION
    SELECT e.parent_lot_id FROM up JOIN lot_genealogy e ON e.child_lot_id = up.id
),
found AS (SELECT b.lot_id, b.status, b.decision_id, b.reason FROM qc_lot_blocks b JOIN up ON up.id = b.lot_id),
reach(block_id, id) AS (
    SELECT lot_id, lot_id FROM found
    UNION
    SELECT r.block_id, e.child_lot_id FROM reach r JOIN lot_genealogy e ON e.parent_lot_id = r.id
    WHERE e.child_lot_id IN (SELECT id FROM up)
)
SELECT k.lot_code, b.lot_code AS blocking_code, f.status, f.decision_id, f.reason
FROM reach r
JOIN found f ON f.lot_id = r.block_id
JOIN lots b ON b.id = r.block_id
JOIN lots k ON k.id = r.id
WHERE r.id IN (SELECT id FROM kept)
ORDER BY k.lot_code, r.block_id <> r.id, b.lot_code
"""


@dataclass(frozen=True, slots=True)
class Block:
    lot_code: str  # the lot whose own decision blocks (the lot itself or an ancestor)
    status: str  # on_hold or rejected
    decision_id: int
    reason: str


async def blocks(db: DB, lot_ids: Iterable[int]) -> dict[str, list[Block]]:
    """lot code -> what blocks it (its own block first), for the blocked ones among `lot_ids`."""
    found: dict[str, list[Block]] = {}
    for row in await db.fetch(_BLOCKS, list(lot_ids)):
        found.setdefault(row[0], []).append(Block(row[1], row[2], row[3], row[4]))
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
