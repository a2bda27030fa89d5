"""Graph and recall answers as sent: the walk, its messages, and every lot's effective status
(one more statement, services.genealogy.effective)."""

from __future__ import annotations

from flowviz.core.db import DB
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import convert, effective, recall, receiving, shipping, trace
from services.genealogy.trace import Direction


async def graph(
    db: DB, code: str, *, direction: Direction, max_depth: int, max_nodes: int
) -> genealogy_pb2.GetTraceGraphResponse | None:
    """None when the lot does not exist."""
    result = await trace.trace(db, code, direction=direction, max_depth=max_depth, max_nodes=max_nodes)
    if result is None:
        return None
    response = convert.graph(result)
    found = await effective.blocks(db, {n.lot_id: n.lot_code for n in result.nodes})
    effective.fill((n.lot for n in response.nodes), found)
    # Material in from upstream (receipts of the root and its ancestors), goods out downstream
    # (shipments of the root and its descendants). One after the other: `db` may be one connection.
    ids = {
        side: [n.lot_id for n in result.nodes if n.side in ("root", side)]
        for side in ("upstream", "downstream")
    }
    response.receipts.extend(await receiving.of_lots(db, ids["upstream"]))
    response.shipments.extend(await shipping.of_lots(db, ids["downstream"]))
    return response


async def recall_impact(
    db: DB, code: str, *, max_depth: int, max_nodes: int
) -> tuple[genealogy_pb2.GetRecallImpactResponse, recall.RecallResult] | None:
    """The answer and the downstream result it came from; None when the lot does not exist."""
    down = await recall.recall(db, code, max_depth=max_depth, max_nodes=max_nodes)
    up = await recall.composition(db, code, max_depth=max_depth, max_nodes=max_nodes)
    if down is None or up is None:
        return None
    response = convert.recall(down, up)
    ids = {r.lot.lot_id: r.lot.lot_code for r in down.lots} | {c.lot.lot_id: c.lot.lot_code for c in up.lots}
    lots = [response.root.lot, *(r.lot for r in response.downstream), *(c.lot for c in response.upstream)]
    effective.fill(lots, await effective.blocks(db, ids))
    return response, down
