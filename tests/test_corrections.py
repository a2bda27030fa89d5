"""Corrections on the running system: a voided run gives its inputs their quantity back and
leaves every trace, recall, export and cached answer at once; refused while its output is
consumed; readable afterwards with who, when and why. Imported edges voided, lots corrected,
each with its trail, its audit row and its role check."""

from __future__ import annotations

import concurrent.futures
import csv
import io
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import System, bearer
from tests.test_production import lot, run, tag


@pytest.fixture
def operator(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base, timeout=10, headers=bearer("omar")) as client:
        yield client


def as_role(system: System, username: str) -> httpx.Client:
    return httpx.Client(base_url=system.base, timeout=10, headers=bearer(username))


def downstream(http: httpx.Client, code: str) -> list[str]:
    return [d["lot_code"] for d in http.get(f"/api/recall/{code}").json()["downstream"]]


def children(http: httpx.Client, code: str) -> list[str]:
    return [c["lot_code"] for c in http.get(f"/api/traceability/{code}").json()["children"]]


def graph_edges(http: httpx.Client, code: str, direction: str = "both") -> list[dict[str, object]]:
    r = http.get(f"/api/traceability/{code}/graph", params={"direction": direction})
    assert r.status_code == 200, r.text
    edges: list[dict[str, object]] = r.json()["edges"]
    return edges


def audit_rows(system: System, entity: str, key: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT actor, action, reason FROM audit_log WHERE entity = %s AND entity_key = %s ORDER BY id",
            (entity, key),
        ).fetchall()
    return [(a, b, c) for a, b, c in rows]


def test_a_voided_run_restores_its_inputs_and_leaves_traces_recalls_and_exports(
    system: System, http: httpx.Client, operator: httpx.Client
) -> None:
    t = tag()
    beef, spice, mix, run_code = f"RAW-VB-{t}", f"RAW-VS-{t}", f"MIX-V-{t}", f"RUN-V-{t}"
    lot(http, beef, "RAW", 100)
    lot(http, spice, "RAW", 10)
    assert run(http, run_code, [(beef, 60, "kg"), (spice, 4, "kg")], [(mix, "MIX", 64)]).status_code == 201
    # Warm the cache of every answer the void must change.
    assert downstream(http, beef) == [mix]
    assert children(http, spice) == [mix]
    assert [p["lot_code"] for p in http.get(f"/api/traceability/{mix}").json()["parents"]] == [beef, spice]
    assert len(graph_edges(http, beef, "downstream")) == 1
    assert http.get(f"/api/lots/{beef}/mass-balance").json()["remaining"] == pytest.approx(40)

    r = operator.post(
        f"/api/production-runs/{run_code}/void", json={"reason": "recorded against the wrong beef lot"}
    )
    assert r.status_code == 200, r.text
    voided = r.json()["run"]
    assert voided["voided"]["voided_by"] == "omar"
    assert voided["voided"]["reason"] == "recorded against the wrong beef lot"

    assert downstream(http, beef) == []
    assert children(http, spice) == []
    assert http.get(f"/api/traceability/{mix}").json()["parents"] == []
    assert graph_edges(http, beef, "downstream") == []
    assert http.get(f"/api/lots/{beef}/mass-balance").json()["remaining"] == pytest.approx(100)
    exported = http.get(f"/api/traceability/{beef}/export.csv", params={"direction": "downstream"})
    assert exported.status_code == 200 and run_code not in exported.text

    # The run stays readable, as it was, marked voided with who, when and why.
    again = http.get(f"/api/production-runs/{run_code}").json()["run"]
    assert [i["lot_code"] for i in again["inputs"]] == [beef, spice]
    assert [o["lot_code"] for o in again["outputs"]] == [mix]
    assert again["voided"]["voided_by"] == "omar" and again["voided"]["voided_at"]
    assert audit_rows(system, "production_run", run_code)[-1] == (
        "omar",
        "void",
        "recorded against the wrong beef lot",
    )

    # Its inputs hold their whole quantity again; its output cannot be consumed.
    assert run(http, f"RUN-V2-{t}", [(beef, 100, "kg")], [(f"MIX-V2-{t}", "MIX", 100)]).status_code == 201
    refused = run(http, f"RUN-V3-{t}", [(mix, 1, "kg")], [(f"MIX-V3-{t}", "MIX", 1)])
    assert refused.status_code == 409
    assert refused.json()["error"]["reason"] == "LOT_VOIDED"
    assert run_code in refused.json()["error"]["message"]
    assert http.get(f"/api/lots/{mix}").json()["lot"]["voided_run"] == run_code
    assert [
        lot["voided_run"]
        for lot in http.get("/api/lots", params={"lot_code_prefix": f"MIX-V-{t}"}).json()["lots"]
    ] == [run_code]
    assert http.get(f"/api/lots/{beef}").json()["lot"]["voided_run"] == ""
    fixed = http.patch(f"/api/lots/{mix}", json={"quantity": 1, "reason": "x"})
    assert fixed.status_code == 409 and fixed.json()["error"]["reason"] == "LOT_VOIDED"


