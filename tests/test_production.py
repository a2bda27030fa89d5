"""Production and QC through HTTP on the running system: the seed's story end to end, runs
recorded whole or not at all, idempotent replays, append-only decisions, holds that follow
the genealogy, pagination."""

from __future__ import annotations

import concurrent.futures
import signal
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Servers, System, bearer


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def lot(http: httpx.Client, code: str, kind: str, qty: float, uom: str = "kg", product: str = "x") -> None:
    r = http.post(
        "/api/lots", json={"lot_code": code, "kind": kind, "product": product, "quantity": qty, "uom": uom}
    )
    assert r.status_code == 201, r.text


# Releases and rejects are signed with the signer's password: `http` signs in as ada, the admin.
SIGNED = ("release", "reject")


def decide(http: httpx.Client, code: str, decision: str, reason: str = "", **extra: Any) -> httpx.Response:
    if decision in SIGNED:
        extra.setdefault("password", "admin-pass-2026")
    return http.post(f"/api/lots/{code}/qc-decisions", json={"decision": decision, "reason": reason, **extra})


def run(http: httpx.Client, code: str, inputs: list[tuple[str, float, str]], outputs: list[tuple[str, str, float]],
        key: str | None = None) -> httpx.Response:  # fmt: skip
    body = {
        "run_code": code,
        "stream_code": "DONER",
        "phase_code": "MIXING",
        "operator": "Ayse",
        "inputs": [{"lot_code": c, "quantity": q, "uom": u} for c, q, u in inputs],
        "outputs": [{"lot_code": c, "kind": k, "product": f"{k} product", "quantity": q, "uom": "kg"}
                    for c, k, q in outputs],
    }  # fmt: skip
    headers = {"idempotency-key": key} if key else {}
    return http.post("/api/production-runs", json=body, headers=headers)


def test_the_seed_story_end_to_end(http: httpx.Client) -> None:
    t = tag()
    beef, spice, mix, fg = f"RAW-BEEF-{t}", f"RAW-SPICE-{t}", f"MIX-{t}", f"FG-{t}"
    lot(http, beef, "RAW", 100)
    lot(http, spice, "RAW", 10)
    for code in (beef, spice):
        assert decide(http, code, "pass", gate_code="QG-RECEIVING").status_code == 201
    r = run(http, f"RUN-MIX-{t}", [(beef, 76, "kg"), (spice, 4000, "g")], [(mix, "MIX", 80)])
    assert r.status_code == 201, r.text
    assert r.json()["run"]["balance"]["total_input"] == pytest.approx(80)
    assert run(http, f"RUN-FORM-{t}", [(mix, 80, "kg")], [(fg, "FG", 80)]).status_code == 201

    trace = http.get(f"/api/traceability/{fg}").json()
    assert [p["lot_code"] for p in trace["parents"]] == [mix]

    held = decide(http, spice, "hold", "Supplier reports salmonella in spice lot")
    assert held.status_code == 201, held.text
    status = http.get(f"/api/lots/{fg}/qc-status").json()
    assert (status["status"], status["effective_status"], status["blocked"]) == ("pending", "on_hold", True)
    assert [b["lot_code"] for b in status["blocking"]] == [spice]
    assert http.get(f"/api/lots/{fg}").json()["lot"]["effective_status"] == "on_hold"
    # Every Lot that carries an effective status names what blocks it.
    block = {"lot_code": spice, "status": "on_hold", "decision_id": held.json()["decision"]["id"],
             "reason": "Supplier reports salmonella in spice lot"}  # fmt: skip
    assert http.get(f"/api/lots/{fg}").json()["lot"]["blocking"] == [block]
    assert http.get(f"/api/traceability/{mix}").json()["children"][0]["blocking"] == [block]

    blocked = run(http, f"RUN-BAD-{t}", [(spice, 1, "kg")], [(f"MIX2-{t}", "MIX", 1)])
    assert blocked.status_code == 409
    assert blocked.json()["error"]["reason"] == "LOT_BLOCKED"
    assert blocked.json()["error"]["details"]["blocking_lot"] == spice
    via_mix = run(http, f"RUN-BAD2-{t}", [(beef, 1, "kg")], [(f"MIX3-{t}", "MIX", 1)])
    assert via_mix.status_code == 201  # beef itself is not held

    assert decide(http, spice, "release", "Lab retest negative").status_code == 201
    status = http.get(f"/api/lots/{fg}/qc-status").json()
    assert (status["effective_status"], status["blocked"]) == ("pending", False)
    trail = http.get(f"/api/lots/{spice}/qc-decisions").json()["decisions"]
    assert [d["decision"] for d in trail] == ["pass", "hold", "release"]


