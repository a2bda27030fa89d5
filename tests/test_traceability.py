"""The traceability engine through the gateway: graph traces, recall impact with quantities,
mass balance, exports, bulk import, drills, and caching that is never stale, even when
Valkey goes away."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from flowviz.tools.embedded import Valkey, free_port
from tests.conftest import Servers, System, bearer, running_system
from tests.test_production import decide, lot, run


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def test_graph_of_the_seed(http: httpx.Client) -> None:
    g = http.get("/api/traceability/FG-DONER-X1/graph", params={"direction": "upstream"}).json()
    assert (g["root"], g["direction"], g["truncated"], g["cycles"]) == ("FG-DONER-X1", "upstream", False, [])
    depth = {n["lot_code"]: n["depth"] for n in g["nodes"]}
    assert depth == {"FG-DONER-X1": 0, "MIX-BATCH-88": 1, "RAW-BEEF-001": 2, "RAW-SPICE-001": 2}
    edges = {(e["parent"], e["child"]): (e["quantity"], e["uom"], e["run_code"]) for e in g["edges"]}
    assert edges[("RAW-SPICE-001", "MIX-BATCH-88")] == (20.0, "kg", "RUN-MIX-88")
    assert len(edges) == 3


def test_graph_limits_are_checked(http: httpx.Client) -> None:
    assert http.get("/api/traceability/FG-DONER-X1/graph", params={"max_depth": 100000}).status_code == 400
    assert http.get("/api/traceability/FG-DONER-X1/graph", params={"max_nodes": 10**9}).status_code == 400
    assert (
        http.get("/api/traceability/FG-DONER-X1/graph", params={"direction": "sideways"}).status_code == 400
    )
    assert http.get("/api/traceability/NO-SUCH/graph").status_code == 404
    r = http.get("/api/traceability/RAW-SPICE-001/graph", params={"direction": "downstream", "max_depth": 1})
    assert r.json()["truncated"] is True
    assert {n["lot_code"] for n in r.json()["nodes"]} == {"RAW-SPICE-001", "MIX-BATCH-88"}


def test_recall_of_the_spice_with_quantities(http: httpx.Client) -> None:
    r = http.get("/api/recall/RAW-SPICE-001").json()
    down = {x["lot_code"]: x for x in r["downstream"]}
    assert down["MIX-BATCH-88"]["root_share"] == pytest.approx(0.05)  # 20 kg of 400 kg
    assert down["FG-DONER-X1"]["root_quantity"] == pytest.approx(20.0)
    assert down["FG-DONER-X1"]["path_count"] == 1
    fg = next(t for t in r["totals"] if t["kind"] == "FG")
    assert (fg["lots"], fg["quantity_kg"], fg["root_quantity_kg"]) == (1, 400.0, pytest.approx(20.0))


def test_composition_of_the_finished_good(http: httpx.Client) -> None:
    r = http.get("/api/recall/FG-DONER-X1").json()
    up = {x["lot_code"]: x for x in r["upstream"]}
    assert up["RAW-BEEF-001"]["share"] == pytest.approx(0.95)
    assert up["RAW-SPICE-001"]["share"] == pytest.approx(0.05)
    assert up["RAW-SPICE-001"]["is_source"] is True and up["MIX-BATCH-88"]["is_source"] is False
    assert r["sources_share"] == pytest.approx(1.0)


def test_a_diamond_is_counted_once_with_quantities_summed(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"R-{t}", "RAW", 100)
    assert run(http, f"RUN-A-{t}", [(f"R-{t}", 10, "kg")], [(f"A-{t}", "MIX", 10)]).status_code == 201
    assert run(http, f"RUN-B-{t}", [(f"R-{t}", 30, "kg")], [(f"B-{t}", "MIX", 30)]).status_code == 201
    assert (
        run(
            http, f"RUN-C-{t}", [(f"A-{t}", 10, "kg"), (f"B-{t}", 30, "kg")], [(f"C-{t}", "FG", 40)]
        ).status_code
        == 201
    )
    r = http.get(f"/api/recall/R-{t}").json()
    down = {x["lot_code"]: x for x in r["downstream"]}
    assert [x["lot_code"] for x in r["downstream"]].count(f"C-{t}") == 1
    assert down[f"C-{t}"]["path_count"] == 2
    assert down[f"C-{t}"]["root_quantity"] == pytest.approx(40.0)


def test_mass_balance_flags_overconsumption(http: httpx.Client, system: System) -> None:
    import psycopg

    t = tag()
    lot(http, f"R-{t}", "RAW", 10)
    assert run(http, f"RUN-{t}", [(f"R-{t}", 8, "kg")], [(f"M-{t}", "MIX", 8)]).status_code == 201
    ok = http.get(f"/api/lots/R-{t}/mass-balance").json()
    assert (ok["consumed_by_children"], ok["remaining"], ok["flags"]) == (8.0, 2.0, [])
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:  # bad imported data: 5 kg more than it held
        conn.execute(
            "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) "
            "SELECT p.id, c.id, 5, 'kg' FROM lots p, lots c WHERE p.lot_code = %s AND c.lot_code = %s",
            (f"R-{t}", f"M-{t}"),
        )
    bad = http.get(f"/api/lots/R-{t}/mass-balance").json()
    assert "OVERCONSUMED" in bad["flags"] and bad["remaining"] == pytest.approx(-3.0)


def test_graph_sees_a_new_run_at_once(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"R-{t}", "RAW", 10)
    before = http.get(f"/api/traceability/R-{t}/graph").json()
    assert [n["lot_code"] for n in before["nodes"]] == [f"R-{t}"]
    assert run(http, f"RUN-{t}", [(f"R-{t}", 1, "kg")], [(f"M-{t}", "MIX", 1)]).status_code == 201
    after = http.get(f"/api/traceability/R-{t}/graph").json()
    assert {n["lot_code"] for n in after["nodes"]} == {f"R-{t}", f"M-{t}"}
    recall = http.get(f"/api/recall/R-{t}").json()
    assert [x["lot_code"] for x in recall["downstream"]] == [f"M-{t}"]


def test_exports_stream_csv_and_epcis(http: httpx.Client) -> None:
    r = http.get("/api/traceability/FG-DONER-X1/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {(x["traceability_lot_code"], x["input_lot_code"], x["reference_document"]) for x in rows} == {
        ("MIX-BATCH-88", "RAW-BEEF-001", "RUN-MIX-88"),
        ("MIX-BATCH-88", "RAW-SPICE-001", "RUN-MIX-88"),
        ("FG-DONER-X1", "MIX-BATCH-88", "RUN-FORM-X1"),
    }
    assert rows[0]["location"] == "DONER" and rows[0]["quantity"] and rows[0]["unit"] == "kg"
    doc = http.get("/api/traceability/FG-DONER-X1/export.jsonld").json()
    assert doc["type"] == "EPCISDocument" and doc["schemaVersion"] == "2.0"
    events = {e["transformationID"]: e for e in doc["epcisBody"]["eventList"]}
    mix = events["urn:flowviz:run:RUN-MIX-88"]
    assert mix["type"] == "TransformationEvent"
    assert {q["epcClass"]: q["quantity"] for q in mix["inputQuantityList"]} == {
        "urn:flowviz:lot:RAW-BEEF-001": 380.0,
        "urn:flowviz:lot:RAW-SPICE-001": 20.0,
    }
    assert http.get("/api/traceability/NO-SUCH/export.csv").status_code == 404


def test_downstream_exports_list_every_input_of_each_transformation(http: httpx.Client) -> None:
    # Walking down from the spice reaches the mix, not the beef; the mix's event still lists both.
    params = {"direction": "downstream"}
    r = http.get("/api/traceability/RAW-SPICE-001/export.csv", params=params)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    mix = {
        (x["input_lot_code"], x["input_quantity"]) for x in rows if x["reference_document"] == "RUN-MIX-88"
    }
    assert mix == {("RAW-BEEF-001", "380.0"), ("RAW-SPICE-001", "20.0")}
    beef = next(x for x in rows if x["input_lot_code"] == "RAW-BEEF-001")
    assert (beef["input_product"], beef["input_kind"], beef["input_unit"]) == ("Beef trim 80/20", "RAW", "kg")
    assert {x["reference_document"] for x in rows} == {"RUN-MIX-88", "RUN-FORM-X1"}
    doc = http.get("/api/traceability/RAW-SPICE-001/export.jsonld", params=params).json()
    events = {e["transformationID"]: e for e in doc["epcisBody"]["eventList"]}
    assert {
        q["epcClass"]: q["quantity"] for q in events["urn:flowviz:run:RUN-MIX-88"]["inputQuantityList"]
    } == {
        "urn:flowviz:lot:RAW-BEEF-001": 380.0,
        "urn:flowviz:lot:RAW-SPICE-001": 20.0,
    }


def test_import_with_bad_rows_imports_nothing(http: httpx.Client, system: System) -> None:
    t = tag()
    lots = f"lot_code,kind,product,quantity,uom,produced_at\nI1-{t},RAW,Salt,10,kg,\nI2-{t},MIX,Brine,5,kg,\n"
    bad = (
        "parent_lot_code,child_lot_code,quantity,uom,run_code\n"
        f"I1-{t},I2-{t},2,kg,\nI1-{t},I1-{t},1,kg,\nNOPE-{t},I2-{t},x,kg,\n"
    )
    r = http.post("/api/import", files={"lots": ("lots.csv", lots), "genealogy": ("genealogy.csv", bad)})
    assert r.status_code == 400, r.text
    reasons = {(e["file"], e["row"]) for e in r.json()["errors"]}
    assert {("genealogy", 2), ("genealogy", 3)} <= reasons
    assert http.get(f"/api/lots/I1-{t}").status_code == 404
    good = f"parent_lot_code,child_lot_code,quantity,uom,run_code\nI1-{t},I2-{t},2,kg,RUN-I-{t}\n"
    r = http.post("/api/import", files={"lots": ("lots.csv", lots), "genealogy": ("genealogy.csv", good)})
    assert r.status_code == 200, r.text
    assert (r.json()["lots_imported"], r.json()["edges_imported"]) == (2, 1)
    assert [p["lot_code"] for p in http.get(f"/api/traceability/I2-{t}").json()["parents"]] == [f"I1-{t}"]


def test_a_drill_snapshot_does_not_change_after_later_writes(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"R-{t}", "RAW", 10)
    assert run(http, f"RUN-{t}", [(f"R-{t}", 2, "kg")], [(f"M-{t}", "MIX", 2)]).status_code == 201
    created = http.post("/api/scenarios", json={"name": f"Drill {t}", "lot_code": f"R-{t}"})
    assert created.status_code == 201, created.text
    scenario = created.json()["scenario"]
    assert scenario["created_by"] == "ada" and scenario["duration_ms"] > 0
    assert [x["lot_code"] for x in scenario["snapshot"]["recall"]["downstream"]] == [f"M-{t}"]
    assert run(http, f"RUN2-{t}", [(f"R-{t}", 2, "kg")], [(f"M2-{t}", "MIX", 2)]).status_code == 201
    assert decide(http, f"R-{t}", "hold", "drill follow-up").status_code == 201
    again = http.get(f"/api/scenarios/{scenario['id']}").json()["scenario"]
    assert again == scenario
    listed = http.get("/api/scenarios", params={"page_size": 500}).json()["scenarios"]
    assert scenario["id"] in [s["id"] for s in listed]
    rows = list(csv.DictReader(io.StringIO(http.get(f"/api/scenarios/{scenario['id']}/export.csv").text)))
    assert [r["lot_code"] for r in rows if r["relation"] == "downstream"] == [f"M-{t}"]


@pytest.fixture
def own_valkey_system(servers: Servers, seeded_db_url: str) -> Iterator[tuple[System, Valkey]]:
    """A system with a Valkey of its own, so the test can stop it."""
    from tests.conftest import add_users

    add_users(seeded_db_url)
    valkey = Valkey(servers.tmp / f"valkey-{tag()}", free_port())
    valkey.start()
    original = servers.valkey
    servers.valkey = valkey
    try:
        with running_system(servers, seeded_db_url, suffix=f"-vk{valkey.port}") as sys_:
            yield sys_, valkey
    finally:
        servers.valkey = original
        valkey.stop()


def test_reads_succeed_with_valkey_stopped_mid_test(own_valkey_system: tuple[System, Valkey]) -> None:
    system, valkey = own_valkey_system
    with httpx.Client(base_url=system.base, headers=bearer("ada"), timeout=10) as client:
        first = client.get("/api/traceability/FG-DONER-X1").json()
        graph = client.get("/api/traceability/FG-DONER-X1/graph").json()
        valkey.stop()
        for _ in range(20):
            assert client.get("/api/traceability/FG-DONER-X1").json() == first
            assert client.get("/api/traceability/FG-DONER-X1/graph").json() == graph
            assert client.get("/api/recall/RAW-SPICE-001").status_code == 200
        # Writes still work too, and a later read reflects them (no cache to be stale).
        lot(client, "RAW-NOCACHE-1", "RAW", 5)
        assert (
            run(
                client, "RUN-NOCACHE-1", [("RAW-NOCACHE-1", 1, "kg")], [("MIX-NOCACHE-1", "MIX", 1)]
            ).status_code
            == 201
        )
        assert [c["lot_code"] for c in client.get("/api/traceability/RAW-NOCACHE-1").json()["children"]] == [
            "MIX-NOCACHE-1"
        ]
        assert orjson.loads(client.get("/api/health").content)["components"]["cache"]["healthy"] in (
            False,
            True,
        )


def test_a_hold_shows_on_every_lot_of_cached_recalls_and_graphs(http: httpx.Client) -> None:
    """S2 > S > M is an ingredient line of M: a recall of S2 shows M, so a hold on R (M's other
    parent) must reach S2's cached answers too, not only those of R's relatives."""
    t = tag()
    for code in (f"R-{t}", f"S2-{t}"):
        lot(http, code, "RAW", 100)
    assert run(http, f"RUN-S-{t}", [(f"S2-{t}", 10, "kg")], [(f"S-{t}", "MIX", 10)]).status_code == 201
    assert (
        run(
            http, f"RUN-M-{t}", [(f"R-{t}", 10, "kg"), (f"S-{t}", 10, "kg")], [(f"M-{t}", "MIX", 20)]
        ).status_code
        == 201
    )
    recall, graph = f"/api/recall/S2-{t}", f"/api/traceability/S2-{t}/graph"
    down = {x["lot_code"]: x for x in http.get(recall).json()["downstream"]}
    assert down[f"M-{t}"]["effective_status"] == "pending" and down[f"M-{t}"]["blocking"] == []
    http.get(graph)  # cached before the hold
    held = decide(http, f"R-{t}", "hold", "supplier recall")
    assert held.status_code in (200, 201), held.text
    decision = held.json()["decision"]["id"]
    down = {x["lot_code"]: x for x in http.get(recall).json()["downstream"]}
    block = [
        {"lot_code": f"R-{t}", "status": "on_hold", "decision_id": decision, "reason": "supplier recall"}
    ]
    assert (down[f"M-{t}"]["effective_status"], down[f"M-{t}"]["blocking"]) == ("on_hold", block)
    assert down[f"S-{t}"]["effective_status"] == "pending"
    nodes = {n["lot_code"]: n for n in http.get(graph).json()["nodes"]}
    assert nodes[f"M-{t}"]["effective_status"] == "on_hold" and nodes[f"M-{t}"]["blocking"] == block


def test_a_drill_accounts_for_the_whole_lot_in_its_snapshot_and_csv(http: httpx.Client) -> None:
    """10 kg of raw: 4 kg into a mix of 4 kg that becomes 3.5 kg of goods (0.5 kg lost), 6 kg in stock."""
    t = tag()
    lot(http, f"R-{t}", "RAW", 10)
    assert run(http, f"RUN-M-{t}", [(f"R-{t}", 4, "kg")], [(f"M-{t}", "MIX", 4)]).status_code == 201
    assert run(http, f"RUN-F-{t}", [(f"M-{t}", 4, "kg")], [(f"F-{t}", "FG", 3.5)]).status_code == 201
    assert decide(http, f"R-{t}", "hold", "mock recall").status_code == 201
    scenario = http.post("/api/scenarios", json={"name": f"Drill {t}", "lot_code": f"R-{t}"}).json()[
        "scenario"
    ]
    drill = scenario["accountability"]
    assert drill == scenario["snapshot"]["accountability"]
    assert (drill["unit"], drill["basis"], drill["in_stock"], drill["downstream"]) == ("kg", 10.0, 6.0, 0.0)
    assert drill["children"] == [{"lot_code": f"M-{t}", "quantity": 4.0, "root_quantity": 4.0}]
    assert (drill["end_lots"], drill["end_lot_count"]) == (pytest.approx(3.5), 1)
    assert drill["unaccounted"] == pytest.approx(0.5) and drill["unaccounted_percent"] == pytest.approx(5.0)
    assert [(r["run_code"], r["lot_code"], r["flag"]) for r in drill["runs"]] == [
        (f"RUN-F-{t}", f"F-{t}", "YIELD_LOSS")
    ]
    assert drill["explained_by_losses"] == pytest.approx(0.5)
    assert (drill["tolerance"], drill["within_tolerance"]) == (0.02, False) and drill["trace_ms"] > 0
    # The mix and the goods are listed with their effective status in the frozen recall.
    statuses = {x["lot_code"]: x["effective_status"] for x in scenario["snapshot"]["recall"]["downstream"]}
    assert statuses == {f"M-{t}": "on_hold", f"F-{t}": "on_hold"}
    rows = list(csv.DictReader(io.StringIO(http.get(f"/api/scenarios/{scenario['id']}/export.csv").text)))
    figures = {r["relation"]: r for r in rows if r["relation"].startswith("accountability:")}
    assert float(figures["accountability:in_stock"]["quantity"]) == 6.0
    assert float(figures["accountability:unaccounted"]["quantity"]) == pytest.approx(0.5)
    assert figures["accountability:run"]["lot_code"] == f"F-{t}"
    assert figures["accountability:verdict"]["status"] == "fail"
    assert figures["accountability:into_child"]["lot_code"] == f"M-{t}"
    lots = {r["lot_code"]: r for r in rows if r["relation"] == "downstream"}
    assert (lots[f"F-{t}"]["effective_status"], lots[f"F-{t}"]["blocking_lots"]) == ("on_hold", f"R-{t}")
