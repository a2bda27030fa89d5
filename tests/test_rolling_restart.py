"""Rolling restart with zero failed requests (issue 15, item 1): two replicas of each service
behind the gateway's round-robin channels; under a steady load of reads and writes, one replica
of each service in turn gets SIGTERM (it reports NOT_SERVING, drains, exits) and is started
again. No request fails, and every acknowledged write is there exactly once. The client never
retries: only the channel's transparent retries (calls that never reached a server) may."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowviz.tools.embedded import free_port
from flowviz.tools.supervisor import SERVICES  # every gRPC service, events included
from tests.conftest import Servers, System, bearer, system_env


@pytest.fixture
def replicated(servers: Servers, seeded_db_url: str) -> Iterator[System]:
    env = system_env(servers, seeded_db_url)
    sys_ = System(env, servers.tmp / "logs")
    ports: dict[str, list[int]] = {name: [free_port(), free_port()] for name in SERVICES}
    for name, pair in ports.items():
        env[f"FLOWVIZ_{name.upper()}_ADDR"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in pair)
    sys_.env["replica_ports"] = json.dumps(ports)
    for name, pair in ports.items():
        for i, port in enumerate(pair):
            sys_.start(f"{name}-r{i}", f"services.{name}", _replica_env(name, port))
    sys_.start("gateway-r", "gateway")
    try:
        sys_.wait_healthy()
        yield sys_
    finally:
        sys_.stop()


def _replica_env(name: str, port: int) -> dict[str, str]:
    return {f"FLOWVIZ_{name.upper()}_PORT": str(port), f"FLOWVIZ_{name.upper()}_METRICS_PORT": "0"}


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Load:
    """Reads of three services and lot writes, one after another in each of a few threads."""

    def __init__(self, base: str, tag: str) -> None:
        self.base, self.tag = base, tag
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.requests = 0
        self.acknowledged: list[str] = []
        self.lock = threading.Lock()

    def worker(self, n: int) -> None:
        with httpx.Client(base_url=self.base, headers=bearer("omar"), timeout=30) as c:
            i = 0
            while not self.stop.is_set():
                i += 1
                code = f"RR-{self.tag}-{n}-{i}"
                calls = [
                    ("POST", "/api/lots", {"lot_code": code, "kind": "RAW", "product": "beef", "quantity": 1, "uom": "kg"}),
                    ("GET", f"/api/lots/{code}", None),
                    ("GET", f"/api/traceability/{code}", None),
                    ("GET", f"/api/lots/{code}/qc-status", None),
                ]  # fmt: skip
                for method, url, body in calls:
                    try:
                        r = c.request(method, url, json=body)
                        ok = r.status_code in (200, 201)
                        why = f"{method} {url}: {r.status_code} {r.text[:200]}"
                    except httpx.HTTPError as exc:
                        ok, why = False, f"{method} {url}: {exc!r}"
                    with self.lock:
                        self.requests += 1
                        if not ok:
                            self.failures.append(why)
                        elif method == "POST":
                            self.acknowledged.append(code)
                    if not ok and method == "POST":
                        break  # the lot may not exist: its reads would fail for that reason


def test_sigterm_of_one_replica_of_each_service_in_turn_fails_no_request(replicated: System) -> None:
    ports: dict[str, list[int]] = json.loads(replicated.env["replica_ports"])
    tag = uuid.uuid4().hex[:6].upper()
    load = Load(replicated.base, tag)
    threads = [threading.Thread(target=load.worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for name in SERVICES:
            proc = replicated.procs[f"{name}-r0"]
            before = load.requests
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, replicated.log(f"{name}-r0")
            replicated.start(f"{name}-r0", f"services.{name}", _replica_env(name, ports[name][0]))
            deadline = time.monotonic() + 60
            while not _serving(ports[name][0]):
                assert time.monotonic() < deadline, f"{name}-r0 not serving again"
                time.sleep(0.05)
            # Requests went on while it was gone (the load is not stuck).
            _wait(lambda before=before: load.requests > before + 20)  # type: ignore[misc]
    finally:
        load.stop.set()
        for t in threads:
            t.join(60)
    assert load.failures == [], load.failures[:10]
    assert load.requests > 100
    with psycopg.connect(replicated.env["DATABASE_URL"]) as db:
        rows = db.execute(
            "SELECT lot_code, count(*) FROM lots WHERE lot_code LIKE %s GROUP BY lot_code", (f"RR-{tag}-%",)
        ).fetchall()
    found = dict(rows)
    assert sorted(found) == sorted(load.acknowledged)  # none lost, none unacknowledged
    assert set(found.values()) == {1}  # none twice
    for name in SERVICES:
        assert "draining" in replicated.log(f"{name}-r0")


def _wait(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