def test_transitions_and_reasons(http: httpx.Client) -> None:
    code = f"RAW-T-{tag()}"
    lot(http, code, "RAW", 5)
    r = decide(http, code, "hold")
    assert r.status_code == 400 and r.json()["error"]["reason"] == "FIELD_REQUIRED"
    assert decide(http, code, "reject", "Foreign body").status_code == 201
    r = decide(http, code, "release", "try")
    assert r.status_code == 409 and r.json()["error"]["reason"] == "TRANSITION_NOT_ALLOWED"
    r = decide(http, code, "maybe", "x")
    assert r.status_code == 400


def test_correction_references_the_decision_it_supersedes(http: httpx.Client) -> None:
    code = f"RAW-C-{tag()}"
    lot(http, code, "RAW", 5)
    hold = decide(http, code, "hold", "Suspected temperature abuse").json()["decision"]
    fix = decide(http, code, "release", "Logger was faulty", supersedes_id=hold["id"])
    assert fix.status_code == 201
    assert fix.json()["decision"]["supersedes_id"] == hold["id"]
    other = f"RAW-D-{tag()}"
    lot(http, other, "RAW", 5)
    r = decide(http, other, "hold", "x", supersedes_id=hold["id"])
    assert r.status_code == 409 and r.json()["error"]["reason"] == "SUPERSEDES_OTHER_LOT"


def test_cannot_consume_more_than_a_lot_holds(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert run(http, f"RUN-A-{t}", [(f"RAW-{t}", 6, "kg")], [(f"MIX-A-{t}", "MIX", 6)]).status_code == 201
    r = run(http, f"RUN-B-{t}", [(f"RAW-{t}", 5, "kg")], [(f"MIX-B-{t}", "MIX", 5)])
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["reason"] == "INSUFFICIENT_QUANTITY"
    assert (error["details"]["available"], error["details"]["requested"]) == ("4", "5")
    assert http.get(f"/api/lots/MIX-B-{t}").status_code == 404


@pytest.mark.parametrize(
    ("inputs", "status", "reason"),
    [([("NO-SUCH-LOT", 1, "kg")], 404, "LOT_NOT_FOUND"), ([("RAW-BEEF-001", 1, "ea")], 409, "UOM_MISMATCH"),
     ([("RAW-BEEF-001", -1, "kg")], 400, "QUANTITY_INVALID"), ([], 400, "RUN_INCOMPLETE")],
)  # fmt: skip
def test_bad_runs_are_refused(http: httpx.Client, inputs: list[Any], status: int, reason: str) -> None:
    r = run(http, f"RUN-X-{tag()}", inputs, [(f"OUT-{tag()}", "MIX", 1)])
    assert r.status_code == status, r.text
    assert r.json()["error"]["reason"] == reason


def test_run_code_and_output_lot_must_be_new(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert run(http, f"RUN-{t}", [(f"RAW-{t}", 1, "kg")], [(f"MIX-{t}", "MIX", 1)]).status_code == 201
    again = run(http, f"RUN-{t}", [(f"RAW-{t}", 1, "kg")], [(f"MIX2-{t}", "MIX", 1)])
    assert again.status_code == 409 and again.json()["error"]["reason"] == "RUN_EXISTS"
    clash = run(http, f"RUN2-{t}", [(f"RAW-{t}", 1, "kg")], [("FG-DONER-X1", "FG", 1)])
    assert clash.status_code == 409 and clash.json()["error"]["reason"] == "LOT_EXISTS"


def test_the_recorded_run_is_what_a_read_returns(http: httpx.Client) -> None:
    """The answer to a POST is built from what was written (no read-back): it must equal a GET,
    with several inputs, outputs, units and rounding of the proportional edge shares."""
    t = tag()
    lot(http, f"RAW-A-{t}", "RAW", 100)
    lot(http, f"RAW-B-{t}", "RAW", 5000, uom="g")
    outputs = [(f"MIX-{t}-2", "MIX", 7), (f"MIX-{t}-3", "MIX", 5.0005), (f"MIX-{t}-1", "FG", 1)]
    r = run(http, f"RUN-{t}", [(f"RAW-A-{t}", 10.001, "kg"), (f"RAW-B-{t}", 3333, "g")], outputs)
    assert r.status_code == 201, r.text
    posted = r.json()["run"]
    read = http.get(f"/api/production-runs/RUN-{t}").json()["run"]
    assert posted == read
    assert [o["lot_code"] for o in posted["outputs"]] == sorted(c for c, _, _ in outputs)
    assert posted["stream_code"] == "DONER" and posted["operator"] == "Ayse" and posted["created_at"]


def test_a_recorded_run_writes_its_event_in_the_same_statement(system: System, http: httpx.Client) -> None:
    """run.recorded names the first output lot, its product and kind, the run's stream and who
    recorded it; its data is the request. One event per run, none for a refused one."""
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 100)
    outputs = [(f"MIX-{t}-B", "MIX", 3), (f"MIX-{t}-A", "FG", 2)]
    assert run(http, f"RUN-{t}", [(f"RAW-{t}", 5, "kg")], outputs).status_code == 201
    lot(http, f"MIX-{t}-TAKEN", "MIX", 1)
    taken = run(http, f"RUN-{t}-2", [(f"RAW-{t}", 1, "kg")], [(f"MIX-{t}-TAKEN", "MIX", 1)])
    assert taken.status_code == 409, taken.text
    with psycopg.connect(system.env["DATABASE_URL"]) as db:
        rows = db.execute(
            "SELECT actor, lot_code, product, kind, stream_code, data FROM event_outbox"
            " WHERE type = 'run.recorded' AND data->>'run_code' LIKE %s",
            (f"RUN-{t}%",),
        ).fetchall()
    assert len(rows) == 1, rows
    actor, lot_code, product, kind, stream_code, data = rows[0]
    assert (actor, lot_code, product, kind, stream_code) == (
        "ada",
        f"MIX-{t}-B",
        "MIX product",
        "MIX",
        "DONER",
    )
    assert data["run_code"] == f"RUN-{t}" and data["phase_code"] == "MIXING" and data["operator"] == "Ayse"
    assert data["inputs"] == [{"lot_code": f"RAW-{t}", "quantity": 5.0, "uom": "kg"}]
    assert [o["lot_code"] for o in data["outputs"]] == [f"MIX-{t}-B", f"MIX-{t}-A"]


def test_idempotent_replay_records_once(system: System, http: httpx.Client) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 100)
    key = f"key-{t}"

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=system.base, timeout=30, headers=bearer("omar")) as client:
            return run(client, f"RUN-{t}", [(f"RAW-{t}", 10, "kg")], [(f"MIX-{t}", "MIX", 10)], key=key)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(attempt, range(20)))
    assert sorted(r.status_code for r in replies) == [200] * 19 + [201], [r.text for r in replies]
    assert len({r.json()["run"]["run_code"] for r in replies}) == 1
    balance = http.get(f"/api/production-runs/RUN-{t}").json()["run"]["inputs"]
    assert [(i["lot_code"], i["quantity"]) for i in balance] == [(f"RAW-{t}", 10.0)]
    other = run(http, f"RUN-{t}", [(f"RAW-{t}", 11, "kg")], [(f"MIX-{t}", "MIX", 11)], key=key)
    assert other.status_code == 422 and other.json()["error"]["reason"] == "IDEMPOTENCY_KEY_REUSED"


