"""EPCIS 2.0 capture (POST /api/epcis/capture): flowviz's own export of a genealogy with every
event type, captured into an empty flowviz (a fresh database with only the master data: partners,
locations, the stream), yields the same traces; every event or none; idempotent by key; a report
per event."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Servers, System, add_users, bearer, running_system
from tests.test_epcis import genealogy
from tests.test_shipping import make_parties, receive, tag

CAPTURE = "/api/epcis/capture"
RECEIPT = ("lot_code", "kind", "product", "quantity", "uom", "supplier_code", "ship_from_location_code",
           "receiving_location_code", "received_at", "supplier_lot_code", "document_type", "document_number",
           "expires_on")  # fmt: skip
SHIPMENT = ("lot_code", "product", "quantity", "uom", "customer_code", "ship_to_location_code",
            "ship_from_location_code", "carrier_code", "shipped_at", "document_type", "document_number")  # fmt: skip


@pytest.fixture
def fresh(servers: Servers, empty_db_url: str) -> Iterator[System]:
    """A second flowviz on an empty database (its users only) and a Valkey database of its own."""
    add_users(empty_db_url)
    with running_system(servers, empty_db_url, suffix="-fresh", valkey_db=3) as system:
        yield system


def picture(http: httpx.Client, lot_code: str) -> dict[str, Any]:
    """A lot's trace both ways as data that does not depend on ids or on who recorded it."""
    r = http.get(f"/api/traceability/{lot_code}/graph")
    assert r.status_code == 200, r.text
    g = r.json()
    balance = http.get(f"/api/lots/{lot_code}/mass-balance").json()
    return {
        "nodes": sorted(
            (n["lot_code"], n["kind"], n["product"], n["quantity"], n["uom"], n["depth"]) for n in g["nodes"]
        ),
        "edges": sorted(
            (e["parent"], e["child"], e["quantity"], e["uom"], e["run_code"]) for e in g["edges"]
        ),
        "receipts": sorted(tuple(x.get(k, "") for k in RECEIPT) for x in g.get("receipts", [])),
        "shipments": sorted(tuple(x.get(k, "") for k in SHIPMENT) for x in g.get("shipments", [])),
        "remaining": balance["remaining"],
    }


def copy_master_data(source: httpx.Client, target: httpx.Client, chain: dict[str, Any]) -> None:
    p = chain["p"]
    for code in (p.supplier, p.customer, p.carrier):
        partner = source.get(f"/api/partners/{code}").json()["partner"]
        body = {k: partner[k] for k in ("code", "name", "roles", "gln", "contact_name") if partner.get(k)}
        assert target.post("/api/partners", json=body).status_code == 201
    for code in (p.supplier_site, p.customer_dc, p.plant):
        place = source.get(f"/api/locations/{code}").json()["location"]
        body = {k: place[k] for k in ("code", "name", "partner_code", "gln", "country") if place.get(k)}
        assert target.post("/api/locations", json=body).status_code == 201, body
    assert target.post("/api/streams", json={"code": "DONER", "name": "Doner line"}).status_code == 201
    phase = {"code": "MIXING", "name": "Mixing", "seq": 1}
    assert target.post("/api/streams/DONER/phases", json=phase).status_code == 201


