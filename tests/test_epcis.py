"""EPCIS 2.0 JSON-LD exports (per lot and for a time range) of a genealogy with every event type
(receiving, transformation, shipping), checked against GS1's published EPCIS 2.0 JSON Schema
(services/genealogy/EPCIS-JSON-Schema.json, formats included; the capture checks with the same), and what they say of each event."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from flowviz.core.validation import gs1_check_digit
from tests.test_shipping import make_parties, receive, ship, tag

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "services" / "genealogy" / "EPCIS-JSON-Schema.json").read_text()
)
VALIDATOR = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def gs1(digits: int) -> str:
    """A random GS1 identifier of `digits` digits with its check digit (a GLN: 13, a GTIN: 14)."""
    body = "".join(random.choice("0123456789") for _ in range(digits - 1))
    return body + str(gs1_check_digit(body))


def errors(document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(document)]


def genealogy(http: httpx.Client) -> dict[str, Any]:
    """Two received lots (one a GTIN product from a supplier site with a GLN), a run mixing them,
    and two shipments of its output (one with a carrier)."""
    t = tag()
    p = make_parties(http)
    gln_supplier, gln_site, gtin = gs1(13), gs1(13), gs1(14)
    assert http.patch(f"/api/partners/{p.supplier}", json={"gln": gln_supplier}).status_code == 200
    assert http.patch(f"/api/locations/{p.supplier_site}", json={"gln": gln_site}).status_code == 200
    raw1, raw2, mix = f"RAW-EP1-{t}", f"RAW-EP2-{t}", f"MIX-EP-{t}"
    assert receive(http, p, raw1, 100, product=gtin, document_type="PO").status_code == 201
    assert receive(http, p, raw2, 2000, uom="g", product=f"Pepper {t}", expires_on="").status_code == 201
    body = {
        "run_code": f"RUN-EP-{t}", "stream_code": "DONER", "phase_code": "MIXING",
        "started_at": "2026-11-30T10:00:00Z", "ended_at": "2026-11-30T11:00:00Z",
        "inputs": [{"lot_code": raw1, "quantity": 60, "uom": "kg"}, {"lot_code": raw2, "quantity": 1500, "uom": "g"}],
        "outputs": [{"lot_code": mix, "kind": "MIX", "product": f"Mix {t}", "quantity": 61.5, "uom": "kg"}],
    }  # fmt: skip
    assert http.post("/api/production-runs", json=body).status_code == 201
    assert ship(http, p, mix, 40, document_number=f"ASN-{t}").status_code == 201
    assert ship(http, p, mix, 10, carrier_code="", document_type="INVOICE",
                document_number=f"INV-{t}", shipped_at="2026-12-02T09:00:00Z").status_code == 201  # fmt: skip
    return {"t": t, "p": p, "raw1": raw1, "raw2": raw2, "mix": mix, "gtin": gtin, "gln_supplier": gln_supplier,
            "gln_site": gln_site}  # fmt: skip


@pytest.fixture
def chain(http: httpx.Client) -> dict[str, Any]:
    return genealogy(http)


def document(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/ld+json")
    body: dict[str, Any] = r.json()
    return body


def test_exports_of_every_event_type_validate_against_gs1s_schema(
    http: httpx.Client, chain: dict[str, Any]
) -> None:
    t = chain["t"]
    per_lot = document(http.get(f"/api/traceability/{chain['mix']}/export.jsonld"))
    ranged = document(
        http.get("/api/epcis", params=[("product", f"Mix {t}"), ("product", f"Pepper {t}"),
                                       ("product", chain["gtin"]), ("from", "2026-11-01"), ("to", "2026-12-31")])
    )  # fmt: skip
    for doc in (per_lot, ranged):
        assert errors(doc) == []
        kinds = [(e["type"], e["bizStep"]) for e in doc["epcisBody"]["eventList"]]
        assert kinds == [
            ("ObjectEvent", "receiving"),
            ("ObjectEvent", "receiving"),
            ("TransformationEvent", "commissioning"),
            ("ObjectEvent", "shipping"),
            ("ObjectEvent", "shipping"),
        ]
    # The schema bites: a unit that is no UN/ECE Rec 20 code, an unknown bizStep, a missing time.
    for path, value in (
        (("epcisBody", "eventList", 0, "quantityList", 0, "uom"), "kg"),
        (("epcisBody", "eventList", 1, "bizStep"), "unloading-ish"),
        (("epcisBody", "eventList", 2, "eventTime"), "yesterday"),
    ):
        broken = copy.deepcopy(per_lot)
        target: Any = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert errors(broken), path


def test_events_carry_parties_locations_documents_and_gs1_identifiers(
    http: httpx.Client, chain: dict[str, Any]
) -> None:
    p, t = chain["p"], chain["t"]
    doc = document(http.get(f"/api/traceability/{chain['mix']}/export.jsonld"))
    first, second, run, shipped, invoiced = doc["epcisBody"]["eventList"]
    # A GTIN product makes an LGTIN, a GLN an SGLN / PGLN and a CBV business transaction id.
    lgtin = f"https://id.gs1.org/01/{chain['gtin']}/10/{chain['raw1']}"
    assert first["quantityList"] == [{"epcClass": lgtin, "quantity": 100.0, "uom": "KGM"}]
    assert first["sourceList"] == [
        {"type": "owning_party", "source": f"https://id.gs1.org/417/{chain['gln_supplier']}"},
        {"type": "location", "source": f"https://id.gs1.org/414/{chain['gln_site']}"},
    ]
    assert first["destinationList"] == [
        {"type": "location", "destination": f"urn:flowviz:location:{p.plant}"}
    ]
    assert first["bizTransactionList"] == [
        {"type": "po", "bizTransaction": f"urn:epcglobal:cbv:bt:{chain['gln_supplier']}:BOL-{chain['raw1']}"}
    ]
    assert (first["action"], first["disposition"], first["eventTime"]) == (
        "OBSERVE",
        "in_progress",
        "2026-11-30T08:15:00.000Z",
    )
    assert second["quantityList"] == [
        {"epcClass": f"urn:flowviz:lot:{chain['raw2']}", "quantity": 2000.0, "uom": "GRM"}
    ]
    # The run: what it took of each input, what it made, where and under which order.
    assert run["transformationID"] == f"urn:flowviz:run:RUN-EP-{t}"
    assert run["inputQuantityList"] == [
        {"epcClass": lgtin, "quantity": 60.0, "uom": "KGM"},
        {"epcClass": f"urn:flowviz:lot:{chain['raw2']}", "quantity": 1500.0, "uom": "GRM"},
    ]
    assert run["outputQuantityList"] == [
        {"epcClass": f"urn:flowviz:lot:{chain['mix']}", "quantity": 61.5, "uom": "KGM"}
    ]
    assert run["bizLocation"] == {"id": "urn:flowviz:stream:DONER"}
    assert run["eventTime"] == "2026-11-30T11:00:00.000Z"
    # Shipments: from our plant to the customer's site, in the carrier's hands when there is one.
    assert shipped["destinationList"] == [
        {"type": "owning_party", "destination": f"urn:flowviz:party:{p.customer}"},
        {"type": "location", "destination": f"urn:flowviz:location:{p.customer_dc}"},
        {"type": "possessing_party", "destination": f"urn:flowviz:party:{p.carrier}"},
    ]
    assert shipped["bizTransactionList"] == [
        {"type": "desadv", "bizTransaction": f"urn:flowviz:document:asn:ASN-{t}"}
    ]
    assert (shipped["disposition"], shipped["quantityList"][0]["quantity"]) == ("in_transit", 40.0)
    assert [d["type"] for d in invoiced["destinationList"]] == ["owning_party", "location"]
    assert invoiced["bizTransactionList"][0]["type"] == "inv"
    # Master data: what the events do not say of the lots and places they name.
    vocabularies = {
        v["type"]: v["vocabularyElementList"] for v in doc["epcisHeader"]["epcisMasterData"]["vocabularyList"]
    }
    lots = {
        e["id"]: {a["id"]: a["attribute"] for a in e["attributes"]}
        for e in vocabularies["urn:epcglobal:epcis:vtype:EPCClass"]
    }
    assert lots[lgtin] == {
        "urn:epcglobal:cbv:mda#descriptionShort": chain["gtin"],
        "urn:flowviz:mda#lotCode": chain["raw1"],
        "urn:flowviz:mda#kind": "RAW",
        "urn:flowviz:mda#supplierLotCode": f"S/{chain['raw1']}",
        "urn:epcglobal:cbv:mda#itemExpirationDate": "2027-11-30",
    }
    places = {e["id"] for e in vocabularies["urn:epcglobal:epcis:vtype:BusinessLocation"]}
    assert f"urn:flowviz:location:{p.customer_dc}" in places


def test_a_time_range_export_has_only_its_events(http: httpx.Client, chain: dict[str, Any]) -> None:
    t = chain["t"]
    doc = document(
        http.get("/api/epcis", params={"product": f"Mix {t}", "from": "2026-12-02", "to": "2026-12-02"})
    )
    assert errors(doc) == []
    assert [e["bizTransactionList"][0]["bizTransaction"] for e in doc["epcisBody"]["eventList"]] == [
        f"urn:flowviz:document:invoice:INV-{t}"
    ]
    # A lot code range matches our code or the supplier's (the traceability lot code).
    tlc = f"S/{chain['raw2']}"
    by_tlc = document(http.get("/api/epcis", params={"lot_code_from": tlc, "lot_code_to": tlc, "from": "2026-11-01",
                                                     "to": "2026-12-31"}))  # fmt: skip
    assert [e["quantityList"][0]["epcClass"] for e in by_tlc["epcisBody"]["eventList"]] == [
        f"urn:flowviz:lot:{chain['raw2']}"
    ]
    empty = document(
        http.get("/api/epcis", params={"product": f"Mix {t}", "from": "2025-01-01", "to": "2025-01-02"})
    )
    assert empty["epcisBody"]["eventList"] == [] and errors(empty) == []
    assert http.get("/api/epcis", params={"product": "x"}).status_code == 400
