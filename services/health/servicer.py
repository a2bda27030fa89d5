"""flowviz.health.v1.SystemHealthService: the whole system's readiness.

A probe loop checks the database, the cache and each service's grpc.health.v1 once per
FLOWVIZ_HEALTH_INTERVAL; callers read the last snapshot, so /api/health never waits on a
database round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import valkey.asyncio as valkey
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flowviz.core.config import HEALTH_SERVICE_NAMES
from flowviz.core.server import Resources
from flowviz.health.v1 import health_pb2 as system_pb2
from flowviz.health.v1 import health_pb2_grpc as system_pb2_grpc

log = logging.getLogger(__name__)
Context = grpc.aio.ServicerContext[Any, Any]
CHECKED_SERVICES = ("lots", "genealogy", "qc", "events")


async def _timed(name: str, check: Callable[[], Awaitable[str]], limit: float) -> system_pb2.Component:
    start = time.perf_counter()
    try:
        detail = await asyncio.wait_for(check(), limit)
    except TimeoutError:
        detail = f"no answer within {limit:.1f}s"
    except grpc.aio.AioRpcError as exc:
        detail = f"{exc.code().name}: {exc.details()}"
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
    return system_pb2.Component(
        name=name, healthy=not detail, detail=detail, latency_ms=(time.perf_counter() - start) * 1000
    )


class SystemHealthServicer(system_pb2_grpc.SystemHealthServiceServicer):
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self.snapshot = system_pb2.GetSystemHealthResponse(
            healthy=False, components=[system_pb2.Component(name="health", detail="starting")]
        )
        self._changed = asyncio.Condition()
        self._stubs: dict[str, health_pb2_grpc.HealthStub] = {}

    async def start(self) -> None:
        resources = self.r
        # Its own client: the shared one gives up after the short read-path timeout, which a busy
        # machine can exceed without Valkey being down.
        limit = max(0.5, resources.settings.health_interval)
        self._cache_client = valkey.from_url(  # type: ignore[no-untyped-call]
            resources.settings.valkey_url, socket_timeout=limit, socket_connect_timeout=limit
        )
        resources.on_close.append(self._cache_client.aclose)
        for name in CHECKED_SERVICES:
            self._stubs[name] = health_pb2_grpc.HealthStub(resources.channel(name))
        await self.probe_once()
        task = asyncio.create_task(self._loop())

        async def stop() -> None:
            task.cancel()

        resources.on_close.insert(0, stop)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.r.settings.health_interval)
            try:
                await self.probe_once()
            except Exception:
                log.exception("health probe failed")

    async def _database(self) -> str:
        await self.r.pool.fetchval("SELECT 1")
        return ""

    async def _cache(self) -> str:
        return "" if await self._cache_client.ping() else "PING failed"

    def _service(self, name: str) -> Callable[[], Awaitable[str]]:
        async def check() -> str:
            request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE_NAMES[name])
            reply = await self._stubs[name].Check(request, timeout=self.r.settings.rpc_timeout)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
            return "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        return check

    async def probe_once(self) -> None:
        timeout = max(0.5, self.r.settings.health_interval)
        checks: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("database", self._database),
            ("cache", self._cache),
        ]
        checks += [(name, self._service(name)) for name in CHECKED_SERVICES]
        components = await asyncio.gather(*(_timed(name, fn, timeout) for name, fn in checks))
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        snapshot = system_pb2.GetSystemHealthResponse(
            healthy=all(c.healthy for c in components), components=components, checked_at=now
        )
        if snapshot.healthy != self.snapshot.healthy:
            log.info(
                "system health changed",
                extra={"healthy": snapshot.healthy, "failing": [c.name for c in components if not c.healthy]},
            )
        self.snapshot = snapshot
        async with self._changed:
            self._changed.notify_all()

    async def GetSystemHealth(
        self, request: system_pb2.GetSystemHealthRequest, context: Context
    ) -> system_pb2.GetSystemHealthResponse:
        return self.snapshot

    async def WatchSystemHealth(
        self, request: system_pb2.WatchSystemHealthRequest, context: Context
    ) -> AsyncIterator[system_pb2.GetSystemHealthResponse]:
        while True:
            yield self.snapshot
            async with self._changed:
                await self._changed.wait()


P = "/flowviz.health.v1.SystemHealthService/"
# System health is open, like grpc.health.v1: probes and the gateway read it without a token.
PUBLIC = frozenset({P + "GetSystemHealth", P + "WatchSystemHealth"})


def register(server: grpc.aio.Server, resources: Resources) -> list[str]:
    servicer = SystemHealthServicer(resources)
    resources.on_start.append(servicer.start)
    system_pb2_grpc.add_SystemHealthServiceServicer_to_server(servicer, server)
    return [system_pb2.DESCRIPTOR.services_by_name["SystemHealthService"].full_name]
