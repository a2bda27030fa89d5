"""Receiving and shipping through HTTP on the running system: received lots consumed and traced,
shipments that never exceed what a lot holds nor leave while it is held, idempotent replays,
and cached traces that show a new shipment at once."""

from __future__ import annotations

import concurrent.futures
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import System
from tests.test_production import decide, run


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


@dataclass(frozen=True)
class Parties:
    supplier: str
    supplier_site: str
    customer: str
    customer_dc: str
    carrier: str
    plant: str


@pytest.fixture
def parties(http: httpx.Client) -> Parties:
    return make_parties(http)


def make_parties(http: httpx.Client) -> Parties:
    """A supplier with a site, a customer with a DC, a carrier, and our plant."""
    t = tag()
    p = Parties(f"SUP-{t}", f"SUP-SITE-{t}", f"CUS-{t}", f"CUS-DC-{t}", f"CAR-{t}", f"PLANT-{t}")
    for code, roles in ((p.supplier, ["supplier"]), (p.customer, ["customer"]), (p.carrier, ["carrier"])):
        r = http.post("/api/partners", json={"code": code, "name": f"{code} GmbH", "roles": roles,
                                             "contact_name": "Recall desk", "contact_email": "recall@x.example"})  # fmt: skip
        assert r.status_code == 201, r.text
    for code, owner in ((p.supplier_site, p.supplier), (p.customer_dc, p.customer), (p.plant, "")):
        r = http.post(
            "/api/locations", json={"code": code, "name": code, "partner_code": owner, "country": "DE"}
        )
        assert r.status_code == 201, r.text
    return p


def receive(http: httpx.Client, p: Parties, code: str, qty: float, key: str | None = None, **extra: Any) -> httpx.Response:  # fmt: skip
    body = {
        "lot_code": code, "product": "Paprika powder", "quantity": qty, "uom": "kg",
        "supplier_code": p.supplier, "ship_from_location_code": p.supplier_site,
        "receiving_location_code": p.plant, "received_at": "2026-11-30T08:15:00Z",
        "supplier_lot_code": f"S/{code}", "document_type": "BOL", "document_number": f"BOL-{code}",
        "expires_on": "2027-11-30", **extra,
    }  # fmt: skip
    headers = {"idempotency-key": key} if key else {}
    return http.post("/api/receipts", json=body, headers=headers)


def ship(http: httpx.Client, p: Parties, code: str, qty: float, key: str | None = None, **extra: Any) -> httpx.Response:  # fmt: skip
    body = {
        "lot_code": code, "quantity": qty, "uom": "kg", "customer_code": p.customer,
        "ship_to_location_code": p.customer_dc, "ship_from_location_code": p.plant, "carrier_code": p.carrier,
        "shipped_at": "2026-12-01T14:00:00Z", "document_type": "ASN", "document_number": f"ASN-{tag()}", **extra,
    }  # fmt: skip
    headers = {"idempotency-key": key} if key else {}
    return http.post("/api/shipments", json=body, headers=headers)


def graph(http: httpx.Client, code: str, direction: str) -> dict[str, Any]:
    r = http.get(f"/api/traceability/{code}/graph", params={"direction": direction})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_received_lot_is_consumed_by_a_run_and_traced(http: httpx.Client, parties: Parties) -> None:
    t = tag()
    raw, mix = f"RAW-RCV-{t}", f"MIX-RCV-{t}"
    r = receive(http, parties, raw, 100)
    assert r.status_code == 201, r.text
    receipt = r.json()["receipt"]
    assert (receipt["lot_code"], receipt["kind"], receipt["supplier_code"]) == (raw, "RAW", parties.supplier)
    assert (receipt["supplier_lot_code"], receipt["expires_on"]) == (f"S/{raw}", "2027-11-30")
    assert receipt["received_at"] == "2026-11-30T08:15:00Z" and receipt["recorded_by"] == "ada"
    lot = http.get(f"/api/lots/{raw}").json()["lot"]
    assert (lot["quantity"], lot["uom"], lot["product"]) == (100, "kg", "Paprika powder")
    assert http.get(f"/api/receipts/{receipt['id']}").json()["receipt"] == receipt
    assert run(http, f"RUN-RCV-{t}", [(raw, 40, "kg")], [(mix, "MIX", 40)]).status_code == 201
    # The receipt shows upstream of what it went into, and on the lot itself.
    up = graph(http, mix, "upstream")
    assert [x["lot_code"] for x in up["receipts"]] == [raw]
    assert up["receipts"][0]["document_number"] == f"BOL-{raw}"
    assert graph(http, mix, "downstream").get("receipts", []) == []
    assert [x["id"] for x in http.get(f"/api/traceability/{raw}").json()["receipts"]] == [receipt["id"]]


