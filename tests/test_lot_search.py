"""Lot search on GET /api/lots: each filter alone and together, paging through a filter, and a
400 naming the field for each bad value."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.test_production import decide, run, tag


def codes(http: httpx.Client, **params: Any) -> list[str]:
    r = http.get("/api/lots", params={"page_size": 500, **params})
    assert r.status_code == 200, r.text
    return [lot["lot_code"] for lot in r.json()["lots"]]


def make(http: httpx.Client, code: str, kind: str, product: str, produced_at: str | None = None) -> None:
    body = {"lot_code": code, "kind": kind, "product": product, "quantity": 10, "uom": "kg"}
    if produced_at:
        body["produced_at"] = produced_at
    r = http.post("/api/lots", json=body)
    assert r.status_code == 201, r.text


@pytest.fixture
def plant(http: httpx.Client) -> str:
    t = tag()
    make(http, f"S{t}-RAW-1", "RAW", f"Ground Beef {t}", "2026-03-01T08:00:00Z")
    make(http, f"S{t}-RAW-2", "RAW", f"Spice blend {t}", "2026-03-02T08:00:00Z")
    make(http, f"S{t}-RAW_3", "RAW", f"Beef 50%_fat {t}", "2026-03-03T08:00:00Z")
    make(http, f"S{t}-RAW-20", "RAW", f"beef cheeks {t}")
    return t


def test_lot_code_prefix(http: httpx.Client, plant: str) -> None:
    t = plant
    assert codes(http, lot_code_prefix=f"S{t}-") == [
        f"S{t}-RAW-1",
        f"S{t}-RAW-2",
        f"S{t}-RAW_3",
        f"S{t}-RAW-20",
    ]
    assert codes(http, lot_code_prefix=f"S{t}-RAW-2") == [f"S{t}-RAW-2", f"S{t}-RAW-20"]
    assert codes(http, lot_code_prefix=f"S{t}-RAW_") == [f"S{t}-RAW_3"]  # "_" is a character, not a wildcard
    assert codes(http, lot_code_prefix=f"s{t}-") == []  # codes are case-sensitive


def test_product_is_a_case_insensitive_substring(http: httpx.Client, plant: str) -> None:
    t = plant
    assert codes(http, product=f"BEEF {t}") == [f"S{t}-RAW-1"]
    assert codes(http, product=t.lower(), lot_code_prefix=f"S{t}") == [
        f"S{t}-RAW-1",
        f"S{t}-RAW-2",
        f"S{t}-RAW_3",
        f"S{t}-RAW-20",
    ]
    assert codes(http, product="beef", lot_code_prefix=f"S{t}") == [
        f"S{t}-RAW-1",
        f"S{t}-RAW_3",
        f"S{t}-RAW-20",
    ]
    assert codes(http, product="50%_fat", lot_code_prefix=f"S{t}") == [f"S{t}-RAW_3"]
    assert codes(http, product="5%", lot_code_prefix=f"S{t}") == []  # "%" is a character, not a wildcard


def test_produced_between_and_kind(http: httpx.Client, plant: str) -> None:
    t = plant
    window = {"produced_after": "2026-03-02T00:00:00Z", "produced_before": "2026-03-03T08:00:00Z"}
    assert codes(http, lot_code_prefix=f"S{t}", **window) == [f"S{t}-RAW-2"]
    assert codes(http, lot_code_prefix=f"S{t}", produced_after="2026-03-02T08:00:00+00:00") == [
        f"S{t}-RAW-2",
        f"S{t}-RAW_3",
    ]
    assert codes(http, lot_code_prefix=f"S{t}", kind="RAW", produced_before="2026-03-01T09:00:00Z") == [
        f"S{t}-RAW-1"
    ]
    assert codes(http, lot_code_prefix=f"S{t}", kind="MIX") == []


def test_a_produced_between_list_pages_oldest_first(http: httpx.Client, plant: str) -> None:
    t = plant
    make(http, f"S{t}-RAW-0", "RAW", f"Salt {t}", "2026-02-28T08:00:00Z")  # recorded last, produced first
    seen: list[str] = []
    token = ""
    while True:
        params = {"lot_code_prefix": f"S{t}", "produced_after": "2026-01-01T00:00:00Z", "page_size": 1}
        body = http.get("/api/lots", params={**params, **({"page_token": token} if token else {})}).json()
        seen += [lot["lot_code"] for lot in body["lots"]]
        token = body["next_page_token"]
        if not token:
            break
    assert seen == [f"S{t}-RAW-0", f"S{t}-RAW-1", f"S{t}-RAW-2", f"S{t}-RAW_3"]
    empty = {"produced_after": "2026-03-02T00:00:00Z", "produced_before": "2026-03-02T00:00:00Z"}
    assert codes(http, lot_code_prefix=f"S{t}", **empty) == []


def test_pages_through_a_filter(http: httpx.Client, plant: str) -> None:
    seen: list[str] = []
    token = ""
    while True:
        params = {"lot_code_prefix": f"S{plant}", "product": "beef", "page_size": 1}
        body = http.get("/api/lots", params={**params, **({"page_token": token} if token else {})}).json()
        seen += [lot["lot_code"] for lot in body["lots"]]
        token = body["next_page_token"]
        if not token:
            break
    assert seen == [f"S{plant}-RAW-1", f"S{plant}-RAW_3", f"S{plant}-RAW-20"]


def test_status_and_effective_status_after_a_hold_on_an_ancestor(http: httpx.Client) -> None:
    t = tag()
    spice, beef, mix, fg, bad = f"E{t}-SPICE", f"E{t}-BEEF", f"E{t}-MIX", f"E{t}-FG", f"E{t}-BAD"
    for code in (spice, beef, bad):
        make(http, code, "RAW", "x")
    assert run(http, f"RUN-E1-{t}", [(spice, 1, "kg"), (beef, 5, "kg")], [(mix, "MIX", 6)]).status_code == 201
    assert run(http, f"RUN-E2-{t}", [(mix, 6, "kg")], [(fg, "FG", 6)]).status_code == 201
    assert decide(http, beef, "pass").status_code == 201
    assert decide(http, spice, "hold", "supplier alert").status_code == 201
    assert decide(http, bad, "reject", "foreign matter").status_code == 201
    prefix = {"lot_code_prefix": f"E{t}"}

    assert codes(http, status="on_hold", **prefix) == [spice]
    assert codes(http, effective_status="on_hold", **prefix) == [spice, mix, fg]
    held = http.get("/api/lots", params={"effective_status": "on_hold", **prefix}).json()["lots"]
    assert [(lot["status"], lot["effective_status"]) for lot in held] == [
        ("on_hold", "on_hold"),
        ("pending", "on_hold"),
        ("pending", "on_hold"),
    ]
    assert codes(http, status="pending", **prefix) == [mix, fg]
    assert codes(http, effective_status="pending", **prefix) == []
    assert codes(http, effective_status="passed", **prefix) == [beef]
    assert codes(http, effective_status="rejected", **prefix) == [bad]
    assert codes(http, status="rejected", **prefix) == [bad]

    # A reject on an ancestor wins over a hold; a release lifts the hold for everything below.
    assert decide(http, beef, "reject", "temperature abuse").status_code == 201
    assert codes(http, effective_status="rejected", **prefix) == [beef, bad, mix, fg]
    assert codes(http, effective_status="on_hold", **prefix) == [spice]
    assert decide(http, spice, "release", "retest negative").status_code == 201
    assert codes(http, effective_status="released", **prefix) == [spice]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"lot_code_prefix": "bad prefix"}, "lot_code_prefix"),
        ({"effective_status": "blocked"}, "effective_status"),
        ({"status": "held"}, "status"),
        ({"produced_after": "yesterday"}, "produced_after"),
        ({"page_token": "1.x"}, "page_token"),
    ],
)
def test_bad_filters_are_a_400_naming_the_field(
    http: httpx.Client, params: dict[str, str], field: str
) -> None:
    r = http.get("/api/lots", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == field, error


def test_the_openapi_document_lists_the_filters(http: httpx.Client) -> None:
    operation = http.get("/api/openapi.json").json()["paths"]["/api/lots"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"lot_code_prefix", "product", "kind", "status", "effective_status", "produced_after"} <= names
    assert {"produced_before", "page_size", "page_token"} <= names