def test_a_replay_answers_the_recorded_run_after_its_input_went_on_hold(http: httpx.Client) -> None:
    """The QC check refuses new runs on a held input, but a retry of a recorded run still gets it."""
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    first = run(http, f"RUN-{t}", [(f"RAW-{t}", 2, "kg")], [(f"MIX-{t}", "MIX", 2)], key=f"key-{t}")
    assert first.status_code == 201, first.text
    assert decide(http, f"RAW-{t}", "hold", "check").status_code == 201
    again = run(http, f"RUN-{t}", [(f"RAW-{t}", 2, "kg")], [(f"MIX-{t}", "MIX", 2)], key=f"key-{t}")
    assert again.status_code == 200 and again.json() == {**first.json(), "replayed": True}, again.text
    other = run(http, f"RUN2-{t}", [(f"RAW-{t}", 2, "kg")], [(f"MIX2-{t}", "MIX", 2)], key=f"key2-{t}")
    assert other.status_code == 409 and other.json()["error"]["reason"] == "LOT_BLOCKED", other.text


def test_a_fault_between_the_writes_leaves_nothing(system: System, http: httpx.Client) -> None:
    """A trigger makes the edge insert fail after the run and its output lots were written."""
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    fn = f"fail_{t.lower()}"
    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF EXISTS (SELECT 1 FROM lots WHERE id = NEW.child_lot_id AND lot_code = 'MIX-{t}')
            THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$""")
        conn.execute(
            f"CREATE TRIGGER {fn} BEFORE INSERT ON lot_genealogy FOR EACH ROW EXECUTE FUNCTION {fn}()"
        )
        try:
            r = run(http, f"RUN-{t}", [(f"RAW-{t}", 5, "kg")], [(f"MIX-{t}", "MIX", 5)])
            assert r.status_code >= 500 and "injected" not in r.text
        finally:
            conn.execute(f"DROP TRIGGER {fn} ON lot_genealogy")
            conn.execute(f"DROP FUNCTION {fn}()")
        assert conn.execute(
            "SELECT count(*) FROM production_runs WHERE run_code = %s", (f"RUN-{t}",)
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM lots WHERE lot_code = %s", (f"MIX-{t}",)).fetchone() == (0,)
    assert run(http, f"RUN-{t}", [(f"RAW-{t}", 5, "kg")], [(f"MIX-{t}", "MIX", 5)]).status_code == 201


def test_the_database_refuses_to_change_decisions(system: System) -> None:
    for statement in (
        "UPDATE qc_decisions SET reason = 'rewritten'",
        "DELETE FROM qc_decisions",
        "DELETE FROM audit_log",
    ):
        with (
            psycopg.connect(system.env["DATABASE_URL"]) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)


def test_changes_are_audited(system: System, http: httpx.Client) -> None:
    code = f"RAW-AU-{tag()}"
    lot(http, code, "RAW", 3)
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT actor, action, entity FROM audit_log WHERE entity_key = %s", (code,)
        ).fetchone()
    assert row is not None and row[1:] == ("create", "lot")


def test_a_trace_reflects_a_new_run_at_once(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert http.get(f"/api/traceability/RAW-{t}").json()["children"] == []  # now cached
    assert run(http, f"RUN-{t}", [(f"RAW-{t}", 2, "kg")], [(f"MIX-{t}", "MIX", 2)]).status_code == 201
    children = http.get(f"/api/traceability/RAW-{t}").json()["children"]
    assert [c["lot_code"] for c in children] == [f"MIX-{t}"]


def test_ancestors_answers_reflect_a_new_run_at_once(http: httpx.Client) -> None:
    """A run drops the cached answers of its inputs' ancestors too (from the lineage its QC check
    read): a grandparent's graph and recall, cached before, show the new grandchild."""
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert run(http, f"RUN-A-{t}", [(f"RAW-{t}", 4, "kg")], [(f"MIX-{t}", "MIX", 4)]).status_code == 201
    graph = f"/api/traceability/RAW-{t}/graph?direction=downstream"
    recall = f"/api/recall/RAW-{t}"
    for path in (graph, recall, graph, recall):  # the second time from the cache
        assert http.get(path).status_code == 200
    assert run(http, f"RUN-B-{t}", [(f"MIX-{t}", 1, "kg")], [(f"FG-{t}", "FG", 1)]).status_code == 201
    assert f"FG-{t}" in {n["lot_code"] for n in http.get(graph).json()["nodes"]}
    assert f"FG-{t}" in {n["lot_code"] for n in http.get(recall).json()["downstream"]}


