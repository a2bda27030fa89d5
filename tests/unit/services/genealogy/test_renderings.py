"""services/genealogy/renderings.py: the spreadsheets of a drill and of a recall's notification
list, rendered from the messages the service answers with (no database): their columns, rows,
file names, and every text cell through the OWASP rule (flowviz/core/csvcells.py)."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from services.genealogy import renderings


async def _rows(rendering: renderings.Rendering) -> list[list[str]]:
    data = b"".join([piece async for piece in rendering.pieces])
    assert data.endswith(b"\r\n")
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def _lot(code: str, relation_depth: int, **extra: object) -> dict[str, object]:
    return {"lot_code": code, "kind": "MIX", "product": "Doner", "quantity": 10.0, "uom": "kg", "status": "pass",
            "depth": relation_depth, "path_count": 1, **extra}  # fmt: skip


def _scenario(snapshot: dict[str, object] | None) -> genealogy_pb2.Scenario:
    return genealogy_pb2.Scenario(id=7, snapshot_json=orjson.dumps(snapshot).decode() if snapshot else "")


async def test_a_drill_lists_its_recall_then_its_accounting() -> None:
    snapshot = {
        "recall": {
            "root": _lot("R-1", 0),
            "downstream": [
                _lot(
                    "M-1",
                    1,
                    root_share=0.5,
                    root_quantity=2.0,
                    share=0.2,
                    effective_status="on_hold",
                    blocking=[{"lot_code": "R-1"}, {"lot_code": "R-2"}],
                )
            ],
            "upstream": [],
        },
        "accountability": {
            "unit": "kg",
            "basis": 10.0,
            "children": [{"lot_code": "M-1", "quantity": 4.0, "root_quantity": 4.0}],
            "in_stock": 6.0,
            "downstream": 4.0,
            "end_lots": 3.5,
            "unaccounted": 0.5,
            "unaccounted_percent": 5.0,
            "runs": [{"run_code": "RUN-F", "lot_code": "F-1", "flag": "YIELD_LOSS", "root_lost": 0.5}],
            "trace_ms": 1.5,
            "tolerance": 0.02,
            "within_tolerance": False,
        },
    }
    rendering = renderings.scenario_csv(_scenario(snapshot))
    assert (rendering.content_type, rendering.filename) == ("text/csv; charset=utf-8", "")
    header, *rows = await _rows(rendering)
    assert header == list(renderings.SCENARIO_COLUMNS)
    lots = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["relation"], r["lot_code"]) for r in lots[:2]] == [("root", "R-1"), ("downstream", "M-1")]
    mix = lots[1]
    assert (mix["share_of_root_in_lot"], mix["root_quantity_in_lot"], mix["share_of_lot_in_root"]) == (
        "0.5",
        "2.0",
        "0.2",
    )
    assert (mix["effective_status"], mix["blocking_lots"]) == ("on_hold", "R-1 R-2")
    figures = [r["relation"] for r in lots[2:]]
    assert figures == [f"accountability:{f}" for f in ("basis", "into_child", "in_stock", "downstream", "end_lots",
                       "unaccounted", "unaccounted_percent", "run", "trace_ms", "verdict")]  # fmt: skip
    child, run, verdict = lots[3], lots[9], lots[11]
    assert (child["lot_code"], child["quantity"], child["root_quantity_in_lot"], child["uom"]) == (
        "M-1",
        "4.0",
        "4.0",
        "kg",
    )
    assert (run["lot_code"], run["kind"], run["product"], run["quantity"]) == (
        "F-1",
        "YIELD_LOSS",
        "RUN-F",
        "0.5",
    )
    assert (verdict["quantity"], verdict["status"]) == ("0.02", "fail")


async def test_a_drill_sheet_lists_the_frozen_decisions_with_their_signatures() -> None:
    signed = {"signer": "quinn", "signer_name": "Quinn QA", "signed_at": "2026-12-01T10:00:00Z",
              "meaning": "released for use"}  # fmt: skip
    snapshot = {
        "recall": {},
        "qc_decisions": [
            {"id": 1, "lot_code": "R-1", "decision": "hold", "reason": "swab", "decided_by": "quinn",
             "decided_at": "2026-12-01T09:00:00Z", "signature": None},
            {"id": 2, "lot_code": "R-1", "decision": "release", "reason": "clean", "decided_by": "quinn",
             "decided_at": "2026-12-01T10:00:00Z", "signature": signed},
        ],
    }  # fmt: skip
    header, *rows = await _rows(renderings.scenario_csv(_scenario(snapshot)))
    shown = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["relation"], r["lot_code"], r["decision"], r["decision_reason"]) for r in shown] == [
        ("qc_decision", "R-1", "hold", "swab"),
        ("qc_decision", "R-1", "release", "clean"),
    ]
    assert (shown[0]["signer_name"], shown[0]["signature_meaning"]) == ("", "")
    assert (
        shown[1]["signer"],
        shown[1]["signer_name"],
        shown[1]["signed_at"],
        shown[1]["signature_meaning"],
    ) == (
        "quinn",
        "Quinn QA",
        "2026-12-01T10:00:00Z",
        "released for use",
    )


@pytest.mark.parametrize("snapshot", [None, {"recall": {}}])
async def test_a_drill_without_a_recall_is_its_header(snapshot: dict[str, object] | None) -> None:
    assert await _rows(renderings.scenario_csv(_scenario(snapshot))) == [list(renderings.SCENARIO_COLUMNS)]


def _notifications(product: str) -> genealogy_pb2.GetRecallNotificationsResponse:
    reply = genealogy_pb2.GetRecallNotificationsResponse(root="R-1")
    customer = reply.customers.add(customer_code="C-1", name="Kebab Ltd", contact_name="Ana",
                                   contact_email="ana@example.com", contact_phone="+44 1")  # fmt: skip
    place = customer.locations.add(location_code="L-1", name="Depot", gln="4012345000009", address="1 Road",
                                   city="Leeds", postal_code="LS1", country="GB")  # fmt: skip
    shipment = place.shipments.add(depth=1, root_share=0.25)
    shipment.shipment.MergeFrom(genealogy_pb2.Shipment(id=9, lot_code="F-1", product=product, quantity=8.0, uom="kg",
                                                       carrier_code="DHL", document_type="BOL", document_number="B-9"))  # fmt: skip
    shipment.shipment.shipped_at.FromJsonString("2026-01-16T08:00:00Z")
    reply.in_plant.add(lot=lots_pb2.Lot(lot_code="M-1", product="Mix", uom="kg"), location_code="L-0", remaining=3.0,
                       root_share=0.5, root_quantity=1.5)  # fmt: skip
    return reply


async def test_a_notification_list_has_a_row_per_shipment_then_per_lot_in_the_plant() -> None:
    rendering = renderings.notifications_csv("R-1", _notifications("Doner"))
    assert rendering.filename == "notifications-R-1.csv"
    header, shipped, in_plant = await _rows(rendering)
    assert header == list(renderings.NOTIFICATION_COLUMNS)
    row = dict(zip(header, shipped, strict=True))
    assert (row["relation"], row["customer_code"], row["location_gln"], row["lot_code"], row["shipment_id"]) == (
        "shipment", "C-1", "4012345000009", "F-1", "9")  # fmt: skip
    assert (row["shipped_at"], row["document_number"], row["quantity"], row["root_share"], row["root_quantity"]) == (
        "2026-01-16T08:00:00Z", "B-9", "8.0", "0.25", "")  # fmt: skip  # an unset optional is an empty cell
    stock = dict(zip(header, in_plant, strict=True))
    assert (stock["relation"], stock["customer_code"], stock["location_code"], stock["lot_code"]) == (
        "in_plant",
        "",
        "L-0",
        "M-1",
    )
    assert (stock["quantity"], stock["uom"], stock["root_quantity"]) == ("3.0", "kg", "1.5")


async def test_a_cell_a_spreadsheet_would_evaluate_is_neutralised() -> None:
    _, shipped, _ = await _rows(renderings.notifications_csv("R-1", _notifications('=HYPERLINK("x")')))
    assert shipped[renderings.NOTIFICATION_COLUMNS.index("product")] == '\'=HYPERLINK("x")'
    assert shipped[renderings.NOTIFICATION_COLUMNS.index("contact_phone")] == "'+44 1"
