"""The one SQL projection of a lot (with its own QC status) and its conversion to proto."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2

# Latest QC decision -> the lot's own status.
STATUS_OF_DECISION = {
    "": "pending",
    "pass": "passed",
    "hold": "on_hold",
    "release": "released",
    "reject": "rejected",
}

# Columns of a lot row; use with `FROM lots l` + LOT_STATUS_JOIN.
LOT_COLUMNS = "l.lot_code, l.kind, l.product, l.quantity, l.uom, l.produced_at, l.created_at, q.decision"
LOT_STATUS_JOIN = (
    "LEFT JOIN LATERAL (SELECT d.decision FROM qc_decisions d WHERE d.lot_id = l.id "
    "ORDER BY d.id DESC LIMIT 1) q ON true"
)


def lot_message(row: asyncpg.Record) -> lots_pb2.Lot:
    lot = lots_pb2.Lot(
        lot_code=row["lot_code"],
        kind=row["kind"],
        product=row["product"],
        quantity=float(row["quantity"]),
        uom=row["uom"],
        status=STATUS_OF_DECISION[row["decision"] or ""],
    )
    if row["produced_at"] is not None:
        lot.produced_at.FromDatetime(row["produced_at"])
    lot.created_at.FromDatetime(row["created_at"])
    return lot


def effective_status(own: str, blocking: Iterable[str]) -> str:
    """A lot's effective status from its own and the statuses (on_hold, rejected) of the lots
    that block it (itself and/or ancestors): rejected wins over on_hold, either over its own."""
    found = set(blocking)
    if "rejected" in found:
        return "rejected"
    return "on_hold" if found else own


def apply_qc_status(lot: lots_pb2.Lot, status: qc_pb2.LotQcStatus) -> None:
    """The qc service's effective status and blocking lots onto a lot message."""
    lot.effective_status = status.effective_status
    lot.blocking.extend(
        lots_pb2.LotBlock(lot_code=b.lot_code, status=b.status, decision_id=b.decision_id, reason=b.reason)
        for b in status.blocking
    )
