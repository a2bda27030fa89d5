"""The gateway's gRPC side: one channel per upstream, created once inside the running loop,
and a watcher that keeps the latest system-health snapshot in memory."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc
import orjson

from flowviz.core.channels import open_channel
from flowviz.core.config import Settings
from flowviz.events.v1 import events_pb2_grpc
from flowviz.genealogy.v1 import genealogy_pb2_grpc
from flowviz.health.v1 import health_pb2, health_pb2_grpc
from flowviz.lots.v1 import lots_pb2_grpc
from flowviz.qc.v1 import qc_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class HealthView:
    """/api/health's answer, serialized once per snapshot rather than once per request."""

    body: bytes = b'{"status":"starting"}'
    healthy: bool = False
    received_at: float = 0.0


def render_health(snapshot: health_pb2.GetSystemHealthResponse | None, problem: str = "") -> HealthView:
    components: dict[str, dict[str, object]] = {
        "gateway": {"healthy": True},
        "health": {"healthy": not problem, **({"detail": problem} if problem else {})},
    }
    healthy = not problem
    if snapshot is not None and not problem:
        for c in snapshot.components:
            components[c.name] = {"healthy": c.healthy, "latency_ms": round(c.latency_ms, 3)}
            if c.detail:
                components[c.name]["detail"] = c.detail
        healthy = snapshot.healthy
    failing = sorted(name for name, c in components.items() if not c["healthy"])
    body: dict[str, object] = {"status": "ok" if healthy else "unavailable", "components": components}
    if failing:
        body["failing"] = failing
    if snapshot is not None and not problem:
        body["checked_at"] = snapshot.checked_at.ToJsonString()
    return HealthView(orjson.dumps(body), healthy, time.monotonic())


@dataclass
class Upstreams:
    settings: Settings
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    health_view: HealthView = field(default_factory=HealthView)
    _watch_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        addrs = self.settings.addrs
        self.lots = lots_pb2_grpc.LotsServiceStub(self._open(addrs["lots"]))
        self.genealogy = genealogy_pb2_grpc.GenealogyServiceStub(self._open(addrs["genealogy"]))
        self.qc = qc_pb2_grpc.QcServiceStub(self._open(addrs["qc"]))
        self.health = health_pb2_grpc.SystemHealthServiceStub(self._open(addrs["health"]))
        self.events = events_pb2_grpc.EventsServiceStub(self._open(addrs["events"]))
        self._watch_task = asyncio.create_task(self._watch_health())

    def _open(self, target: str) -> grpc.aio.Channel:
        channel = open_channel(target)
        self.channels.append(channel)
        return channel

    def current_health(self) -> HealthView:
        view = self.health_view
        stale_after = max(3.0, 3 * self.settings.health_interval)
        if view.healthy and time.monotonic() - view.received_at > stale_after:
            return render_health(None, f"no health snapshot for {stale_after:.0f}s")
        return view

    async def _watch_health(self) -> None:
        """Follow the health service's snapshot stream; reconnect when it breaks."""
        while True:
            try:
                call = self.health.WatchSystemHealth(health_pb2.WatchSystemHealthRequest())
                async for snapshot in call:
                    self.health_view = render_health(snapshot)
                problem = "health stream ended"
            except grpc.aio.AioRpcError as exc:
                problem = f"health service unreachable: {exc.code().name}"
            self.health_view = render_health(None, problem)
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._watch_task:
            self._watch_task.cancel()
        for channel in self.channels:
            await channel.close(None)
