"""Server bootstrap shared by every gRPC service.

One call, `serve()`, gives a service: grpc.health.v1 (NOT_SERVING until its pool and cache
are up, NOT_SERVING again on SIGTERM while in-flight calls drain), server reflection, the
status and auth interceptors (core/interceptors.py), a request id in every log line, and its own asyncpg pool and cache.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from flowviz.core import audit, auth, heavy, keys, logs, metrics, tracing
from flowviz.core.cache import Cache, signing_key
from flowviz.core.channels import SERVER_KEEPALIVE_OPTIONS, open_channel
from flowviz.core.config import (
    CACHE_SECRET_ENV,
    DATABASE_ROLES,
    HEALTH_SERVICE_NAMES,
    ConfigError,
    Settings,
    settings,
)
from flowviz.core.db import create_pool
from flowviz.core.interceptors import interceptors
from flowviz.core.revocation import Revocations

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Resources:
    """What a servicer needs; filled in once the service is up."""

    settings: Settings
    name: str
    pool: asyncpg.Pool = field(init=False)
    cache: Cache = field(init=False)
    revocations: Revocations = field(init=False)
    heavy_calls: heavy.HeavyCalls = field(init=False)
    ready: bool = False
    # Run once the pool and cache are up, before the service reports SERVING.
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run at shutdown after the server stops (channels to other services, ...).
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Bearer token this service presents to the others (set once auth is configured).
    service_token: Callable[[], str] | None = None

    def channel(self, upstream: str) -> grpc.aio.Channel:
        """A channel to another service, closed at shutdown. Call it inside the running loop."""
        opened = open_channel(self.settings.addrs[upstream])
        self.on_close.append(lambda: opened.close(None))
        return opened

    def outgoing_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata for a call to another service: the request id, and our own identity."""
        metadata = [("x-request-id", logs.request_id.get())]
        if self.service_token is not None:
            metadata.append(("authorization", f"Bearer {self.service_token()}"))
        return tuple(metadata)


Register = Callable[[grpc.aio.Server, Resources], Sequence[str]]


def _service(full_name: str) -> Any:
    from google.protobuf import descriptor_pool

    return descriptor_pool.Default().FindServiceByName(full_name)


async def serve(
    name: str, register: Register, policy: auth.Policy, public: frozenset[str] = frozenset()
) -> None:
    """Run service `name` until SIGTERM/SIGINT. `register` adds servicers and returns their full
    names; `policy` maps each method to the roles allowed to call it, `public` needs no token."""
    cfg = settings()
    if not (cfg.database_url and cfg.valkey_url):
        raise ConfigError("DATABASE_URL and VALKEY_URL must be set (make run sets them for you)")
    logs.setup(name, cfg.log_format)
    if (user := urlsplit(cfg.database_url).username) != DATABASE_ROLES[name]:
        # Allowed (a developer's own database, a bench), but then the grants do not hold this
        # service to its own tables: say so once.
        log.warning(
            "not connected as this service's own role", extra={"user": user, "role": DATABASE_ROLES[name]}
        )
    tracing.setup(name)  # no-op unless OTEL_EXPORTER_OTLP_ENDPOINT is set; before any server/channel
    resources = Resources(settings=cfg, name=name)
    server = grpc.aio.server(
        interceptors=[metrics.RpcMetrics(), *interceptors(resources, policy, public)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            *SERVER_KEEPALIVE_OPTIONS,
        ],
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    own_key = keys.own_service_key(cfg.service_key, cfg.service_public_keys, name)
    if cfg.cache_secret is None:
        raise ConfigError(
            f"{CACHE_SECRET_ENV} must be set (the key of the cached values' HMAC; make run makes one)"
        )
    resources.service_token = auth.ServiceTokenSource(name, own_key).token
    service_names = list(register(server, resources))
    served = [f"/{s}/{m.name}" for s in service_names for m in _service(s).methods]
    auth.validate_policy(policy, [m for m in served if m not in public])
    if cfg.reflection:
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
    own_names = ["", HEALTH_SERVICE_NAMES[name], *service_names]
    for svc in own_names:
        await health.set(svc, NOT_SERVING)

    address = f"{cfg.bind_host}:{cfg.ports[name]}"
    server.add_insecure_port(address)
    await server.start()
    log.info("listening", extra={"address": address})
    await metrics.start(name, cfg, resources)  # /metrics on the metrics port, pool and cache gauges

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    resources.pool = await create_pool(
        cfg.database_url,
        name=name,
        min_size=cfg.pool_min,
        max_size=cfg.pool_max,
        statement_cache=cfg.statement_cache,
    )
    resources.cache = Cache(
        cfg.valkey_url, key=signing_key(cfg.cache_secret), timeout=cfg.cache_timeout, ttl=cfg.cache_ttl
    )
    resources.revocations = Revocations(resources.cache.client, cfg.database_url, timeout=cfg.cache_timeout)
    resources.heavy_calls = heavy.HeavyCalls(
        lambda: resources.cache.client,
        cfg.database_url,
        limit=cfg.heavy_calls,
        min_hold=cfg.heavy_min_ms / 1000,
        timeout=cfg.cache_timeout,
    )
    while not await resources.cache.ping():
        if stop.is_set():
            break
        log.warning("cache not ready, retrying")
        await asyncio.sleep(0.5)
    for start in resources.on_start:
        await start()
    if (stop_sealing := audit.start_sealing(name, resources.pool)) is not None:
        resources.on_close.append(stop_sealing)  # links audit rows into the chain (migration 0013)
    if not stop.is_set():
        resources.ready = True
        for svc in own_names:
            await health.set(svc, SERVING)
        log.info("serving", extra={"services": service_names})

    await stop.wait()
    # NOT_SERVING first, still serving: the clients' health watches take this replica out of
    # their pickers; only then stop accepting (GOAWAY) and drain what is in flight.
    log.info("draining", extra={"grace_seconds": cfg.drain_seconds, "delay_seconds": cfg.shutdown_delay})
    await health.enter_graceful_shutdown()
    await asyncio.sleep(cfg.shutdown_delay)
    await server.stop(cfg.drain_seconds)
    resources.ready = False
    for close in resources.on_close:
        await close()
    await resources.cache.close()
    await resources.pool.close()
    log.info("stopped")


def run(name: str, register: Register, policy: auth.Policy, public: frozenset[str] = frozenset()) -> None:
    """Entry point of a service process: uvloop, then serve until a signal."""
    import uvloop

    uvloop.run(serve(name, register, policy, public))