def test_a_trace_reflects_a_hold_at_once(http: httpx.Client) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert run(http, f"RUN-{t}", [(f"RAW-{t}", 2, "kg")], [(f"MIX-{t}", "MIX", 2)]).status_code == 201
    assert http.get(f"/api/traceability/MIX-{t}").json()["parents"][0]["status"] == "pending"
    assert decide(http, f"RAW-{t}", "hold", "check").status_code == 201
    after = http.get(f"/api/traceability/MIX-{t}").json()
    assert after["parents"][0]["status"] == "on_hold"
    assert (after["lot"]["status"], after["lot"]["effective_status"]) == ("pending", "on_hold")


def test_a_sibling_answer_reflects_a_hold_on_the_other_parent(http: httpx.Client) -> None:
    """MIX has parents A and B; a hold on B changes MIX's effective status shown in A's trace."""
    t = tag()
    lot(http, f"RAW-A-{t}", "RAW", 10)
    lot(http, f"RAW-B-{t}", "RAW", 10)
    assert (
        run(
            http, f"RUN-{t}", [(f"RAW-A-{t}", 1, "kg"), (f"RAW-B-{t}", 1, "kg")], [(f"MIX-{t}", "MIX", 2)]
        ).status_code
        == 201
    )
    assert http.get(f"/api/traceability/RAW-A-{t}").json()["children"][0]["effective_status"] == "pending"
    assert decide(http, f"RAW-B-{t}", "hold", "check").status_code == 201
    assert http.get(f"/api/traceability/RAW-A-{t}").json()["children"][0]["effective_status"] == "on_hold"


