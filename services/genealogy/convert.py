"""The trace engine's results (plain dataclasses) as protobuf messages."""

from __future__ import annotations

from typing import Any

from flowviz.core import lotrow
from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from services.genealogy.accountability import Accountability
from services.genealogy.balance import LotBalance
from services.genealogy.recall import CompositionLot, CompositionResult, KindTotal, RecallLot, RecallResult
from services.genealogy.trace import Direction, TraceEdge, TraceNode, TraceResult

DIRECTION_OF_ENUM: dict[int, Direction] = {
    genealogy_pb2.DIRECTION_UNSPECIFIED: "both",
    genealogy_pb2.DIRECTION_UPSTREAM: "upstream",
    genealogy_pb2.DIRECTION_DOWNSTREAM: "downstream",
    genealogy_pb2.DIRECTION_BOTH: "both",
}
ENUM_OF_DIRECTION = {
    "upstream": genealogy_pb2.DIRECTION_UPSTREAM,
    "downstream": genealogy_pb2.DIRECTION_DOWNSTREAM,
    "both": genealogy_pb2.DIRECTION_BOTH,
}
INT64_MAX = 2**63 - 1


def lot(node: TraceNode) -> lots_pb2.Lot:
    return lots_pb2.Lot(**lot_fields(node))


def lot_fields(node: TraceNode) -> dict[str, Any]:
    return lotrow.lot_fields(
        lot_code=node.lot_code,
        kind=node.kind,
        product=node.product,
        quantity=node.quantity,
        uom=node.uom,
        status=node.status,
        produced_at=node.produced_at,
        created_at=node.created_at,
    )


def node(n: TraceNode) -> genealogy_pb2.TraceNode:
    return genealogy_pb2.TraceNode(lot=lot(n), depth=n.depth, side=n.side)


def edge(e: TraceEdge) -> genealogy_pb2.TraceEdge:
    return genealogy_pb2.TraceEdge(
        parent=e.parent_code,
        child=e.child_code,
        quantity=e.quantity,
        uom=e.uom,
        run_code=e.run_code,
        edge_id=e.edge_id,
    )


def cycles(found: list[list[str]]) -> list[genealogy_pb2.Cycle]:
    return [genealogy_pb2.Cycle(lot_codes=c) for c in found]


def graph(result: TraceResult) -> genealogy_pb2.GetTraceGraphResponse:
    return genealogy_pb2.GetTraceGraphResponse(
        root=result.root.lot_code,
        direction=ENUM_OF_DIRECTION[result.direction],
        nodes=[node(n) for n in result.nodes],
        edges=[edge(e) for e in result.edges],
        truncated=result.truncated,
        cycles=cycles(result.cycles),
    )


# Recall answers list thousands of lots: each is given as constructor values and the answer
# built in one constructor, not a message per lot copied into it.
def _recall_lot(r: RecallLot) -> dict[str, Any]:
    return {
        "lot": lot_fields(r.lot),
        "depth": r.lot.depth,
        "path_count": min(r.path_count, INT64_MAX),
        "root_share": r.root_share,
        "root_quantity": r.root_quantity,
    }


def _composition_lot(c: CompositionLot) -> dict[str, Any]:
    return {
        "lot": lot_fields(c.lot),
        "depth": c.lot.depth,
        "path_count": min(c.path_count, INT64_MAX),
        "share": c.share,
        "quantity_in_root": c.quantity_in_root,
        "is_source": c.is_source,
    }


def recall_lot(r: RecallLot) -> genealogy_pb2.RecallLot:
    return genealogy_pb2.RecallLot(**_recall_lot(r))


def composition_lot(c: CompositionLot) -> genealogy_pb2.CompositionLot:
    return genealogy_pb2.CompositionLot(**_composition_lot(c))


def kind_total(t: KindTotal) -> genealogy_pb2.KindTotal:
    return genealogy_pb2.KindTotal(
        kind=t.kind,
        lots=t.lots,
        quantity_kg=t.quantity_kg,
        root_quantity_kg=t.root_quantity_kg,
        lots_not_in_kg=t.lots_not_in_kg,
    )


def recall(down: RecallResult, up: CompositionResult) -> genealogy_pb2.GetRecallImpactResponse:
    fields: dict[str, Any] = {
        "root": _recall_lot(down.root),
        "downstream": [_recall_lot(r) for r in down.lots[1:]],
        "totals": [kind_total(t) for t in down.totals],
        "upstream": [_composition_lot(c) for c in up.lots[1:]],
        "sources_share": up.sources_share,
        "truncated": down.truncated or up.truncated,
        "cycles": cycles(down.cycles + [c for c in up.cycles if c not in down.cycles]),
    }
    return genealogy_pb2.GetRecallImpactResponse(**fields)


def lot_balance(b: LotBalance) -> genealogy_pb2.GetLotBalanceResponse:
    return genealogy_pb2.GetLotBalanceResponse(
        lot_code=b.lot_code,
        kind=b.kind,
        lot_quantity=b.lot_quantity,
        lot_uom=b.lot_uom,
        unit=b.unit,
        quantity=b.quantity,
        inputs=b.inputs,
        consumed_by_children=b.consumed_by_children,
        remaining=b.remaining,
        input_vs_output_diff=b.input_vs_output_diff,
        input_edges=b.input_edges,
        output_edges=b.output_edges,
        tolerance=b.tolerance,
        flags=b.flags,
        shipped=b.shipped,
        shipments=b.shipments,
    )


def accountability(a: Accountability) -> genealogy_pb2.DrillAccountability:
    return genealogy_pb2.DrillAccountability(
        unit=a.unit,
        root_quantity=a.root_quantity,
        basis=a.basis,
        children=[
            genealogy_pb2.DrillChild(lot_code=c.lot_code, quantity=c.quantity, root_quantity=c.root_quantity)
            for c in a.children
        ],
        in_stock=a.in_stock,
        downstream=a.downstream,
        end_lots=a.end_lots,
        end_lot_count=a.end_lot_count,
        unaccounted=a.unaccounted,
        unaccounted_percent=a.unaccounted_percent,
        explained_by_losses=a.explained_by_losses,
        runs=[
            genealogy_pb2.DrillRun(
                run_code=r.run_code,
                lot_code=r.lot_code,
                flag=r.flag,
                inputs=r.inputs,
                quantity=r.quantity,
                outputs=r.outputs,
                root_lost=r.root_lost,
            )
            for r in a.runs
        ],
        runs_not_listed=a.runs_not_listed,
        lots_not_in_unit=a.lots_not_in_unit,
        trace_ms=a.trace_ms,
        tolerance=a.tolerance,
        within_tolerance=a.within_tolerance,
        truncated=a.truncated,
    )
