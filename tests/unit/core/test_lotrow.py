"""flowviz/core/lotrow.py: the one Lot builder, from a row and from a trace node."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flowviz.core.lotrow import lot, lot_message
from flowviz.lots.v1 import lots_pb2
from services.genealogy import convert
from services.genealogy.trace import TraceNode

MADE = datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
SEEN = datetime(2026, 1, 16, 9, 30, 15, 250000, tzinfo=UTC)


def test_lot_sets_its_fields_and_times() -> None:
    built = lot(
        lot_code="MIX-1", kind="MIX", product="doner mix", quantity=40.5, uom="kg",
        status="on_hold", produced_at=MADE, created_at=SEEN,
    )  # fmt: skip
    assert (built.lot_code, built.kind, built.product, built.quantity, built.uom, built.status) == (
        "MIX-1", "MIX", "doner mix", 40.5, "kg", "on_hold",
    )  # fmt: skip
    assert built.produced_at.ToJsonString() == "2026-01-16T08:00:00Z"
    assert built.created_at.ToJsonString() == "2026-01-16T09:30:15.250Z"
    assert (built.effective_status, list(built.blocking), built.voided_run) == ("", [], "")


def test_a_lot_not_produced_has_no_produced_at() -> None:
    built = lot(
        lot_code="RAW-1", kind="RAW", product="beef", quantity=1, uom="kg",
        status="pending", produced_at=None, created_at=SEEN,
    )  # fmt: skip
    assert not built.HasField("produced_at") and built.HasField("created_at")


def test_from_a_row() -> None:
    row: dict[str, Any] = {
        "lot_code": "RAW-1", "kind": "RAW", "product": "beef", "quantity": Decimal("12.5"),
        "uom": "kg", "qc_status": None, "produced_at": None, "created_at": SEEN,
    }  # fmt: skip
    message = lot_message(row)  # type: ignore[arg-type]
    assert message.status == "pending"  # no decision yet
    assert message.quantity == 12.5 and isinstance(message.quantity, float)
    assert lot_message({**row, "qc_status": "rejected"}).status == "rejected"  # type: ignore[arg-type]


def test_from_a_trace_node_the_same_way() -> None:
    node = TraceNode(
        lot_id=7, lot_code="FG-1", kind="FG", product="doner", quantity=3.0, uom="ea",
        status="passed", produced_at=MADE, created_at=SEEN, depth=1, side="downstream",
    )  # fmt: skip
    row = {
        "lot_code": "FG-1", "kind": "FG", "product": "doner", "quantity": 3, "uom": "ea",
        "qc_status": "passed", "produced_at": MADE, "created_at": SEEN,
    }  # fmt: skip
    expected = lots_pb2.Lot(
        lot_code="FG-1", kind="FG", product="doner", quantity=3.0, uom="ea", status="passed"
    )
    expected.produced_at.FromDatetime(MADE)
    expected.created_at.FromDatetime(SEEN)
    assert convert.lot(node) == lot_message(row) == expected  # type: ignore[arg-type]
