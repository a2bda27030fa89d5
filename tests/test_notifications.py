"""Recall notification lists on a diamond-shaped genealogy with hand-checked quantities, the CSV
download, the trace from the supplier's side, and a cached list that shows a new shipment at once.

    R (received, 100 kg) --40--> A (50 kg) <--10-- X (received, another supplier lot)
    R --30--> B (30 kg)
    A --20--> F (40 kg) <--20-- B

Root shares: A 40/50 = 0.8, B 1.0, F (20 x 0.8 + 20 x 1.0) / 40 = 0.9.
Shipments: F 10 kg to C1/DC1 (9 kg of R), F 5 kg to C1/DC2 (4.5), A 10 kg to C2/DC3 (8),
R 10 kg to C2/DC3 (10); X 5 kg to C2/DC3 is not affected.
In the plant: R 100-40-30-10 = 20 (20 of R), A 50-20-10 = 20 (16), B 30-20 = 10 (10), F 40-15 = 25 (22.5).
Every kg of R is accounted for: 31.5 shipped + 68.5 in the plant = 100."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from tests.test_production import run
from tests.test_shipping import Parties, make_parties, receive, ship, tag


@pytest.fixture
def parties(http: httpx.Client) -> Parties:
    return make_parties(http)


@pytest.fixture
def diamond(http: httpx.Client, parties: Parties) -> dict[str, str]:
    t = tag()
    codes = {k: f"{k}-DIA-{t}" for k in ("R", "X", "A", "B", "F")}
    for customer, sites in (("C1", ("DC1", "DC2")), ("C2", ("DC3",))):
        codes[customer] = f"{customer}-{t}"
        r = http.post("/api/partners", json={"code": codes[customer], "name": f"{customer} Foods",
                                             "roles": ["customer"], "contact_name": f"{customer} QA",
                                             "contact_email": f"qa@{customer.lower()}.example"})  # fmt: skip
        assert r.status_code == 201, r.text
        for site in sites:
            codes[site] = f"{site}-{t}"
            r = http.post("/api/locations", json={"code": codes[site], "name": f"{customer} {site}",
                                                  "partner_code": codes[customer], "city": "Köln"})  # fmt: skip
            assert r.status_code == 201, r.text
    assert receive(http, parties, codes["R"], 100, supplier_lot_code=f"SUP/{t}").status_code == 201
    assert receive(http, parties, codes["X"], 100).status_code == 201
    R, X, A, B, F = (codes[k] for k in ("R", "X", "A", "B", "F"))
    assert run(http, f"RUN-A-{t}", [(R, 40, "kg"), (X, 10, "kg")], [(A, "MIX", 50)]).status_code == 201
    assert run(http, f"RUN-B-{t}", [(R, 30, "kg")], [(B, "MIX", 30)]).status_code == 201
    assert run(http, f"RUN-F-{t}", [(A, 20, "kg"), (B, 20, "kg")], [(F, "FG", 40)]).status_code == 201
    for lot, qty, customer, site, shipped_at in (
        (F, 10, "C1", "DC1", "2026-12-01T10:00:00Z"),
        (F, 5, "C1", "DC2", "2026-12-01T11:00:00Z"),
        (A, 10, "C2", "DC3", "2026-12-01T12:00:00Z"),
        (R, 10, "C2", "DC3", "2026-12-01T13:00:00Z"),
        (X, 5, "C2", "DC3", "2026-12-01T14:00:00Z"),
    ):
        r = ship(http, parties, lot, qty, customer_code=codes[customer], ship_to_location_code=codes[site],
                 shipped_at=shipped_at, document_number=f"BOL-{lot}-{qty}")  # fmt: skip
        assert r.status_code == 201, r.text
    codes["supplier_lot"] = f"SUP/{t}"
    return codes


def notifications(http: httpx.Client, code: str) -> dict[str, Any]:
    r = http.get(f"/api/recall/{code}/notifications")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def check_diamond(body: dict[str, Any], c: dict[str, str]) -> None:
    assert body["root"] == c["R"] and body["shipments"] == 4
    assert (body["shipped_kg"], body["root_shipped_kg"]) == (pytest.approx(35), pytest.approx(31.5))
    assert (body["in_plant_kg"], body["root_in_plant_kg"]) == (pytest.approx(75), pytest.approx(68.5))
    c1, c2 = body["customers"]
    assert (c1["customer_code"], c1["contact_email"], c1["shipments"]) == (c["C1"], "qa@c1.example", 2)
    assert (c1["quantity_kg"], c1["root_quantity_kg"]) == (pytest.approx(15), pytest.approx(13.5))
    assert [(p["location_code"], p["city"]) for p in c1["locations"]] == [
        (c["DC1"], "Köln"),
        (c["DC2"], "Köln"),
    ]
    dc1 = c1["locations"][0]["shipments"]
    assert [(n["shipment"]["lot_code"], n["shipment"]["quantity"], n["depth"]) for n in dc1] == [
        (c["F"], 10, 2)
    ]
    assert (dc1[0]["root_share"], dc1[0]["root_quantity"]) == (pytest.approx(0.9), pytest.approx(9))
    assert dc1[0]["shipment"]["document_number"] == f"BOL-{c['F']}-10"
    assert c1["locations"][1]["shipments"][0]["root_quantity"] == pytest.approx(4.5)
    assert (c2["customer_code"], c2["shipments"]) == (c["C2"], 2)
    assert (c2["quantity_kg"], c2["root_quantity_kg"]) == (pytest.approx(20), pytest.approx(18))
    dc3 = c2["locations"][0]["shipments"]  # X's shipment is not affected: not listed
    assert [(n["shipment"]["lot_code"], n["root_quantity"]) for n in dc3] == [
        (c["A"], pytest.approx(8)), (c["R"], pytest.approx(10)),
    ]  # fmt: skip
    stock = {s["lot"]["lot_code"]: s for s in body["in_plant"]}
    assert {code: (s["remaining"], s["root_quantity"]) for code, s in stock.items()} == {
        c["R"]: (pytest.approx(20), pytest.approx(20)),
        c["A"]: (pytest.approx(20), pytest.approx(16)),
        c["B"]: (pytest.approx(10), pytest.approx(10)),
        c["F"]: (pytest.approx(25), pytest.approx(22.5)),
    }
    assert stock[c["R"]]["location_code"].startswith("PLANT-") and stock[c["F"]]["location_code"] == ""


def test_the_notification_list_of_a_diamond(http: httpx.Client, diamond: dict[str, str]) -> None:
    check_diamond(notifications(http, diamond["R"]), diamond)
    # From F's side only F's own shipments and stock count (F is the root: share 1).
    of_f = notifications(http, diamond["F"])
    assert (of_f["shipments"], of_f["root_shipped_kg"], of_f["in_plant_kg"]) == (2, 15, 25)


def test_the_notification_list_as_csv(http: httpx.Client, diamond: dict[str, str]) -> None:
    r = http.get(f"/api/recall/{diamond['R']}/notifications.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    shipped = [row for row in rows if row["relation"] == "shipment"]
    assert [(row["customer_code"], row["lot_code"], float(row["root_quantity"])) for row in shipped] == [
        (diamond["C1"], diamond["F"], pytest.approx(9)),
        (diamond["C1"], diamond["F"], pytest.approx(4.5)),
        (diamond["C2"], diamond["A"], pytest.approx(8)),
        (diamond["C2"], diamond["R"], pytest.approx(10)),
    ]
    assert shipped[0]["contact_email"] == "qa@c1.example" and shipped[0]["document_type"] == "ASN"
    in_plant = {row["lot_code"]: float(row["quantity"]) for row in rows if row["relation"] == "in_plant"}
    assert in_plant == {diamond["R"]: 20, diamond["A"]: 20, diamond["B"]: 10, diamond["F"]: 25}
    assert http.get("/api/recall/NO-SUCH-LOT/notifications.csv").status_code == 404


def test_the_trace_from_the_suppliers_side(
    http: httpx.Client, parties: Parties, diamond: dict[str, str]
) -> None:
    r = http.post("/api/supplier-trace", json={"supplier_code": parties.supplier,
                                               "supplier_lot_code": diamond["supplier_lot"]})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["lot_code"] for x in body["receipts"]] == [diamond["R"]]
    [down] = body["downstream"]
    assert {n["lot"]["lot_code"] for n in down["nodes"]} == {diamond[k] for k in ("R", "A", "B", "F")}
    assert len(down["shipments"]) == 4
    [notes] = body["notifications"]
    check_diamond(notes, diamond)
    none = http.post(
        "/api/supplier-trace", json={"supplier_code": parties.supplier, "supplier_lot_code": "NEVER"}
    )
    assert none.status_code == 200 and none.json().get("receipts", []) == []
    unknown = http.post(
        "/api/supplier-trace", json={"supplier_code": "NOBODY-AT-ALL", "supplier_lot_code": "x"}
    )
    assert unknown.status_code == 404 and "supplier_code" in unknown.json()["error"]["message"]


def test_a_cached_notification_list_shows_a_new_shipment_at_once(
    http: httpx.Client, parties: Parties, diamond: dict[str, str]
) -> None:
    for _ in range(2):  # the second answer is the cached one
        assert notifications(http, diamond["R"])["shipments"] == 4
    assert ship(http, parties, diamond["B"], 4).status_code == 201
    body = notifications(http, diamond["R"])
    assert body["shipments"] == 5 and body["root_shipped_kg"] == pytest.approx(35.5)
    assert body["root_in_plant_kg"] == pytest.approx(64.5)


def test_a_changed_contact_shows_in_a_cached_list_at_once(
    http: httpx.Client, diamond: dict[str, str]
) -> None:
    for _ in range(2):
        assert notifications(http, diamond["R"])["customers"][0]["contact_name"] == "C1 QA"
    r = http.patch(f"/api/partners/{diamond['C1']}", json={"contact_name": "Night shift QA"})
    assert r.status_code == 200, r.text
    assert http.patch(f"/api/locations/{diamond['DC1']}", json={"city": "Bonn"}).status_code == 200
    body = notifications(http, diamond["R"])
    assert body["customers"][0]["contact_name"] == "Night shift QA"
    assert body["customers"][0]["locations"][0]["city"] == "Bonn"
