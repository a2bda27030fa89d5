"""Protobuf -> JSON-ready dicts (hand-written for the hot messages: MessageToDict is slow)."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2


def timestamp(ts: timestamp_pb2.Timestamp) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToJsonString()


def lot(m: lots_pb2.Lot) -> dict[str, Any]:
    return {
        "lot_code": m.lot_code,
        "kind": m.kind,
        "product": m.product,
        "quantity": m.quantity,
        "uom": m.uom,
        "status": m.status,
        "produced_at": timestamp(m.produced_at),
        "created_at": timestamp(m.created_at),
    }


def linked(m: genealogy_pb2.LinkedLot) -> dict[str, Any]:
    out = lot(m.lot)
    out["edge_quantity"] = m.edge_quantity
    out["edge_uom"] = m.edge_uom
    out["run_code"] = m.run_code or None
    return out


def traceability(m: genealogy_pb2.GetTraceabilityResponse) -> dict[str, Any]:
    return {
        "lot": lot(m.lot),
        "parents": [linked(p) for p in m.parents],
        "children": [linked(c) for c in m.children],
    }


DECISION_NAMES = {v: k for k, v in qc_pb2.Decision.items()}


def qc_decision(m: qc_pb2.QcDecision) -> dict[str, Any]:
    return {
        "id": m.id,
        "lot_code": m.lot_code,
        "gate_code": m.gate_code or None,
        "decision": DECISION_NAMES[m.decision].removeprefix("DECISION_").lower(),
        "reason": m.reason,
        "decided_by": m.decided_by,
        "decided_at": timestamp(m.decided_at),
        "supersedes_id": m.supersedes_id or None,
    }