def test_our_export_captured_into_an_empty_flowviz_yields_the_same_traces(
    http: httpx.Client, fresh: System
) -> None:
    chain = genealogy(http)
    exported = http.get(f"/api/traceability/{chain['mix']}/export.jsonld")
    assert exported.status_code == 200, exported.text
    with httpx.Client(base_url=fresh.base, timeout=30, headers=bearer("ada")) as other:
        copy_master_data(http, other, chain)
        key = {"idempotency-key": f"capture-{chain['t']}"}
        r = other.post(
            CAPTURE, content=exported.content, headers={"content-type": "application/ld+json", **key}
        )
        assert r.status_code == 201, r.text
        report = r.json()
        assert report["ok"] is True and not report.get("replayed")
        assert [(e["index"], e["type"], e["biz_step"], e["status"]) for e in report["events"]] == [
            (0, "ObjectEvent", "receiving", "recorded"),
            (1, "ObjectEvent", "receiving", "recorded"),
            (2, "TransformationEvent", "commissioning", "recorded"),
            (3, "ObjectEvent", "shipping", "recorded"),
            (4, "ObjectEvent", "shipping", "recorded"),
        ]
        assert report["events"][2]["record_id"] == f"RUN-EP-{chain['t']}"
        for code in (chain["mix"], chain["raw1"], chain["raw2"]):
            assert picture(other, code) == picture(http, code), code
        # A retry replays: nothing recorded twice.
        again = other.post(CAPTURE, content=exported.content, headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["replayed"] is True
        assert {e["status"] for e in again.json()["events"]} == {"replayed"}
        assert picture(other, chain["mix"]) == picture(http, chain["mix"])
        # The same key for another document is refused.
        changed = copy.deepcopy(exported.json())
        changed["epcisBody"]["eventList"][3]["quantityList"][0]["quantity"] = 1.0
        assert other.post(CAPTURE, json=changed, headers=key).status_code == 422
        # Its export says the same as ours (master data, events), but for when it was made.
        mine, theirs = exported.json(), other.get(f"/api/traceability/{chain['mix']}/export.jsonld").json()
        for doc in (mine, theirs):
            doc.pop("creationDate")
            for event in doc["epcisBody"]["eventList"]:
                event.pop("eventID")
        assert theirs == mine


def test_one_refused_event_records_none_and_the_report_says_which(http: httpx.Client) -> None:
    p = make_parties(http)
    t = tag()
    raw = f"RAW-CAP-{t}"
    assert receive(http, p, raw, 5).status_code == 201
    exported = http.get(f"/api/traceability/{raw}/export.jsonld").json()
    receipt = exported["epcisBody"]["eventList"][0]
    new = copy.deepcopy(receipt)
    new["quantityList"][0]["epcClass"] = f"urn:flowviz:lot:RAW-CAP2-{t}"
    ship = {
        "type": "ObjectEvent", "eventTime": "2026-12-01T10:00:00Z", "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE", "bizStep": "shipping",
        "quantityList": [{"epcClass": f"urn:flowviz:lot:{raw}", "quantity": 7, "uom": "KGM"}],
        "bizTransactionList": [{"type": "bol", "bizTransaction": f"urn:flowviz:document:bol:BOL-S-{t}"}],
        "sourceList": [{"type": "location", "source": f"urn:flowviz:location:{p.plant}"}],
        "destinationList": [{"type": "owning_party", "destination": f"urn:flowviz:party:{p.customer}"},
                            {"type": "location", "destination": f"urn:flowviz:location:{p.customer_dc}"}],
    }  # fmt: skip
    doc = {**exported, "epcisBody": {"eventList": [new, ship]}}
    doc["epcisHeader"]["epcisMasterData"]["vocabularyList"][0]["vocabularyElementList"].append(
        {"id": f"urn:flowviz:lot:RAW-CAP2-{t}", "attributes": [
            {"id": "urn:epcglobal:cbv:mda#descriptionShort", "attribute": "Paprika powder"}]}
    )  # fmt: skip
    # 7 kg of a 5 kg lot: refused (409), and the receipt before it is not recorded either.
    r = http.post(CAPTURE, json=doc)
    assert r.status_code == 409, r.text
    events = r.json()["events"]
    assert [(e["status"], e["reason"]) for e in events] == [
        ("not_recorded", ""),
        ("rejected", "INSUFFICIENT_QUANTITY"),
    ]
    assert "epcisBody/eventList/1" in events[1]["message"]
    assert http.get(f"/api/lots/RAW-CAP2-{t}").status_code == 404
    # A unit that is no Rec 20 code fails GS1's schema: 400, the event named.
    ship["quantityList"][0].update(quantity=2, uom="kg")
    r = http.post(CAPTURE, json=doc)
    assert r.status_code == 400, r.text
    bad = r.json()["events"][1]
    assert bad["reason"] == "EPCIS_SCHEMA_INVALID" and "quantityList/0/uom" in bad["message"]
    # An unknown party is a 404 naming where it is; a held lot cannot be shipped (409).
    ship["quantityList"][0]["uom"] = "KGM"
    ship["destinationList"][0]["destination"] = "urn:flowviz:party:NO-SUCH-PARTY"
    r = http.post(CAPTURE, json=doc)
    assert r.status_code == 404, r.text
    assert r.json()["events"][1]["reason"] == "PARTNER_NOT_FOUND"
    ship["destinationList"][0]["destination"] = f"urn:flowviz:party:{p.customer}"
    held = http.post(f"/api/lots/{raw}/qc-decisions", json={"decision": "hold", "reason": "lab"})
    assert held.status_code == 201, held.text
    r = http.post(CAPTURE, json=doc)
    assert r.status_code == 409 and r.json()["events"][1]["reason"] == "LOT_BLOCKED", r.text
    # Events that are no events: refused by the schema, each named, nothing recorded.
    broken = {**doc, "epcisBody": {"eventList": [new, 5, {**ship, "quantityList": ["7 kg"]}]}}
    r = http.post(CAPTURE, json=broken)
    assert r.status_code == 400, r.text
    assert [(e["index"], e["status"], e["reason"]) for e in r.json()["events"]] == [
        (0, "not_recorded", ""), (1, "rejected", "EPCIS_SCHEMA_INVALID"), (2, "rejected", "EPCIS_SCHEMA_INVALID")
    ]  # fmt: skip
    # Not an EPCIS document at all: 400 naming the document.
    for body in (b"not json", b'{"type": "EPCISDocument"}', b"[]"):
        r = http.post(CAPTURE, content=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"]["field"] == "document"


def test_capture_needs_a_role_that_records(system: System) -> None:
    with httpx.Client(base_url=system.base, timeout=10, headers=bearer("ana")) as viewer:
        assert viewer.post(CAPTURE, content=b"{}").status_code == 403