def test_a_held_lot_cannot_ship_nor_what_is_made_from_it(
    http: httpx.Client, parties: Parties, system: System
) -> None:
    t = tag()
    raw, fg = f"RAW-HOLD-{t}", f"FG-HOLD-{t}"
    assert receive(http, parties, raw, 50).status_code == 201
    assert run(http, f"RUN-HOLD-{t}", [(raw, 20, "kg")], [(fg, "FG", 20)]).status_code == 201
    held = decide(http, raw, "hold", "salmonella suspected")
    assert held.status_code == 201, held.text
    decision_id = held.json()["decision"]["id"]
    for code in (raw, fg):
        r = ship(http, parties, code, 5)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["reason"] == "LOT_BLOCKED"
        assert raw in error["message"] and str(decision_id) in error["message"]
        details = error["details"]
        assert (details["blocking_lot"], details["decision_id"], details["status"]) == (
            raw, str(decision_id), "on_hold",
        )  # fmt: skip
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        assert conn.execute(
            "SELECT count(*) FROM shipments s JOIN lots l ON l.id = s.lot_id WHERE l.lot_code = ANY(%s)",
            ([raw, fg],),
        ).fetchone() == (0,)
    assert decide(http, raw, "release", "lab result negative").status_code == 201
    assert ship(http, parties, fg, 5).status_code == 201


def test_a_shipment_over_what_the_lot_holds_is_refused_with_the_numbers(
    http: httpx.Client, parties: Parties
) -> None:
    t = tag()
    raw, mix = f"RAW-QTY-{t}", f"MIX-QTY-{t}"
    assert receive(http, parties, raw, 100).status_code == 201
    assert run(http, f"RUN-QTY-{t}", [(raw, 60, "kg")], [(mix, "MIX", 60)]).status_code == 201
    assert ship(http, parties, raw, 30).status_code == 201
    r = ship(http, parties, raw, 20)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["reason"] == "INSUFFICIENT_QUANTITY"
    assert (error["details"]["available"], error["details"]["requested"], error["details"]["uom"]) == (
        "10",
        "20",
        "kg",
    )
    assert "holds 10 kg" in error["message"] and "asks for 20 kg" in error["message"]
    # In another mass unit it converts; a run cannot take what was shipped either.
    assert ship(http, parties, raw, 4000, uom="g").status_code == 201
    r = run(http, f"RUN-QTY2-{t}", [(raw, 7, "kg")], [(f"MIX-QTY2-{t}", "MIX", 7)])
    assert r.status_code == 409 and r.json()["error"]["details"]["available"] == "6", r.text
    balance = http.get(f"/api/lots/{raw}/mass-balance").json()
    assert (balance["shipped"], balance["shipments"], balance["remaining"]) == (34, 2, pytest.approx(6))
    bad = ship(http, parties, raw, 1, uom="l")
    assert bad.status_code == 409 and bad.json()["error"]["reason"] == "UOM_MISMATCH"


def test_concurrent_shipments_never_overdraw_a_lot(http: httpx.Client, parties: Parties) -> None:
    raw = f"RAW-RACE-{tag()}"
    assert receive(http, parties, raw, 50).status_code == 201
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(lambda _: ship(http, parties, raw, 10).status_code, range(10)))
    assert statuses == [201] * 5 + [409] * 5
    assert http.get(f"/api/lots/{raw}/mass-balance").json()["remaining"] == 0


def test_receipts_and_shipments_replay_by_idempotency_key(
    http: httpx.Client, parties: Parties, system: System
) -> None:
    t = tag()
    raw = f"RAW-IDEM-{t}"
    first = receive(http, parties, raw, 10, key=f"rcv-{t}")
    again = receive(http, parties, raw, 10, key=f"rcv-{t}")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["replayed"] is True and again.json()["receipt"] == first.json()["receipt"]
    other = receive(http, parties, raw, 11, key=f"rcv-{t}")
    assert other.status_code == 422 and other.json()["error"]["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert receive(http, parties, raw, 10).status_code == 409  # without the key: the lot exists
    body = {"document_number": f"ASN-{t}"}
    first = ship(http, parties, raw, 4, key=f"shp-{t}", **body)
    again = ship(http, parties, raw, 4, key=f"shp-{t}", **body)
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["shipment"] == first.json()["shipment"] and again.json()["replayed"] is True
    # A replay is answered even once the lot is held (what was recorded stands).
    assert decide(http, raw, "hold", "replay check").status_code == 201
    assert ship(http, parties, raw, 4, key=f"shp-{t}", **body).status_code == 200
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT entity, count(*) FROM audit_log WHERE entity IN ('receipt', 'shipment') AND entity_key = %s "
            "GROUP BY entity ORDER BY entity",
            (raw,),
        ).fetchall()
    assert rows == [("receipt", 1), ("shipment", 1)]


