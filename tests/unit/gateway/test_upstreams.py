"""gateway/upstreams.py: the health view the gateway serves, rendered from snapshots, and the
watcher that follows the health stream (against an in-process gRPC server: no processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import grpc
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flowviz.core.config import UPSTREAMS, Settings
from flowviz.health.v1 import health_pb2, health_pb2_grpc
from gateway.upstreams import HealthView, Upstreams, render_health


def _snapshot(healthy: bool = True, **latencies: float) -> health_pb2.GetSystemHealthResponse:
    snapshot = health_pb2.GetSystemHealthResponse(healthy=healthy)
    snapshot.checked_at.FromJsonString("2026-01-16T08:00:00Z")
    for name, ms in latencies.items():
        snapshot.components.add(
            name=name, healthy=ms >= 0, latency_ms=max(ms, 0), detail="" if ms >= 0 else "down"
        )
    return snapshot


def test_before_any_snapshot_it_is_starting() -> None:
    assert HealthView().body == b'{"status":"starting"}' and not HealthView().healthy


def test_render_a_healthy_snapshot() -> None:
    view = render_health(_snapshot(database=1.23456, lots=0.5))
    assert view.healthy
    assert orjson.loads(view.body) == {
        "status": "ok",
        "components": {
            "gateway": {"healthy": True},
            "health": {"healthy": True},
            "database": {"healthy": True, "latency_ms": 1.235},
            "lots": {"healthy": True, "latency_ms": 0.5},
        },
        "checked_at": "2026-01-16T08:00:00Z",
    }


def test_render_an_unhealthy_snapshot_names_what_fails() -> None:
    view = render_health(_snapshot(False, database=-1, qc=2.0, cache=-1))
    body = orjson.loads(view.body)
    assert not view.healthy
    assert body["status"] == "unavailable"
    assert body["failing"] == ["cache", "database"]
    assert body["components"]["database"] == {"healthy": False, "latency_ms": 0, "detail": "down"}


def test_render_a_problem_with_the_health_service() -> None:
    view = render_health(_snapshot(database=1.0), "health stream ended")
    assert orjson.loads(view.body) == {
        "status": "unavailable",
        "components": {
            "gateway": {"healthy": True},
            "health": {"healthy": False, "detail": "health stream ended"},
        },
        "failing": ["health"],
    }


class _Health(health_pb2_grpc.SystemHealthServiceServicer):
    """Streams what the test puts in `queue`; None ends the stream."""

    async def GetSystemHealth(
        self, request: health_pb2.GetSystemHealthRequest, context: Any
    ) -> health_pb2.GetSystemHealthResponse:
        raise NotImplementedError  # the gateway only watches

    def __init__(self) -> None:
        self.queue: asyncio.Queue[health_pb2.GetSystemHealthResponse | None] = asyncio.Queue()
        self.calls = 0

    async def WatchSystemHealth(
        self, request: health_pb2.WatchSystemHealthRequest, context: Any
    ) -> AsyncIterator[health_pb2.GetSystemHealthResponse]:
        self.calls += 1
        _CHANGED.set()
        while (snapshot := await self.queue.get()) is not None:
            yield snapshot


def _settings(health: str, interval: float = 1.0) -> Settings:
    unused = "127.0.0.1:9"  # channels are lazy: these are never dialled here
    return Settings(
        database_url="",
        valkey_url="",
        bind_host="127.0.0.1",
        ports={},
        metrics_ports={},
        addrs={"lots": unused, "genealogy": unused, "qc": unused, "health": health, "events": unused},
        pool_min=1,
        pool_max=1,
        drain_seconds=0,
        rpc_timeout=5,
        cache_timeout=0.2,
        cache_ttl=60,
        health_interval=interval,
        cors_origins=(),
        log_format="text",
        token_public_key=Ed25519PrivateKey.generate().public_key(),
        token_private_key=None,
        service_key=None,
        service_public_keys={},
        cache_secret=None,
        token_ttl=900,
    )


# Set whenever the watcher changes its view or the server takes a call.
_CHANGED = asyncio.Event()


class _Watched(Upstreams):
    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "health_view":
            _CHANGED.set()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for `condition` (a state the watcher reaches), failing after 10 s."""
    async with asyncio.timeout(10):
        while not condition():
            _CHANGED.clear()
            await _CHANGED.wait()


def _status(up: Upstreams) -> tuple[str, Any]:
    body = orjson.loads(up.current_health().body)
    return body["status"], body["components"]["health"].get("detail")


async def test_the_watcher_follows_the_stream_and_reconnects() -> None:
    server = grpc.aio.server()
    servicer = _Health()
    health_pb2_grpc.add_SystemHealthServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    up = _Watched(_settings(f"127.0.0.1:{port}"))
    try:
        assert len(up.channels) == len(UPSTREAMS)  # one channel per upstream service
        await servicer.queue.put(_snapshot(database=1.0))
        await _until(lambda: up.health_view.healthy)
        assert _status(up) == ("ok", None)

        await servicer.queue.put(_snapshot(False, database=-1))
        await _until(lambda: not up.health_view.healthy)
        assert orjson.loads(up.current_health().body)["failing"] == ["database"]

        # The stream ends: unhealthy at once, then the watcher calls again.
        await servicer.queue.put(None)
        await _until(lambda: servicer.calls == 2)
        await servicer.queue.put(_snapshot(database=1.0))
        await _until(lambda: up.health_view.healthy)

        # A healthy snapshot too old is not believed (3 intervals, at least 3 s).
        up.health_view = replace(up.health_view, received_at=time.monotonic() - 3.5)
        assert _status(up) == ("unavailable", "no health snapshot for 3s")
        up.health_view = replace(up.health_view, received_at=time.monotonic())
        assert _status(up) == ("ok", None)

        # The health service goes away.
        await server.stop(None)
        await _until(lambda: "unreachable" in (_status(up)[1] or ""))
        assert _status(up) == ("unavailable", "health service unreachable: UNAVAILABLE")
    finally:
        await up.close()
        await server.stop(None)
