"""Server bootstrap shared by every gRPC service.

One call, `serve()`, gives a service: grpc.health.v1 (NOT_SERVING until its pool and cache
are up, NOT_SERVING again on SIGTERM while in-flight calls drain), server reflection, the
error interceptor, a request id in every log line, and its own asyncpg pool and cache.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from flowviz.core import auth, db, heavy, logs, metrics, tracing
from flowviz.core.cache import Cache, signing_key
from flowviz.core.channels import SERVER_KEEPALIVE_OPTIONS, open_channel
from flowviz.core.config import HEALTH_SERVICE_NAMES, ConfigError, Settings, settings
from flowviz.core.db import create_pool
from flowviz.core.errors import DomainError, InvalidArgument, Unavailable, to_status
from flowviz.core.revocation import Revocations

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Open to probes and tools whatever the service's state.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
# Codes from a call to another service that the caller should see as they are.
_PASSED_ON = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
# Raised by context.abort(): it must pass through untouched.
_ABORT = grpc.aio.AbortError


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


def database_error(exc: BaseException) -> DomainError | None:
    """A value PostgreSQL refused, as the 400 it is (None: not a refusal of a value)."""
    if isinstance(exc, asyncpg.CheckViolationError):
        # Column checks are named <table>_<column>_check (PostgreSQL's naming, migration 0009).
        name, prefix, suffix = exc.constraint_name or "", f"{exc.table_name}_", "_check"
        column = name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix)
        field = name[len(prefix) : -len(suffix)] if column else name
        return InvalidArgument("FIELD_INVALID", f"{field} is not valid (database rule {name})", field=field)
    if isinstance(exc, asyncpg.DataError):  # SQLSTATE 22: a value PostgreSQL cannot take (a NUL byte, ...)
        return InvalidArgument("VALUE_INVALID", "a value is not valid here")
    return None


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request ids in; the caller authenticated and authorized by the service's policy (every
    method not listed as public needs a token whose role the policy allows: fail closed);
    domain errors out as statuses with ErrorInfo; calls refused until the service is ready."""

    def __init__(self, resources: Resources, policy: auth.Policy, public: frozenset[str]) -> None:
        self.resources = resources
        self.policy = policy
        self.public = public
        self.verifier = auth.TokenVerifier(
            resources.settings.token_secret, max_lifetime=resources.settings.token_ttl
        )

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: Any,
    ) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = details.invocation_metadata or ()
        rid = next((v for k, v in metadata if k == "x-request-id"), None)
        resources = self.resources
        public = method in self.public
        token = None if public else auth.bearer(metadata)
        is_heavy = method in heavy.HEAVY_METHODS and resources.settings.heavy_calls > 0

        async def guard(context: grpc.aio.ServicerContext[Any, Any]) -> heavy.Lease | None:
            """Checks before the call; the heavy-call lease it took (release it after), if any."""
            logs.request_id.set(logs.accept_request_id(rid))
            left = context.time_remaining()
            # Every query of this call: statement_timeout below this deadline (db.py).
            db.call_deadline.set(None if left is None else time.monotonic() + left)
            if not resources.ready:
                raise Unavailable(
                    "NOT_READY", f"{resources.name} is starting or draining", retry_after_seconds=1
                )
            if not public:
                identity = self.verifier.verify(token) if token else None
                if identity is not None and not identity.is_service:
                    # Authentication, before authorization: a revoked token is a 401, not a 403.
                    current = await resources.revocations.generation(identity.subject)
                    if identity.generation < current:
                        raise auth.Unauthenticated(
                            "TOKEN_REVOKED",
                            "the access token was revoked (disabled, role or password changed); sign in again",
                        )
                auth.current_identity.set(auth.check(self.policy, method, identity))
                if is_heavy and identity is not None and not identity.is_service:
                    # The lease outlives the call's deadline by a little, then expires by itself.
                    ttl = (left if left is not None else 600.0) + 5.0
                    return await resources.heavy_calls.acquire(identity.subject, ttl)
            return None

        def release(lease: heavy.Lease | None) -> None:
            if lease is not None:
                resources.heavy_calls.release(lease)

        async def fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
            if isinstance(exc, _ABORT):
                raise exc
            if isinstance(exc, DomainError):
                status = to_status(exc)
                await context.abort(status.code, status.details, status.trailing_metadata)
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PASSED_ON:
                # Another service's answer (unavailable, too slow, ...) stays what it was.
                # With its ErrorInfo (reason, retry_after_seconds): abort() takes a tuple, not Metadata.
                trailing: Any = tuple(exc.trailing_metadata() or ())
                await context.abort(exc.code(), exc.details() or exc.code().name, trailing)
            if (refused := database_error(exc)) is not None:
                status = to_status(refused)
                await context.abort(status.code, status.details, status.trailing_metadata)
            if db.is_outage(exc):  # the server went away mid-call: its transaction is rolled back
                status = to_status(db.unavailable())
                await context.abort(status.code, status.details, status.trailing_metadata)
            if isinstance(exc, asyncpg.QueryCanceledError):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the query was cancelled")
            if isinstance(exc, asyncio.CancelledError):
                raise exc
            log.exception("unhandled error", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        if handler.unary_unary:
            behavior: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                lease = None
                try:
                    lease = await guard(context)
                    return await behavior(request, context)
                except BaseException as exc:
                    await fail(context, exc)
                finally:
                    release(lease)

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            stream_behavior: Any = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                lease = None
                try:
                    lease = await guard(context)
                    async for item in stream_behavior(request, context):
                        yield item
                except BaseException as exc:
                    await fail(context, exc)
                finally:
                    release(lease)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            upload_behavior: Any = handler.stream_unary

            async def upload(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                lease = None
                try:
                    lease = await guard(context)
                    return await upload_behavior(requests, context)
                except BaseException as exc:
                    await fail(context, exc)
                finally:
                    release(lease)

            return grpc.stream_unary_rpc_method_handler(
                upload, handler.request_deserializer, handler.response_serializer
            )
        # No bidirectional streams here: refuse rather than serve one unguarded.
        raise RuntimeError(f"{method}: stream-stream methods are not supported")


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
    tracing.setup(name)  # no-op unless OTEL_EXPORTER_OTLP_ENDPOINT is set; before any server/channel
    resources = Resources(settings=cfg, name=name)
    server = grpc.aio.server(
        interceptors=[metrics.RpcMetrics(), ErrorInterceptor(resources, policy, public)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            *SERVER_KEEPALIVE_OPTIONS,
        ],
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    resources.service_token = auth.ServiceTokenSource(name, cfg.token_secret).token
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
        cfg.valkey_url, key=signing_key(cfg.token_secret), timeout=cfg.cache_timeout, ttl=cfg.cache_ttl
    )
    resources.revocations = Revocations(resources.cache.client, cfg.database_url, timeout=cfg.cache_timeout)
    resources.heavy_calls = heavy.HeavyCalls(
        lambda: resources.cache.client, cfg.database_url, limit=cfg.heavy_calls, timeout=cfg.cache_timeout
    )
    while not await resources.cache.ping():
        if stop.is_set():
            break
        log.warning("cache not ready, retrying")
        await asyncio.sleep(0.5)
    for start in resources.on_start:
        await start()
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