def test_a_run_whose_output_was_consumed_cannot_be_voided(http: httpx.Client) -> None:
    t = tag()
    raw, mix, fg = f"RAW-VC-{t}", f"MIX-VC-{t}", f"FG-VC-{t}"
    lot(http, raw, "RAW", 10)
    assert run(http, f"RUN-VC1-{t}", [(raw, 10, "kg")], [(mix, "MIX", 10)]).status_code == 201
    assert run(http, f"RUN-VC2-{t}", [(mix, 5, "kg")], [(fg, "FG", 5)]).status_code == 201

    r = http.post(f"/api/production-runs/RUN-VC1-{t}/void", json={"reason": "wrong input"})
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["reason"] == "RUN_OUTPUT_CONSUMED"
    assert error["details"]["consumed_by"] == f"RUN-VC2-{t}"
    assert f"RUN-VC2-{t}" in error["message"] and mix in error["message"]
    assert downstream(http, raw) == [mix, fg]  # nothing changed

    # Voided from the last run back, it goes; a second void is refused with the first one named.
    assert (
        http.post(f"/api/production-runs/RUN-VC2-{t}/void", json={"reason": "wrong input"}).status_code == 200
    )
    assert (
        http.post(f"/api/production-runs/RUN-VC1-{t}/void", json={"reason": "wrong input"}).status_code == 200
    )
    twice = http.post(f"/api/production-runs/RUN-VC1-{t}/void", json={"reason": "again"})
    assert twice.status_code == 409
    assert twice.json()["error"]["reason"] == "RUN_ALREADY_VOIDED"
    assert "ada" in twice.json()["error"]["message"] and "wrong input" in twice.json()["error"]["message"]


def test_a_void_needs_a_reason_and_a_role_that_may(system: System, http: httpx.Client) -> None:
    t = tag()
    raw = f"RAW-VR-{t}"
    lot(http, raw, "RAW", 10)
    assert run(http, f"RUN-VR-{t}", [(raw, 1, "kg")], [(f"MIX-VR-{t}", "MIX", 1)]).status_code == 201
    path = f"/api/production-runs/RUN-VR-{t}/void"
    assert http.post(path, json={}).status_code == 400
    blank = http.post(path, json={"reason": "   "})
    assert blank.status_code == 400 and blank.json()["error"]["details"]["field"] == "reason"
    for username in ("ana", "quinn"):  # viewer, qc
        with as_role(system, username) as client:
            r = client.post(path, json={"reason": "not mine to void"})
            assert r.status_code == 403, r.text
    assert http.post("/api/production-runs/RUN-NO-SUCH-RUN/void", json={"reason": "x"}).status_code == 404
    assert http.get(f"/api/production-runs/RUN-VR-{t}").json()["run"]["voided"] is None


def test_a_void_waits_for_a_run_in_flight_on_its_output_and_then_refuses(
    system: System, http: httpx.Client
) -> None:
    t = tag()
    raw, mix, child = f"RAW-VW-{t}", f"MIX-VW-{t}", f"MIX-VW2-{t}"
    lot(http, raw, "RAW", 10)
    lot(http, child, "MIX", 1)
    assert run(http, f"RUN-VW-{t}", [(raw, 10, "kg")], [(mix, "MIX", 10)]).status_code == 201
    url = system.env["DATABASE_URL"]
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flowviz-genealogy' "
        "AND wait_event_type = 'Lock' AND state = 'active'"
    )
    # Another writer holds the output's row lock, as a run consuming it does until it commits.
    with psycopg.connect(url) as writer, psycopg.connect(url, autocommit=True) as watcher:
        writer.execute("SELECT 1 FROM lots WHERE lot_code = %s FOR UPDATE", (mix,))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(http.post, f"/api/production-runs/RUN-VW-{t}/void", json={"reason": "race"})
            deadline = time.monotonic() + 4
            while watcher.execute(waiting).fetchone() != (1,):  # the void waits for the lock
                assert time.monotonic() < deadline and not pending.done(), (
                    "the void did not wait for the lock"
                )
                time.sleep(0.01)
            writer.execute(
                "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) "
                "SELECT p.id, c.id, 1, 'kg' FROM lots p, lots c WHERE p.lot_code = %s AND c.lot_code = %s",
                (mix, child),
            )
            writer.commit()
            r = pending.result(10)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["reason"] == "RUN_OUTPUT_CONSUMED"
    assert child in r.json()["error"]["message"]
    assert downstream(http, raw) == [mix, child]


