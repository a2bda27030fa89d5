"""Events out (issue 16): signed webhooks from the transactional outbox, against a real HTTP
receiver on loopback that verifies every delivery with the reference implementation."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from flowviz.tools import seed
from services.events import retention, signing, targets
from tests.conftest import TEMPLATE, Servers, System, add_users, bearer, running_system
from tests.webhook_receiver import Receiver, of_type

LOT_EVENTS = ["lot.blocked", "lot.unblocked"]
RELEASE = {"decision": "release", "reason": "retest negative", "password": "admin-pass-2026"}
FAST = {
    "FLOWVIZ_WEBHOOKS_RETRY_BASE": "0.2",
    "FLOWVIZ_WEBHOOKS_RETRY_MAX": "1",
    "FLOWVIZ_WEBHOOKS_TIMEOUT": "2",
}


def _database() -> str:
    return f"webhooks{os.getpid()}"


@pytest.fixture(scope="module")
def system(servers: Servers) -> Iterator[System]:
    """The whole system on a database of its own (these tests hold and release the seed's lots,
    and stop and start the events service)."""
    name = _database()
    with servers.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    url = servers.url(name)
    seed.load(url)
    add_users(url)
    with running_system(servers, url, suffix="-webhooks", env=FAST) as sys_:
        yield sys_
    with servers.admin() as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base, timeout=30, headers=bearer("ada")) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.release.set()
    r.stop()


def subscribe(http: httpx.Client, receiver: Receiver, types: list[str], **extra: Any) -> int:
    r = http.post(
        "/api/webhooks/subscriptions", json={"target_url": receiver.url, "event_types": types, **extra}
    )
    assert r.status_code == 201, r.text
    receiver.secret = r.json()["secret"]
    assert receiver.secret.startswith("whsec_")
    return int(r.json()["subscription"]["id"])


def restart_events(system: System, http: httpx.Client, env: dict[str, str] | None = None) -> None:
    """Start the events service again and wait until it answers (the system's health snapshot may
    still be the one from before it stopped)."""
    system.start("events-webhooks", "services.events", env=env)
    deadline = time.monotonic() + 60
    while http.get("/api/webhooks/subscriptions").status_code != 200:
        assert time.monotonic() < deadline, system.log("events-webhooks")[-2000:]
        time.sleep(0.1)


def decide(http: httpx.Client, lot: str, body: dict[str, Any]) -> None:
    r = http.post(f"/api/lots/{lot}/qc-decisions", json=body)
    assert r.status_code == 201, r.text


def affected(http: httpx.Client, lot: str) -> list[str]:
    impact = http.get(f"/api/recall/{lot}").json()
    return [impact["root"]["lot_code"], *(d["lot_code"] for d in impact["downstream"])]


def deliveries(http: httpx.Client, sub: int) -> list[dict[str, Any]]:
    r = http.get(f"/api/webhooks/subscriptions/{sub}/deliveries", params={"page_size": 500})
    assert r.status_code == 200, r.text
    return list(r.json().get("deliveries", []))


def per_lot(payloads: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in payloads:
        found.setdefault(p["lot_code"], []).append(p["type"])
    return found


def test_a_hold_on_a_raw_lot_blocks_each_lot_the_recall_impact_lists(
    http: httpx.Client, receiver: Receiver
) -> None:
    sub = subscribe(http, receiver, [*LOT_EVENTS, "qc.decision.recorded"])
    lots = affected(http, "RAW-SPICE-001")
    assert len(lots) >= 3
    decide(http, "RAW-SPICE-001", {"decision": "hold", "reason": "salmonella suspected"})
    got = receiver.wait(
        "a lot.blocked per affected lot",
        lambda g: len(of_type([r.payload for r in g], "lot.blocked")) >= len(lots),
    )
    blocked = of_type([r.payload for r in got], "lot.blocked")
    assert sorted(p["lot_code"] for p in blocked) == sorted(lots)  # one each, no more
    for p in blocked:
        assert p["data"]["blocking_lot"]["lot_code"] == "RAW-SPICE-001"
        assert p["data"]["blocking_lot"]["reason"] == "salmonella suspected"
        assert p["data"]["lot"]["lot_code"] == p["lot_code"]
        assert p["actor"] == "ada"
    [decision] = of_type([r.payload for r in got], "qc.decision.recorded")
    assert decision["data"]["decision"]["decision"] == "hold" and decision["data"]["status"] == "on_hold"

    decide(http, "RAW-SPICE-001", RELEASE)
    got = receiver.wait(
        "the lots unblocked", lambda g: len(of_type([r.payload for r in g], "lot.unblocked")) >= len(lots)
    )
    assert sorted(p["lot_code"] for p in of_type([r.payload for r in got], "lot.unblocked")) == sorted(lots)
    for lot, types in per_lot(
        [r.payload for r in got if r.payload["type"] != "qc.decision.recorded"]
    ).items():
        assert types == LOT_EVENTS, lot
    assert not receiver.refused
    log = deliveries(http, sub)
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in log), log
    assert all(d["last_status_code"] == 204 and d["last_latency_ms"] > 0 for d in log)
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200


def test_a_receiver_that_was_down_gets_every_event_in_order_per_lot(
    http: httpx.Client, receiver: Receiver
) -> None:
    sub = subscribe(http, receiver, LOT_EVENTS)
    lots = affected(http, "RAW-BEEF-001")
    receiver.stop()  # down: connections refused
    for body in ({"decision": "hold", "reason": "foreign body"}, RELEASE) * 2:
        decide(http, "RAW-BEEF-001", body)
    expected = 4 * len(lots)
    deadline = time.monotonic() + 60
    while True:  # until the log shows retries of refused connections
        log = deliveries(http, sub)
        if len(log) == expected and any(d["attempts"] >= 2 for d in log):
            break
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    assert all(d["status"] == "pending" for d in log)
    assert any("Connect" in d["last_error"] for d in log), log
    receiver.start()  # up again, on the same port
    receiver.wait("every event", lambda g: sum(r.acknowledged for r in g) >= expected)
    acked = receiver.acknowledged()
    assert len({p["id"] for p in acked}) == len(acked) == expected  # no acknowledged id twice
    for lot, types in per_lot(acked).items():
        assert types == LOT_EVENTS * 2, lot
    assert {p["lot_code"] for p in acked} == set(lots)
    # The dispatcher records the outcome after the receiver's answer: the log catches up.
    deadline = time.monotonic() + 30
    log = deliveries(http, sub)
    while not all(d["status"] == "delivered" for d in log):
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
        log = deliveries(http, sub)
    assert len(log) == expected
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200


def test_killing_the_dispatcher_mid_delivery_loses_nothing(
    system: System, http: httpx.Client, receiver: Receiver
) -> None:
    sub = subscribe(http, receiver, ["qc.decision.recorded"])
    receiver.mode = "stick"
    decide(http, "RAW-BEEF-001", {"decision": "hold", "reason": "kill test"})
    assert receiver.stuck.wait(30), receiver.summary()
    [first] = receiver.got
    proc = system.procs["events-webhooks"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    decide(http, "RAW-BEEF-001", RELEASE)  # written while no dispatcher runs
    restart_events(system, http)
    got = receiver.wait("both decisions acknowledged", lambda g: sum(r.acknowledged for r in g) >= 2)
    acked = [r.payload for r in got if r.acknowledged]
    assert [p["data"]["decision"]["decision"] for p in acked] == ["hold", "release"]
    assert acked[0]["id"] == first.payload["id"]  # the same event, sent again under its id
    assert first.headers["webhook-id"] == acked[0]["id"]
    log = deliveries(http, sub)
    assert [d["status"] for d in log] == ["delivered", "delivered"] and log[0]["attempts"] >= 2
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200


def test_the_reference_receiver_rejects_a_tampered_signature_and_an_old_timestamp(
    http: httpx.Client, receiver: Receiver
) -> None:
    sub = subscribe(http, receiver, ["qc.decision.recorded"])
    decide(http, "RAW-BEEF-001", {"decision": "hold", "reason": "signature test"})
    [got] = receiver.wait("the decision", lambda g: len(g) >= 1)
    hook = Webhook(receiver.secret)
    assert hook.verify(got.body, got.headers)["type"] == "qc.decision.recorded"
    tampered = got.body.replace(b"signature test", b"signature best")
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        hook.verify(tampered, got.headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        hook.verify(got.body, {**got.headers, "webhook-id": got.headers["webhook-id"] + "x"})
    old = signing.headers(receiver.secret, got.headers["webhook-id"], got.body, now=time.time() - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        hook.verify(got.body, old)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(got.body, got.headers)  # another subscription's key
    decide(http, "RAW-BEEF-001", RELEASE)
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200


def test_private_and_metadata_addresses_are_refused_without_the_setting() -> None:
    for address, why in (("127.0.0.1", "loopback"), ("10.0.0.7", "private"), ("192.168.1.9", "private"),
                         ("169.254.1.1", "link-local"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
                         ("169.254.169.254", "metadata"), ("100.64.0.1", "not a public")):  # fmt: skip
        found = targets.refusal(ipaddress.ip_address(address), allow_private=False)
        assert found is not None and why in found, (address, found)
    assert targets.refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert "metadata" in (targets.refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True) or "")
    assert targets.refusal(ipaddress.ip_address("8.8.8.8"), allow_private=False) is None


def test_the_target_is_checked_again_at_delivery(
    system: System, http: httpx.Client, receiver: Receiver
) -> None:
    """Allowed when subscribed, refused when delivered: the events service restarted without
    FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE sends nothing to loopback and logs why."""
    sub = subscribe(http, receiver, ["qc.decision.recorded"])
    proc = system.procs["events-webhooks"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    restart_events(system, http, env={"FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE": "0"})
    try:
        decide(http, "RAW-BEEF-001", {"decision": "hold", "reason": "ssrf test"})
        deadline = time.monotonic() + 30
        while not (log := deliveries(http, sub)) or log[0]["attempts"] < 2:
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
        assert "target refused" in log[0]["last_error"] and "loopback" in log[0]["last_error"], log
        assert log[0]["status"] == "pending" and log[0].get("last_status_code", 0) == 0
        assert receiver.got == []
    finally:
        system.procs["events-webhooks"].send_signal(signal.SIGTERM)
        system.procs["events-webhooks"].wait(30)
        restart_events(system, http)
    receiver.wait("the delivery, allowed again", lambda g: len(g) >= 1)
    decide(http, "RAW-BEEF-001", RELEASE)
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("ftp://127.0.0.1/hooks", "http"),
        ("http://user:pw@127.0.0.1/hooks", "credentials"),
        ("http://0.0.0.0:8080/", "not a host address"),
        ("https:///no-host", "no host"),
        # The tests run with FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY=1: no DNS, no address off this machine.
        ("https://erp.example.com/hooks", "names are not looked up"),
        ("http://10.1.2.3/hooks", "only loopback"),
    ],
)
def test_a_forbidden_target_is_refused_naming_the_field(http: httpx.Client, target: str, why: str) -> None:
    r = http.post("/api/webhooks/subscriptions", json={"target_url": target, "event_types": ["lot.blocked"]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["details"]["field"] == "target_url" and why in error["message"], error


def test_subscriptions_are_validated_paused_resumed_and_admin_only(
    system: System, http: httpx.Client, receiver: Receiver
) -> None:
    for body, field in (
        ({"target_url": receiver.url, "event_types": ["lot.exploded"]}, "event_types"),
        ({"target_url": receiver.url, "event_types": []}, "event_types"),
        ({"target_url": receiver.url, "event_types": ["lot.blocked"], "format": "xml"}, "format"),
        (
            {"target_url": receiver.url, "event_types": ["lot.blocked"], "stream_code": "bad code"},
            "stream_code",
        ),
    ):
        r = http.post("/api/webhooks/subscriptions", json=body)
        assert r.status_code == 400 and r.json()["error"]["details"]["field"] == field, r.text
    with httpx.Client(base_url=system.base, timeout=10, headers=bearer("quinn")) as quinn:
        assert quinn.get("/api/webhooks/subscriptions").status_code == 403
    sub = subscribe(http, receiver, ["qc.decision.recorded"], product="Beef trim 80/20")
    listed = http.get("/api/webhooks/subscriptions").json()["subscriptions"]
    assert [s for s in listed if s["id"] == str(sub) or s["id"] == sub]
    assert all("secret" not in s for s in listed)
    paused = http.post(f"/api/webhooks/subscriptions/{sub}/pause")
    assert paused.status_code == 200 and paused.json()["subscription"]["paused"] is True
    decide(http, "RAW-SPICE-001", {"decision": "hold", "reason": "filtered out: another product"})
    decide(http, "RAW-BEEF-001", {"decision": "hold", "reason": "while paused"})
    deadline = time.monotonic() + 30
    while len(deliveries(http, sub)) < 1:  # queued for the paused subscription, not sent
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert receiver.got == []
    assert http.post(f"/api/webhooks/subscriptions/{sub}/resume").json()["subscription"]["paused"] is False
    [got] = receiver.wait("the queued decision", lambda g: len(g) >= 1)
    assert got.payload["lot_code"] == "RAW-BEEF-001"  # the spice lot is another product
    [delivery] = deliveries(http, sub)
    redone = http.post(f"/api/webhooks/subscriptions/{sub}/deliveries/{delivery['id']}/redeliver")
    assert redone.status_code == 200, redone.text
    again = receiver.wait("the redelivery", lambda g: len(g) >= 2)
    assert again[1].payload["id"] == again[0].payload["id"]
    assert http.post(f"/api/webhooks/subscriptions/{sub}/deliveries/999999/redeliver").status_code == 404
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        actions = conn.execute(
            "SELECT action FROM audit_log WHERE entity IN ('event_subscription', 'event_delivery') "
            "AND entity_key IN (%s, %s) ORDER BY id",
            (str(sub), str(delivery["id"])),
        ).fetchall()
    assert [a for (a,) in actions][-4:] == ["create", "pause", "resume", "redeliver"]
    decide(http, "RAW-SPICE-001", RELEASE)
    decide(http, "RAW-BEEF-001", RELEASE)
    assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200
    assert http.get(f"/api/webhooks/subscriptions/{sub}").status_code == 404


def test_runs_shipments_and_refusals_as_native_events_and_as_epcis_documents(
    http: httpx.Client, receiver: Receiver
) -> None:
    from tests.test_production import lot
    from tests.test_production import run as record_run
    from tests.test_shipping import make_parties, ship, tag

    epcis = Receiver().start()
    try:
        types = ["run.recorded", "shipment.recorded", "shipment.refused", "drill.completed"]
        native_sub = subscribe(http, receiver, types)
        refused = http.post(
            "/api/webhooks/subscriptions",
            json={"target_url": epcis.url, "event_types": ["drill.completed"], "format": "epcis"},
        )
        assert refused.status_code == 400 and refused.json()["error"]["details"]["field"] == "event_types"
        epcis_sub = subscribe(http, epcis, ["run.recorded", "shipment.recorded"], format="epcis")
        t = tag()
        parties = make_parties(http)
        lot(http, f"RAW-W-{t}", "RAW", 100)
        decide(http, f"RAW-W-{t}", {"decision": "pass"})
        r = record_run(http, f"RUN-W-{t}", [(f"RAW-W-{t}", 60, "kg")], [(f"MIX-W-{t}", "MIX", 60)])
        assert r.status_code == 201, r.text
        decide(http, f"MIX-W-{t}", {"decision": "pass"})
        assert ship(http, parties, f"MIX-W-{t}", 10).status_code == 201
        decide(http, f"MIX-W-{t}", {"decision": "hold", "reason": "label misprint"})
        assert ship(http, parties, f"MIX-W-{t}", 5).status_code == 409
        r = http.post("/api/scenarios", json={"name": "webhook drill", "lot_code": f"RAW-W-{t}"})
        assert r.status_code == 201, r.text

        got = receiver.wait("four events", lambda g: len(g) >= 4)
        assert sorted(r.payload["type"] for r in got) == sorted(types)
        # In order per lot (the run is keyed by its output lot); lots between them in any order.
        assert per_lot([r.payload for r in got])[f"MIX-W-{t}"] == types[:3]
        run_event, shipped, refusal, drill = (
            next(r.payload for r in got if r.payload["type"] == k) for k in types
        )
        assert run_event["data"]["outputs"][0]["lot_code"] == f"MIX-W-{t}"
        assert shipped["data"]["quantity"] == 10 and shipped["data"]["customer_code"] == parties.customer
        assert (
            refusal["data"]["refusal"]["reason"] == "LOT_BLOCKED" and refusal["data"]["shipment_id"] is None
        )
        assert drill["data"]["name"] == "webhook drill" and drill["data"]["affected_lots"] == 2

        docs = epcis.wait("two EPCIS documents", lambda g: len(g) >= 2)
        assert all(d.headers["content-type"] == "application/ld+json" for d in docs)
        transformation, shipping = (d.payload["epcisBody"]["eventList"][0] for d in docs)  # one lot: in order
        assert docs[0].payload["@context"][0].startswith("https://ref.gs1.org/standards/epcis/")
        assert transformation["eventID"] == f"urn:uuid:{docs[0].headers['webhook-id']}"
        # The run as the trace export renders it.
        export = http.get(f"/api/traceability/MIX-W-{t}/export.jsonld").json()
        [exported] = [
            e for e in export["epcisBody"]["eventList"] if e.get("transformationID", "").endswith(t)
        ]
        for key in ("type", "inputQuantityList", "outputQuantityList", "transformationID", "bizTransactionList",
                    "bizLocation", "bizStep"):  # fmt: skip
            assert transformation[key] == exported[key], key
        assert shipping["bizStep"] == "shipping" and shipping["quantityList"][0]["quantity"] == 10
        assert shipping["bizTransactionList"][0]["type"] == "desadv"
        decide(http, f"MIX-W-{t}", RELEASE)
        for sub in (native_sub, epcis_sub):
            assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200
    finally:
        epcis.stop()


def _delivered(http: httpx.Client, sub: int, event_id: str) -> None:
    deadline = time.monotonic() + 60
    while not [d for d in deliveries(http, sub) if d["event_id"] == event_id and d["status"] == "delivered"]:
        assert time.monotonic() < deadline, deliveries(http, sub)
        time.sleep(0.1)


def _prune(servers: Servers) -> retention.Pruned:
    """One retention pass (30 days), as the events service's role."""

    async def once() -> retention.Pruned:
        pool = await asyncpg.create_pool(
            servers.pg.service_url("events", _database()), min_size=1, max_size=1
        )
        try:
            return await retention.prune(pool, 30)
        finally:
            await pool.close()

    return asyncio.run(once())