def test_streams_phases_and_gates(http: httpx.Client) -> None:
    code = f"LINE{tag()}"
    assert http.post("/api/streams", json={"code": code, "name": "Gyros line"}).status_code == 201
    assert http.post("/api/streams", json={"code": code, "name": "again"}).status_code == 409
    for seq, phase in enumerate(["RECEIVING", "MIXING", "PACKING"], start=1):
        assert (
            http.post(
                f"/api/streams/{code}/phases", json={"code": phase, "name": phase.title(), "seq": seq}
            ).status_code
            == 201
        )
    r = http.patch(f"/api/streams/{code}/phases/PACKING", json={"name": "Packing and labelling"})
    assert r.json()["phase"]["name"] == "Packing and labelling"
    stream = http.get(f"/api/streams/{code}").json()["stream"]
    assert [p["code"] for p in stream["phases"]] == ["RECEIVING", "MIXING", "PACKING"]
    gate = {"code": f"QG-{code}", "name": "Metal detection", "stream_code": code, "phase_code": "PACKING"}
    assert http.post("/api/qc-gates", json=gate).status_code == 201
    assert http.get(f"/api/qc-gates/QG-{code}").json()["gate"]["phase_code"] == "PACKING"
    assert (
        http.patch(f"/api/streams/{code}", json={"name": "Gyros line 2"}).json()["stream"]["name"]
        == "Gyros line 2"
    )
    assert http.get("/api/streams/NOPE").status_code == 404


def test_pagination_over_a_thousand_lots(system: System, http: httpx.Client) -> None:
    product = f"paging-{tag()}"
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        conn.execute(
            "INSERT INTO lots (lot_code, kind, product, quantity, uom) "
            "SELECT %s || '-' || g, 'RAW', %s, 1, 'kg' FROM generate_series(1, 1000) g",
            (product.upper(), product),
        )
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"product": product, "page_size": 97}
        if token:
            params["page_token"] = token
        page = http.get("/api/lots", params=params).json()
        seen += [lot["lot_code"] for lot in page["lots"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == 1000 and len(set(seen)) == 1000
    assert http.get("/api/lots", params={"page_size": 1000000}).status_code == 400


def test_a_run_is_all_or_nothing_when_the_service_is_killed_mid_call(
    servers: Servers, seeded_db_url: str
) -> None:
    """Kill genealogy (SIGKILL) while a run's transaction is open: nothing of the run remains."""
    from tests.conftest import add_users, running_system

    add_users(seeded_db_url)
    with (
        running_system(servers, seeded_db_url, suffix="-kill") as sys_,
        psycopg.connect(seeded_db_url, autocommit=True) as db,
    ):
        # Edge inserts wait here, after the run and its output lot are written, until we kill the service.
        db.execute("""CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$""")
        db.execute(
            "CREATE TRIGGER stall BEFORE INSERT ON lot_genealogy FOR EACH ROW EXECUTE FUNCTION stall()"
        )
        client = httpx.Client(base_url=sys_.base, headers=bearer("omar"), timeout=60)
        lot(client, "RAW-KILL-1", "RAW", 10)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                run, client, "RUN-KILL-1", [("RAW-KILL-1", 1, "kg")], [("MIX-KILL-1", "MIX", 1)]
            )
            deadline = time.monotonic() + 20
            while not db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'flowviz-genealogy' AND query LIKE '%lot_genealogy%' "
                "AND wait_event = 'PgSleep'"
            ).fetchone():
                assert time.monotonic() < deadline, "the run never reached its edges"
                time.sleep(0.05)
            genealogy = next(p for name, p in sys_.procs.items() if name.startswith("genealogy"))
            genealogy.send_signal(signal.SIGKILL)
            genealogy.wait(10)
            assert pending.result().status_code >= 500  # the gateway says the upstream is gone
        # PostgreSQL ends the dead connection's transaction: wait for it, then look.
        deadline = time.monotonic() + 40
        while db.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'flowviz-genealogy' AND state <> 'idle'"
        ).fetchone():
            db.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            assert time.monotonic() < deadline
            time.sleep(0.1)
        db.execute("DROP TRIGGER stall ON lot_genealogy")
        db.execute("DROP FUNCTION stall()")
        assert db.execute(
            "SELECT count(*) FROM production_runs WHERE run_code = 'RUN-KILL-1'"
        ).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM lots WHERE lot_code = 'MIX-KILL-1'").fetchone() == (0,)
        client.close()
