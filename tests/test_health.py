"""Health transitions: NOT_SERVING on drain while in-flight calls finish; 503 naming what is down."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from flowviz.tools.embedded import free_port
from tests.conftest import Servers, System, grpc_channel, system_env

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.fixture
def lone_lots(servers: Servers, seeded_db_url: str) -> Iterator[System]:
    """A lots service of its own, so the test can stop it."""
    sys_ = System(system_env(servers, seeded_db_url), servers.tmp / "logs")
    sys_.env["FLOWVIZ_DRAIN_SECONDS"] = "10"
    sys_.start("lots-drain", "services.lots")
    yield sys_
    sys_.stop()


def test_drain_flips_to_not_serving_and_lets_in_flight_calls_finish(
    lone_lots: System, seeded_db_url: str
) -> None:
    channel = grpc_channel(lone_lots.addr("lots"), "omar")
    health = health_pb2_grpc.HealthStub(channel)
    statuses = health.Watch(
        health_pb2.HealthCheckRequest(service="flowviz.lots.v1.LotsService"), timeout=60, wait_for_ready=True
    )
    seen = [next(statuses).status]
    if seen[-1] != SERVING:  # starts NOT_SERVING until its pool and cache are up
        seen.append(next(statuses).status)
    assert seen[-1] == SERVING

    # Hold a conflicting uncommitted insert so CreateLot blocks inside the service: an in-flight call.
    blocker = psycopg.connect(seeded_db_url)
    blocker.execute(
        "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('DRAIN-1', 'RAW', 'x', 1, 'kg')"
    )
    result: dict[str, object] = {}

    def call() -> None:
        stub = lots_pb2_grpc.LotsServiceStub(channel)
        request = lots_pb2.CreateLotRequest(lot_code="DRAIN-1", kind="RAW", product="x", quantity=1, uom="kg")
        try:
            result["lot"] = stub.CreateLot(request, timeout=30).lot.lot_code
        except grpc.RpcError as exc:
            result["error"] = exc.code()  # type: ignore[attr-defined]

    caller = threading.Thread(target=call)
    caller.start()
    with psycopg.connect(seeded_db_url, autocommit=True) as watcher:
        _wait_for(
            lambda: (
                watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'flowviz-lots' AND wait_event_type = 'Lock'"
                ).fetchone()
                == (1,)
            )
        )

    lone_lots.procs["lots-drain"].send_signal(signal.SIGTERM)
    assert next(statuses).status == NOT_SERVING
    statuses.cancel()  # an open Watch is an in-flight call too; drop it so the drain ends with CreateLot
    assert caller.is_alive(), "the in-flight call must still be running while the service drains"
    blocker.rollback()  # let the in-flight insert through
    blocker.close()
    caller.join(20)
    assert result == {"lot": "DRAIN-1"}
    assert lone_lots.procs["lots-drain"].wait(20) == 0
    channel.close()


def test_api_health_is_503_naming_the_part_that_is_down(servers: Servers, system: System) -> None:
    """A health service and gateway whose qc upstream points at a port where nothing listens."""
    env = system_env(servers, servers.pg.url)
    for name in ("lots", "genealogy", "events"):
        env[f"FLOWVIZ_{name.upper()}_ADDR"] = system.addr(name)
    env["FLOWVIZ_QC_ADDR"] = f"127.0.0.1:{free_port()}"
    partial = System(env, servers.tmp / "logs")
    partial.start("health-partial", "services.health")
    partial.start("gateway-partial", "gateway")
    try:

        def answered() -> bool:
            try:
                return httpx.get(partial.base + "/api/health", timeout=1).json().get("failing") == ["qc"]
            except (httpx.HTTPError, ValueError):
                return False

        _wait_for(answered)
        r = httpx.get(partial.base + "/api/health", timeout=1)
        assert r.status_code == 503
        assert r.json()["components"]["qc"]["healthy"] is False
        assert r.json()["components"]["database"]["healthy"] is True

        # The health service itself gone: the gateway says so.
        partial.procs["health-partial"].send_signal(signal.SIGTERM)
        partial.procs["health-partial"].wait(20)
        _wait_for(
            lambda: "health" in httpx.get(partial.base + "/api/health", timeout=1).json().get("failing", [])
        )
        assert httpx.get(partial.base + "/api/health", timeout=1).status_code == 503
    finally:
        partial.stop()
