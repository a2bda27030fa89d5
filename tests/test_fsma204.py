"""The FSMA 204 sortable spreadsheet for an FDA request (products and/or a lot code range, in a
time range) and per lot, rendered by the genealogy service and relayed by the gateway; and the
per-lot trace CSV with its receipts and shipments."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from services.genealogy.fsma204 import COLUMNS
from tests.test_shipping import Parties, make_parties, receive, ship, tag


@pytest.fixture
def chain(http: httpx.Client) -> dict[str, Any]:
    """Spinach received from a supplier, mixed with a second received lot into a salad that is
    shipped to a customer; the products are this test's own."""
    t = tag()
    p = make_parties(http)
    spinach, oil, salad = f"RAW-SPN-{t}", f"RAW-OIL-{t}", f"FG-SAL-{t}"
    products = {"spinach": f"Baby spinach {t}", "oil": f"=HYPERLINK(oil) {t}", "salad": f"Salad {t}"}
    assert receive(http, p, spinach, 100, product=products["spinach"]).status_code == 201
    assert (
        receive(
            http, p, oil, 10, product=products["oil"], received_at="2026-11-29T07:00:00Z", document_type="PO"
        ).status_code
        == 201
    )
    body = {
        "run_code": f"RUN-SAL-{t}", "stream_code": "DONER", "phase_code": "MIXING",
        "started_at": "2026-11-30T10:00:00Z", "ended_at": "2026-11-30T11:00:00Z",
        "inputs": [{"lot_code": spinach, "quantity": 60, "uom": "kg"}, {"lot_code": oil, "quantity": 4, "uom": "kg"}],
        "outputs": [{"lot_code": salad, "kind": "FG", "product": products["salad"], "quantity": 64, "uom": "kg"}],
    }  # fmt: skip
    r = http.post("/api/production-runs", json=body)
    assert r.status_code == 201, r.text
    assert ship(http, p, salad, 50, document_number=f"ASN-{t}").status_code == 201
    return {"t": t, "parties": p, "spinach": spinach, "oil": oil, "salad": salad, "products": products}


def sheet(r: httpx.Response) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def test_an_fda_request_lists_every_event_with_its_kdes(http: httpx.Client, chain: dict[str, Any]) -> None:
    p: Parties = chain["parties"]
    products = chain["products"]
    params = [("product", products["spinach"]), ("product", products["salad"]), ("from", "2026-11-01"),
              ("to", "2026-12-31")]  # fmt: skip
    rows = sheet(http.get("/api/fsma204", params=params))
    assert [(r["Critical Tracking Event"], r["Internal Lot Code"], r["Input Traceability Lot Code"]) for r in rows] == [
        ("Receiving", chain["spinach"], ""),
        # The oil is no product of the request, but it went into the salad: its row is there.
        ("Transformation", chain["salad"], f"S/{chain['oil']}"),
        ("Transformation", chain["salad"], f"S/{chain['spinach']}"),
        ("Shipping", chain["salad"], ""),
    ]  # fmt: skip
    received, oil, mixed, shipped = rows
    # A received lot keeps the supplier's traceability lot code, sourced at the supplier's site.
    assert received["Traceability Lot Code"] == f"S/{chain['spinach']}"
    assert (received["Quantity"], received["Unit of Measure"]) == ("100", "kg")
    assert (received["Event Date"], received["Event Time"]) == ("2026-11-30", "08:15:00Z")
    assert received["Immediate Previous Source Location Description"].startswith(f"{p.supplier} GmbH, ")
    assert p.supplier_site in received["Traceability Lot Code Source Location Description"]
    assert received["Location Description"].startswith(p.plant)
    assert (received["Reference Document Type"], received["Reference Document Number"]) == (
        "Bill of Lading",
        f"BOL-{chain['spinach']}",
    )
    # A transformation gives the new lot our code, with each input's TLC and quantity.
    assert (mixed["Traceability Lot Code"], mixed["Product Description"]) == (
        chain["salad"],
        products["salad"],
    )
    assert (mixed["Input Quantity"], mixed["Input Unit of Measure"]) == ("60", "kg")
    assert (mixed["Event Date"], mixed["Event Time"]) == ("2026-11-30", "11:00:00Z")
    assert mixed["Reference Document Number"] == f"RUN-SAL-{chain['t']}"
    assert "DONER" in mixed["Location Description"]
    # A product name a spreadsheet would run is shown as text (OWASP).
    assert oil["Input Product Description"] == "'" + products["oil"]
    assert shipped["Immediate Subsequent Recipient Location Description"].startswith(f"{p.customer} GmbH, ")
    assert (shipped["Quantity"], shipped["Reference Document Type"]) == ("50", "Advance Ship Notice")
    assert shipped["Reference Document Number"] == f"ASN-{chain['t']}"