def test_a_cached_trace_shows_a_new_shipment_at_once(http: httpx.Client, parties: Parties) -> None:
    t = tag()
    raw, mix, fg = f"RAW-CACHE-{t}", f"MIX-CACHE-{t}", f"FG-CACHE-{t}"
    assert receive(http, parties, raw, 100).status_code == 201
    assert run(http, f"RUN-C1-{t}", [(raw, 50, "kg")], [(mix, "MIX", 50)]).status_code == 201
    assert run(http, f"RUN-C2-{t}", [(mix, 50, "kg")], [(fg, "FG", 50)]).status_code == 201
    for _ in range(2):  # the second answer is the cached one
        assert graph(http, raw, "downstream").get("shipments", []) == []
        assert http.get(f"/api/traceability/{fg}").json().get("shipments", []) == []
    r = ship(http, parties, fg, 12)
    assert r.status_code == 201, r.text
    shipment = r.json()["shipment"]
    assert (shipment["customer_code"], shipment["carrier_code"], shipment["quantity"]) == (
        parties.customer, parties.carrier, 12,
    )  # fmt: skip
    assert graph(http, raw, "downstream")["shipments"] == [shipment]
    assert graph(http, raw, "both")["receipts"][0]["lot_code"] == raw
    assert http.get(f"/api/traceability/{fg}").json()["shipments"] == [shipment]
    assert http.get(f"/api/shipments/{shipment['id']}").json()["shipment"] == shipment
    # A shipment of a lot upstream of the root is not where the root went; the root's own is.
    upstream_shipment = ship(http, parties, raw, 5).json()["shipment"]
    assert graph(http, fg, "upstream")["shipments"] == [shipment]
    assert graph(http, raw, "downstream")["shipments"] == [
        shipment,
        upstream_shipment,
    ]  # by shipped_at, then as recorded


def test_receipt_and_shipment_refusals_name_the_field(http: httpx.Client, parties: Parties) -> None:
    raw = f"RAW-BAD-{tag()}"
    cases = [
        (receive(http, parties, raw, 1, received_at=None), 400, "received_at"),
        (receive(http, parties, raw, 1, document_type="FAX"), 400, "document_type"),
        (receive(http, parties, raw, 1, expires_on="30.11.2027"), 400, "expires_on"),
        (receive(http, parties, raw, 0), 400, "quantity"),
        (receive(http, parties, raw, 1, supplier_code=parties.customer), 409, "supplier_code"),
        (receive(http, parties, raw, 1, ship_from_location_code=parties.customer_dc), 409, "ship_from_location_code"),
        (receive(http, parties, raw, 1, receiving_location_code=parties.supplier_site), 409, "receiving_location_code"),
        (receive(http, parties, raw, 1, supplier_code="NOBODY"), 404, "supplier_code"),
    ]  # fmt: skip
    assert receive(http, parties, raw, 10).status_code == 201
    cases += [
        (ship(http, parties, raw, 1, customer_code=parties.supplier), 409, "customer_code"),
        (ship(http, parties, raw, 1, ship_to_location_code=parties.plant), 409, "ship_to_location_code"),
        (ship(http, parties, raw, 1, carrier_code=parties.customer), 409, "carrier_code"),
        (ship(http, parties, raw, 1, shipped_at=None), 400, "shipped_at"),
        (ship(http, parties, "RAW-NO-SUCH-LOT", 1), 404, "RAW-NO-SUCH-LOT"),
        (ship(http, parties, raw, -1), 400, "quantity"),
    ]
    for r, status, named in cases:
        assert r.status_code == status, (named, r.text)
        assert named in r.json()["error"]["message"], (named, r.text)
    assert http.get("/api/shipments/0").status_code == 400
    assert http.get("/api/receipts/999999999").status_code == 404


def test_a_shipped_lot_keeps_its_genealogy_and_its_quantity(http: httpx.Client, parties: Parties) -> None:
    t = tag()
    raw, fg = f"RAW-KEEP-{t}", f"FG-KEEP-{t}"
    assert receive(http, parties, raw, 100).status_code == 201
    assert run(http, f"RUN-KEEP-{t}", [(raw, 40, "kg")], [(fg, "FG", 40)]).status_code == 201
    shipment = ship(http, parties, fg, 30).json()["shipment"]
    r = http.post(f"/api/production-runs/RUN-KEEP-{t}/void", json={"reason": "wrong input"})
    assert r.status_code == 409, r.text
    assert (
        r.json()["error"]["reason"] == "RUN_OUTPUT_SHIPPED"
        and str(shipment["id"]) in r.json()["error"]["message"]
    )
    r = http.patch(f"/api/lots/{fg}", json={"quantity": 25, "reason": "recount"})
    assert r.status_code == 409 and r.json()["error"]["reason"] == "QUANTITY_BELOW_CONSUMED", r.text
    assert f"shipment {shipment['id']}" in r.json()["error"]["message"]
    assert http.patch(f"/api/lots/{fg}", json={"quantity": 35, "reason": "recount"}).status_code == 200
    assert ship(http, parties, fg, 6).status_code == 409  # 35 - 30 = 5 left