def test_retention_prunes_a_delivered_event_with_its_log_never_an_undelivered_one(
    servers: Servers, http: httpx.Client, receiver: Receiver
) -> None:
    """The dispatcher's own rows: one event, delivered to one subscriber and pending at a paused
    one; their delivery times set 40 days back; a retention pass (30 days) as the events role."""
    other = Receiver().start()
    db = psycopg.connect(servers.url(_database()), autocommit=True)
    try:
        a = subscribe(http, receiver, ["qc.decision.recorded"])
        b = subscribe(http, other, ["qc.decision.recorded"])
        assert http.post(f"/api/webhooks/subscriptions/{b}/pause").status_code == 200
        decide(http, "RAW-BEEF-001", {"decision": "hold", "reason": "retention test"})
        [got] = receiver.wait("the decision", lambda g: len(g) >= 1)
        event_id = got.payload["id"]
        _delivered(http, a, event_id)
        deadline = time.monotonic() + 60
        while not db.execute(  # genealogy has read the decision (it derives lot.blocked from it)
            "SELECT (o.tx, o.id) <= (g.tx, g.id) FROM event_outbox o, genealogy_event_cursor g "
            "WHERE o.event_id = %s",
            (event_id,),
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.1)

        def age(sub: int) -> None:
            db.execute(
                "UPDATE event_deliveries SET delivered_at = delivered_at - interval '40 days', "
                "last_attempt_at = last_attempt_at - interval '40 days' WHERE subscription_id = %s",
                (sub,),
            )

        def left() -> tuple[int, int]:
            row = db.execute(
                "SELECT (SELECT count(*) FROM event_outbox WHERE event_id = %s), "
                "(SELECT count(*) FROM event_deliveries d JOIN event_outbox o ON o.id = d.outbox_id "
                "WHERE o.event_id = %s)",
                (event_id, event_id),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        age(a)
        _prune(servers)
        assert left() == (1, 2)  # pending at the paused subscriber: the event and its whole log stay
        assert http.post(f"/api/webhooks/subscriptions/{b}/resume").status_code == 200
        other.wait("the decision, once resumed", lambda g: len(g) >= 1)
        _delivered(http, b, event_id)
        assert left() == (1, 2)
        _prune(servers)
        assert left() == (1, 2)  # delivered to both, but just now at b
        age(b)
        done = _prune(servers)
        assert left() == (0, 0) and (done.events, done.deliveries) == (1, 2)
        assert deliveries(http, a) == [] and deliveries(http, b) == []
        for sub in (a, b):
            assert http.delete(f"/api/webhooks/subscriptions/{sub}").status_code == 200
        decide(http, "RAW-BEEF-001", RELEASE)
    finally:
        db.close()
        other.release.set()
        other.stop()