def test_the_time_and_lot_code_ranges_narrow_the_request(http: httpx.Client, chain: dict[str, Any]) -> None:
    products = chain["products"]
    base = [("product", products["spinach"]), ("product", products["salad"])]
    one_day = sheet(http.get("/api/fsma204", params=[*base, ("from", "2026-12-01"), ("to", "2026-12-01")]))
    assert [r["Critical Tracking Event"] for r in one_day] == ["Shipping"]
    # An RFC 3339 end is exclusive: the run that ended at 11:00 is out, the receipt at 08:15 in.
    morning = sheet(
        http.get(
            "/api/fsma204", params=[*base, ("from", "2026-11-30T00:00:00Z"), ("to", "2026-11-30T11:00:00Z")]
        )
    )
    assert [r["Critical Tracking Event"] for r in morning] == ["Receiving"]
    # By lot code range alone (every product): our code or the supplier's TLC.
    salad = chain["salad"]
    year = {"from": "2026-11-01", "to": "2026-12-31"}
    by_code = sheet(http.get("/api/fsma204", params={"lot_code_from": salad, "lot_code_to": salad, **year}))
    assert {r["Internal Lot Code"] for r in by_code} == {salad} and len(by_code) == 3
    tlc = f"S/{chain['oil']}"
    by_tlc = sheet(http.get("/api/fsma204", params={"lot_code_from": tlc, "lot_code_to": tlc, **year}))
    assert [(r["Critical Tracking Event"], r["Internal Lot Code"]) for r in by_tlc] == [
        ("Receiving", chain["oil"])
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"to": "2026-12-31"}, "from"),
        ({"from": "2026-12-01"}, "to"),
        ({"from": "2026-12-31", "to": "2026-12-01"}, "from"),
        ({"from": "yesterday", "to": "2026-12-01"}, "from"),
        ({"from": "2026-12-01T00:00:00", "to": "2026-12-02"}, "from"),
        (
            {"from": "2026-12-01", "to": "2026-12-02", "lot_code_from": "B", "lot_code_to": "A"},
            "lot_code_from",
        ),
        ({"from": "2026-12-01", "to": "2026-12-02", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_request_is_a_400_naming_the_field(
    http: httpx.Client, params: dict[str, str], field: str
) -> None:
    r = http.get("/api/fsma204", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == field


def test_per_lot_exports_show_receipts_and_shipments(http: httpx.Client, chain: dict[str, Any]) -> None:
    salad, spinach = chain["salad"], chain["spinach"]
    r = http.get(f"/api/traceability/{salad}/export.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="trace-{salad}.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["event"], x["traceability_lot_code"], x["input_lot_code"]) for x in rows] == [
        ("receiving", chain["oil"], ""),
        ("receiving", spinach, ""),
        ("transformation", salad, chain["oil"]),  # a run's inputs by lot code, as before
        ("transformation", salad, spinach),
        ("shipping", salad, ""),
    ]
    received = rows[1]
    assert (received["partner_code"], received["traceability_lot_code_source"]) == (
        chain["parties"].supplier,
        f"S/{spinach}",
    )
    assert (received["document_type"], received["reference_document"]) == ("BOL", f"BOL-{spinach}")
    shipped = rows[-1]
    assert (shipped["partner_code"], shipped["to_location"], shipped["quantity"]) == (
        chain["parties"].customer,
        chain["parties"].customer_dc,
        "50.0",
    )
    # The same trace in the FDA's columns: every event of its lots.
    events = sheet(http.get(f"/api/traceability/{spinach}/fsma204.csv", params={"direction": "downstream"}))
    assert [(x["Critical Tracking Event"], x["Internal Lot Code"]) for x in events] == [
        ("Receiving", spinach),
        ("Transformation", salad),
        ("Transformation", salad),
        ("Shipping", salad),
    ]
    assert http.get("/api/traceability/NO-SUCH-LOT/fsma204.csv").status_code == 404