def test_a_run_waiting_on_a_void_of_its_input_sees_the_void(system: System, http: httpx.Client) -> None:
    t = tag()
    raw, mix = f"RAW-VX-{t}", f"MIX-VX-{t}"
    lot(http, raw, "RAW", 10)
    assert run(http, f"RUN-VX-{t}", [(raw, 10, "kg")], [(mix, "MIX", 10)]).status_code == 201
    url = system.env["DATABASE_URL"]
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flowviz-genealogy' "
        "AND wait_event_type = 'Lock' AND state = 'active'"
    )
    # A void in flight (what corrections.void_run writes, under the output's row lock).
    with psycopg.connect(url) as voider, psycopg.connect(url, autocommit=True) as watcher:
        voider.execute("SELECT 1 FROM lots WHERE lot_code = %s FOR UPDATE", (mix,))
        row = voider.execute(
            "INSERT INTO run_voids (run_id, voided_by, reason) SELECT id, 'omar', 'race' FROM production_runs "
            "WHERE run_code = %s RETURNING id, run_id",
            (f"RUN-VX-{t}",),
        ).fetchone()
        assert row is not None
        voider.execute(
            "WITH d AS (DELETE FROM lot_genealogy WHERE run_id = %s RETURNING *) "
            "INSERT INTO voided_edges (id, parent_lot_id, child_lot_id, quantity, uom, run_id, created_at, "
            "run_void_id, voided_by, reason) "
            "SELECT id, parent_lot_id, child_lot_id, quantity, uom, run_id, created_at, %s, 'omar', 'race' FROM d",
            (row[1], row[0]),
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(run, http, f"RUN-VX2-{t}", [(mix, 1, "kg")], [(f"MIX-VX2-{t}", "MIX", 1)])
            deadline = time.monotonic() + 4
            while watcher.execute(waiting).fetchone() != (1,):  # the run waits for its input's lock
                assert time.monotonic() < deadline and not pending.done(), "the run did not wait for the lock"
                time.sleep(0.01)
            voider.commit()
            r = pending.result(10)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["reason"] == "LOT_VOIDED"


def _import_edge(http: httpx.Client, parent: str, child: str, quantity: float) -> None:
    body = f"parent_lot_code,child_lot_code,quantity,uom,run_code\n{parent},{child},{quantity},kg,\n"
    r = http.post("/api/import", files={"genealogy": ("genealogy.csv", body)})
    assert r.status_code == 200 and r.json()["ok"], r.text


def test_void_an_imported_edge(system: System, http: httpx.Client, operator: httpx.Client) -> None:
    t = tag()
    raw, other, mix = f"RAW-VE-{t}", f"RAW-VE2-{t}", f"MIX-VE-{t}"
    lot(http, raw, "RAW", 10)
    lot(http, other, "RAW", 10)
    lot(http, mix, "MIX", 8)
    _import_edge(http, raw, mix, 4)
    _import_edge(http, other, mix, 4)
    [edge] = [e for e in graph_edges(http, mix, "upstream") if e["parent"] == raw]
    assert edge["run_code"] == "" and isinstance(edge["edge_id"], int)
    assert children(http, raw) == [mix]  # cached from here on

    r = operator.post(f"/api/edges/{edge['edge_id']}/void", json={"reason": "imported twice by mistake"})
    assert r.status_code == 200, r.text
    assert r.json()["edge"]["voided"]["voided_by"] == "omar"
    assert children(http, raw) == []
    assert [e["parent"] for e in graph_edges(http, mix, "upstream")] == [other]
    assert http.get(f"/api/lots/{raw}/mass-balance").json()["remaining"] == pytest.approx(10)
    kept = http.get(f"/api/edges/{edge['edge_id']}").json()["edge"]
    assert (kept["parent"], kept["child"], kept["quantity"]) == (raw, mix, 4)
    assert kept["voided"]["reason"] == "imported twice by mistake"
    assert audit_rows(system, "edge", str(edge["edge_id"]))[-1] == (
        "omar",
        "void",
        "imported twice by mistake",
    )

    again = operator.post(f"/api/edges/{edge['edge_id']}/void", json={"reason": "again"})
    assert again.status_code == 409 and again.json()["error"]["reason"] == "EDGE_ALREADY_VOIDED"
    with as_role(system, "quinn") as qc:
        assert qc.post(f"/api/edges/{edge['edge_id']}/void", json={"reason": "x"}).status_code == 403
    assert http.post("/api/edges/999999999/void", json={"reason": "x"}).status_code == 404

    # An edge of a run goes only with its run.
    assert run(http, f"RUN-VE-{t}", [(other, 1, "kg")], [(f"MIX-VE2-{t}", "MIX", 1)]).status_code == 201
    [run_edge] = [e for e in graph_edges(http, f"MIX-VE2-{t}", "upstream")]
    refused = http.post(f"/api/edges/{run_edge['edge_id']}/void", json={"reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"]["reason"] == "EDGE_OF_RUN"
    assert refused.json()["error"]["details"]["run_code"] == f"RUN-VE-{t}"


def test_correct_a_lot_with_its_trail(system: System, http: httpx.Client, operator: httpx.Client) -> None:
    t = tag()
    raw, mix = f"RAW-CL-{t}", f"MIX-CL-{t}"
    lot(http, raw, "RAW", 100, product="Beef")
    assert run(http, f"RUN-CL-{t}", [(raw, 30, "kg")], [(mix, "MIX", 30)]).status_code == 201
    assert http.get(f"/api/traceability/{mix}").json()["parents"][0]["quantity"] == 100  # cached

    r = operator.patch(
        f"/api/lots/{raw}", json={"quantity": 80, "product": "Beef trim", "reason": "scale misread"}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["lot"]["quantity"], r.json()["lot"]["product"]) == (80, "Beef trim")
    correction = r.json()["correction"]
    assert (correction["quantity_before"], correction["quantity_after"]) == (100, 80)
    assert (correction["product_before"], correction["product_after"]) == ("Beef", "Beef trim")
    assert correction["corrected_by"] == "omar" and correction["reason"] == "scale misread"

    parent = http.get(f"/api/traceability/{mix}").json()["parents"][0]
    assert (parent["quantity"], parent["product"]) == (80, "Beef trim")
    assert http.get(f"/api/lots/{raw}/mass-balance").json()["remaining"] == pytest.approx(50)
    trail = http.get(f"/api/lots/{raw}/corrections").json()["corrections"]
    assert [(c["quantity_before"], c["quantity_after"]) for c in trail] == [(100, 80)]
    assert audit_rows(system, "lot", raw)[-1] == ("omar", "correct", "scale misread")

    # Below what its children consumed: refused with the numbers and the consuming run.
    below = operator.patch(f"/api/lots/{raw}", json={"quantity": 20, "reason": "typo"})
    assert below.status_code == 409
    error = below.json()["error"]
    assert error["reason"] == "QUANTITY_BELOW_CONSUMED"
    assert (error["details"]["consumed"], error["details"]["requested"]) == ("30", "20")
    assert f"RUN-CL-{t}" in error["message"]
    units = operator.patch(f"/api/lots/{raw}", json={"uom": "ea", "reason": "counted in pieces"})
    assert units.status_code == 409 and units.json()["error"]["reason"] == "UOM_MISMATCH"
    grams = operator.patch(f"/api/lots/{raw}", json={"quantity": 80000, "uom": "g", "reason": "in grams"})
    assert grams.status_code == 200, grams.text
    assert http.get(f"/api/lots/{raw}").json()["lot"]["quantity"] == 80 * 1000

    assert operator.patch(f"/api/lots/{raw}", json={"quantity": 5}).status_code == 400  # no reason
    for same in ({}, {"quantity": 80000, "uom": "g"}):
        empty = operator.patch(f"/api/lots/{raw}", json={**same, "reason": "nothing"})
        assert empty.status_code == 409 and empty.json()["error"]["reason"] == "NOTHING_TO_CORRECT"
    for username in ("ana", "quinn"):
        with as_role(system, username) as client:
            assert client.patch(f"/api/lots/{raw}", json={"quantity": 90, "reason": "x"}).status_code == 403
    assert len(http.get(f"/api/lots/{raw}/corrections").json()["corrections"]) == 2


def test_a_recall_export_lists_the_corrected_product(http: httpx.Client) -> None:
    t = tag()
    raw, mix = f"RAW-CE-{t}", f"MIX-CE-{t}"
    lot(http, raw, "RAW", 10, product="Paprika")
    assert run(http, f"RUN-CE-{t}", [(raw, 10, "kg")], [(mix, "MIX", 10)]).status_code == 201
    assert (
        http.patch(f"/api/lots/{raw}", json={"product": "Smoked paprika", "reason": "label"}).status_code
        == 200
    )
    rows = list(csv.DictReader(io.StringIO(http.get(f"/api/traceability/{mix}/export.csv").text)))
    assert rows and all("Paprika" not in "".join(r.values()) for r in rows)
    assert any("Smoked paprika" in "".join(r.values()) for r in rows)


@pytest.mark.parametrize("table", ["run_voids", "voided_edges", "lot_corrections"])
def test_the_database_refuses_to_change_corrections(system: System, table: str) -> None:
    for statement in (f"UPDATE {table} SET reason = 'rewritten'", f"DELETE FROM {table}"):
        with (
            psycopg.connect(system.env["DATABASE_URL"]) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
