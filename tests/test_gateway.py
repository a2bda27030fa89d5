"""The gateway end to end over HTTP, on the running system."""

from __future__ import annotations

import httpx
import pytest


def test_health_names_every_part(http: httpx.Client) -> None:
    r = http.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert {"database", "cache", "lots", "genealogy", "qc", "health", "gateway"} <= set(body["components"])
    assert all(c["healthy"] for c in body["components"].values())


def test_traceability_of_the_finished_good(http: httpx.Client) -> None:
    r = http.get("/api/traceability/FG-DONER-X1")
    assert r.status_code == 200
    body = r.json()
    assert body["lot"]["lot_code"] == "FG-DONER-X1"
    assert {k: body["lot"][k] for k in ("kind", "product", "quantity", "uom", "status")} == {
        "kind": "FG",
        "product": "Doner kebab cone 10 kg",
        "quantity": 400.0,
        "uom": "kg",
        "status": "pending",
    }
    [parent] = body["parents"]
    assert parent["lot_code"] == "MIX-BATCH-88"
    assert (parent["kind"], parent["edge_quantity"], parent["edge_uom"]) == ("MIX", 400.0, "kg")
    assert body["children"] == []


def test_traceability_is_served_again_from_cache(http: httpx.Client) -> None:
    first = http.get("/api/traceability/MIX-BATCH-88").json()
    second = http.get("/api/traceability/MIX-BATCH-88").json()
    assert first == second
    assert {p["lot_code"] for p in first["parents"]} == {"RAW-BEEF-001", "RAW-SPICE-001"}


def test_unknown_lot_is_404_json(http: httpx.Client) -> None:
    r = http.get("/api/traceability/NO-SUCH-LOT")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["reason"] == "LOT_NOT_FOUND"


@pytest.mark.parametrize(
    "path",
    [
        "/api/traceability/",
        "/api/traceability/" + "X" * 65,
        "/api/traceability/A%01B",
        "/api/traceability/A%20B",
        "/api/traceability/%00",
    ],
)
def test_malformed_lot_code_is_400(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_request_id_is_echoed_or_created(http: httpx.Client) -> None:
    assert http.get("/api/health", headers={"x-request-id": "abc-123"}).status_code == 200
    r = http.get("/api/traceability/FG-DONER-X1", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(http.get("/api/traceability/FG-DONER-X1").headers["x-request-id"]) == 32


def test_create_and_get_a_lot(http: httpx.Client) -> None:
    body = {"lot_code": "RAW-ONION-HTTP-1", "kind": "RAW", "product": "Onion", "quantity": 40, "uom": "kg"}
    r = http.post("/api/lots", json=body)
    assert r.status_code == 201, r.text
    assert http.post("/api/lots", json=body).status_code == 409
    got = http.get("/api/lots/RAW-ONION-HTTP-1").json()["lot"]
    assert (got["product"], got["quantity"], got["status"]) == ("Onion", 40.0, "pending")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"lot_code": 5}',
        b'{"lot_code": "A", "kind": "RAW"}',
        b'{"lot_code": "A", "kind": "RAW", "product": "p", "quantity": "many", "uom": "kg"}',
    ],
)
def test_bad_bodies_are_400(http: httpx.Client, body: bytes) -> None:
    r = http.post("/api/lots", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert http.get("/api/nope").status_code == 404
    assert http.delete("/api/lots").status_code == 405


def test_openapi_and_docs(http: httpx.Client) -> None:
    doc = http.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/health", "/api/traceability/{lot_code}"} <= set(doc["paths"])
    docs = http.get("/api/docs")  # Swagger UI over the document (tests/web render it in a browser)
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
