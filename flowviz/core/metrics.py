"""Prometheus metrics of every flowviz process (prometheus-client, the default registry).

Each process serves them at `http://<FLOWVIZ_BIND_HOST>:<metrics port>/metrics`: the port
is `Settings.metrics_ports[name]` (`FLOWVIZ_<SVC>_METRICS_PORT`, 9150-9153, the gateway 9154),
or `FLOWVIZ_METRICS_PORT` for the current process when set; 0 turns the endpoint off. Never on
the gateway's public HTTP port.

Metric names (all prefixed `flowviz_`):

gRPC services (`RpcMetrics`, a server interceptor; `grpc_service` is the full service name,
`grpc_method` the method name, `grpc_code` the status name such as `OK` or `NOT_FOUND`;
grpc.health.v1 and reflection calls are not counted):
    flowviz_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}   counter
        RPCs completed, by status: request count = sum over grpc_code, errors = grpc_code != "OK".
    flowviz_grpc_server_handling_seconds{grpc_service, grpc_method}            histogram
        time from the call reaching the servicer to its last response.

Gateway (`gateway/observability.py`; `route` is the route's path template such as
`/api/traceability/{lot_code}`, `unmatched` for 404s, so cardinality stays bounded):
    flowviz_http_requests_total{method, route, status}                          counter
    flowviz_http_request_duration_seconds{method, route}                        histogram

Database pool (`track_resources`, read at scrape time; `pool` is the service name):
    flowviz_db_pool_size{pool}      open connections
    flowviz_db_pool_idle{pool}      open connections not lent out
    flowviz_db_pool_in_use{pool}    connections lent out (size - idle)
    flowviz_db_pool_max{pool}       the pool's maximum size
    flowviz_db_pool_waiting{pool}   acquires waiting for a free connection

Cache (the `Cache` object's own counters, read at scrape time):
    flowviz_cache_hits_total{cache}, flowviz_cache_misses_total{cache},
    flowviz_cache_errors_total{cache}  (timeouts and failures; reads then go to PostgreSQL)
    flowviz_cache_rejected_total{cache}  (values that failed their HMAC: read as misses)

Traces:
    flowviz_trace_nodes             histogram of the number of lots in a traceability answer;
                                    servicers call `TRACE_NODES.observe(n)`.

Plus prometheus-client's process_* and python_* collectors.

Cost on the request path: one `time.perf_counter()` pair, one counter increment and one
histogram observation per RPC or HTTP request, with label children looked up once per method
(or route) and status. Pool and cache figures cost nothing until scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from flowviz.core.config import Settings

log = logging.getLogger(__name__)

# No *_created series: they double the exposition and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_HANDLED = Counter(
    "flowviz_grpc_server_handled_total",
    "gRPC calls completed on the server, by status code.",
    ("grpc_service", "grpc_method", "grpc_code"),
)
GRPC_SECONDS = Histogram(
    "flowviz_grpc_server_handling_seconds",
    "Time to handle a gRPC call on the server, to its last response.",
    ("grpc_service", "grpc_method"),
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "flowviz_http_requests_total",
    "HTTP requests answered by the gateway, by route template and status.",
    ("method", "route", "status"),
)
HTTP_SECONDS = Histogram(
    "flowviz_http_request_duration_seconds",
    "Time to answer an HTTP request in the gateway, by route template.",
    ("method", "route"),
    buckets=LATENCY_BUCKETS,
)
TRACE_NODES = Histogram(
    "flowviz_trace_nodes",
    "Lots in one traceability answer (the lot, its parents and its children, or a whole trace).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000),
)


# --- gRPC server --------------------------------------------------------------------------


class _MethodMetrics:
    """The label children of one RPC method, looked up once."""

    __slots__ = ("codes", "method", "seconds", "service")

    def __init__(self, full_method: str) -> None:
        _, _, rest = full_method.partition("/")
        self.service, _, self.method = rest.partition("/")
        self.seconds = GRPC_SECONDS.labels(self.service, self.method)
        self.codes: dict[grpc.StatusCode | None, Any] = {}

    def done(self, code: grpc.StatusCode | None, elapsed: float) -> None:
        counter = self.codes.get(code)
        if counter is None:
            name = "OK" if code is None else code.name
            counter = self.codes[code] = GRPC_HANDLED.labels(self.service, self.method, name)
        counter.inc()
        self.seconds.observe(elapsed)


def _code(context: Any, exc: BaseException | None) -> grpc.StatusCode | None:
    try:
        code: grpc.StatusCode | None = context.code()
    except Exception:
        code = None
    if code is None and exc is not None:
        return (
            grpc.StatusCode.CANCELLED if isinstance(exc, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN
        )
    return code


class RpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every unary-unary, unary-stream and stream-unary call, by method and
    status code; grpc.health.v1 and reflection calls (probes, tools) are left out.

    Put it before the interceptor that turns exceptions into statuses, so it sees the final code.
    """

    def __init__(self) -> None:
        self._methods: dict[str, _MethodMetrics] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        # Health and reflection are not ours to count (and Watch writes rather than yields).
        if handler is None or method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        m = self._methods.get(method)
        if m is None:
            m = self._methods[method] = _MethodMetrics(method)
        if handler.unary_unary:
            behavior: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                start = time.perf_counter()
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    m.done(_code(context, exc), time.perf_counter() - start)
                    raise
                m.done(context.code(), time.perf_counter() - start)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream:
            stream_behavior: Any = handler.unary_stream
            if not inspect.isasyncgenfunction(stream_behavior):  # writes with context.write()

                async def written(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                    start = time.perf_counter()
                    try:
                        await stream_behavior(request, context)
                    except BaseException as exc:
                        m.done(_code(context, exc), time.perf_counter() - start)
                        raise
                    m.done(context.code(), time.perf_counter() - start)

                return grpc.unary_stream_rpc_method_handler(
                    written, handler.request_deserializer, handler.response_serializer
                )

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                start = time.perf_counter()
                try:
                    async for item in stream_behavior(request, context):
                        yield item
                except BaseException as exc:
                    m.done(_code(context, exc), time.perf_counter() - start)
                    raise
                m.done(context.code(), time.perf_counter() - start)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary:
            upload_behavior: Any = handler.stream_unary

            async def upload(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                start = time.perf_counter()
                try:
                    response = await upload_behavior(requests, context)
                except BaseException as exc:
                    m.done(_code(context, exc), time.perf_counter() - start)
                    raise
                m.done(context.code(), time.perf_counter() - start)
                return response

            return grpc.stream_unary_rpc_method_handler(
                upload, handler.request_deserializer, handler.response_serializer
            )
        return handler


# --- pool and cache, read at scrape time --------------------------------------------------


def _waiting(pool: Any) -> int | None:
    """Acquires blocked on the pool's queue (asyncpg keeps no public count: best effort)."""
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", None)
    return None if getters is None else len(getters)


class _ResourceCollector(Collector):
    """Pool gauges and cache counters of the resources each process registered."""

    def __init__(self) -> None:
        self.sources: dict[str, Any] = {}

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily("flowviz_db_pool_size", "Open connections in the pool.", labels=["pool"])
        idle = GaugeMetricFamily(
            "flowviz_db_pool_idle", "Open connections in the pool not lent out.", labels=["pool"]
        )
        in_use = GaugeMetricFamily(
            "flowviz_db_pool_in_use", "Connections lent out by the pool.", labels=["pool"]
        )
        maximum = GaugeMetricFamily("flowviz_db_pool_max", "Maximum size of the pool.", labels=["pool"])
        waiting = GaugeMetricFamily(
            "flowviz_db_pool_waiting", "Acquires waiting for a free connection.", labels=["pool"]
        )
        hits = CounterMetricFamily("flowviz_cache_hits", "Cache reads that found the key.", labels=["cache"])
        misses = CounterMetricFamily(
            "flowviz_cache_misses", "Cache reads that did not find the key.", labels=["cache"]
        )
        errors = CounterMetricFamily(
            "flowviz_cache_errors", "Cache operations that failed or timed out.", labels=["cache"]
        )
        rejected = CounterMetricFamily(
            "flowviz_cache_rejected",
            "Cached values that failed their HMAC (read as misses).",
            labels=["cache"],
        )
        for name, resources in list(self.sources.items()):
            pool = getattr(resources, "pool", None)
            if pool is not None:
                n, free = pool.get_size(), pool.get_idle_size()
                size.add_metric([name], n)
                idle.add_metric([name], free)
                in_use.add_metric([name], n - free)
                maximum.add_metric([name], pool.get_max_size())
                queued = _waiting(pool)
                if queued is not None:
                    waiting.add_metric([name], queued)
            cache = getattr(resources, "cache", None)
            if cache is not None:
                hits.add_metric([name], cache.hits)
                misses.add_metric([name], cache.misses)
                errors.add_metric([name], cache.errors)
                rejected.add_metric([name], cache.rejected)
        return [size, idle, in_use, maximum, waiting, hits, misses, errors, rejected]


_resources = _ResourceCollector()
REGISTRY.register(_resources)


def track_resources(name: str, resources: Any) -> None:
    """Report `resources.pool` (asyncpg) and `resources.cache` (Cache) as `name`, once they exist."""
    _resources.sources[name] = resources


# --- the /metrics endpoint of a gRPC service ----------------------------------------------


def exposition(accept: str) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for, and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        verb, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        accept = ""
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == "accept":
                accept = value.strip()
        path = target.split("?", 1)[0]
        if verb not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET or HEAD\n", "text/plain"
        elif path in ("/metrics", "/"):
            body, ctype = exposition(accept)
            status = "200 OK"
        else:
            status, body, ctype = "404 Not Found", b"metrics are at /metrics\n", "text/plain"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        if verb != "HEAD":
            writer.write(body)
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


_servers: list[asyncio.Server] = []


async def serve_metrics(name: str, host: str, port: int) -> asyncio.Server | None:
    """Serve /metrics on host:port inside the running loop; port 0 = off.

    A port that cannot be bound is logged and the service carries on without metrics.
    """
    if port == 0:
        return None
    try:
        server = await asyncio.start_server(_answer, host, port, reuse_address=True)
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"address": f"{host}:{port}", "error": str(exc)})
        return None
    _servers.append(server)  # held for the life of the process
    log.info("metrics", extra={"address": f"http://{host}:{port}/metrics"})
    return server


async def start(name: str, settings: Settings, resources: Any) -> asyncio.Server | None:
    """What `serve()` calls: track the pool and cache, open the metrics endpoint."""
    track_resources(name, resources)
    port = settings.metrics_port if settings.metrics_port is not None else settings.metrics_ports.get(name, 0)
    return await serve_metrics(name, settings.bind_host, port)
