"""Metrics on the running system, and one trace gateway -> gRPC -> PostgreSQL captured in-process."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from flowviz.core import cache, logs, tracing
from flowviz.core.cache import Cache
from flowviz.core.config import settings
from flowviz.tools.embedded import free_port
from tests.conftest import CACHE_SECRET, PUBLIC_KEY_ENV, Servers, System, bearer, own_keys

LOT = "FG-DONER-X1"
TRACE_ROUTE = "/api/traceability/{lot_code}"
GENEALOGY = "flowviz.genealogy.v1.GenealogyService"
SERVICES = ("health", "lots", "genealogy", "qc")


# --- metrics on the running system --------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample at `url` as {(name, labels): value}."""
    r = httpx.get(url, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_url(system: System, name: str) -> str:
    return f"http://127.0.0.1:{system.env[f'FLOWVIZ_{name.upper()}_METRICS_PORT']}/metrics"


@pytest.fixture
def gateway_metrics(system: System) -> str:
    return metrics_url(system, "gateway")


def test_gateway_counts_routes_by_template(http: httpx.Client, gateway_metrics: str) -> None:
    n = 5
    before = scrape(gateway_metrics)
    for _ in range(n):
        assert http.get(f"/api/traceability/{LOT}").status_code == 200
    assert http.get("/api/traceability/NO-SUCH-LOT").status_code == 404
    assert http.get("/no/such/route").status_code == 404
    after = scrape(gateway_metrics)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"method": "GET", "route": TRACE_ROUTE}
    assert delta("flowviz_http_requests_total", **ok, status="200") >= n
    assert delta("flowviz_http_requests_total", **ok, status="404") >= 1
    assert delta("flowviz_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert delta("flowviz_http_request_duration_seconds_count", **ok) >= n + 1
    assert delta("flowviz_http_request_duration_seconds_bucket", **ok, le="+Inf") >= n + 1
    # Route templates, never raw paths: the label values stay bounded.
    routes = {dict(labels).get("route", "") for _, labels in after}
    assert not any(LOT in r or "NO-SUCH" in r or "/no/such" in r for r in routes)


def test_services_serve_metrics(http: httpx.Client, system: System) -> None:
    n = 4
    genealogy = metrics_url(system, "genealogy")
    before = scrape(genealogy)
    for _ in range(n):
        assert http.get(f"/api/traceability/{LOT}").status_code == 200
    assert http.get("/api/traceability/NO-SUCH-LOT").status_code == 404
    after = scrape(genealogy)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    rpc = {"grpc_service": GENEALOGY, "grpc_method": "GetTraceability"}
    assert delta("flowviz_grpc_server_handled_total", **rpc, grpc_code="OK") >= n
    assert delta("flowviz_grpc_server_handled_total", **rpc, grpc_code="NOT_FOUND") >= 1
    assert delta("flowviz_grpc_server_handling_seconds_count", **rpc) >= n + 1
    # Repeated traces of one lot are answered from the cache.
    assert value(after, "flowviz_cache_hits_total", cache="genealogy") > 0
    assert delta("flowviz_cache_hits_total", cache="genealogy") >= n - 1
    assert value(after, "flowviz_trace_nodes_count") >= 0  # provided for the servicers

    for name in SERVICES:
        samples = scrape(metrics_url(system, name))
        size = value(samples, "flowviz_db_pool_size", pool=name)
        idle = value(samples, "flowviz_db_pool_idle", pool=name)
        assert size >= 1, name
        assert value(samples, "flowviz_db_pool_max", pool=name) >= size
        assert value(samples, "flowviz_db_pool_in_use", pool=name) == size - idle
        assert ("flowviz_db_pool_waiting", frozenset({("pool", name)})) in samples
        assert ("flowviz_cache_errors_total", frozenset({("cache", name)})) in samples
        assert value(samples, "process_resident_memory_bytes") > 0
        # Probes are not counted: grpc.health.v1 is left out on purpose.
        assert not any(
            dict(labels).get("grpc_service") == "grpc.health.v1.Health" for _, labels in samples
        ), name


def test_lots_rpcs_are_counted(http: httpx.Client, system: System) -> None:
    lots = metrics_url(system, "lots")
    before = scrape(lots)
    assert http.get("/api/lots/RAW-SPICE-001").status_code == 200
    after = scrape(lots)
    labels = {"grpc_service": "flowviz.lots.v1.LotsService", "grpc_method": "GetLot", "grpc_code": "OK"}
    assert value(after, "flowviz_grpc_server_handled_total", **labels) - value(
        before, "flowviz_grpc_server_handled_total", **labels
    ) == pytest.approx(1)


def test_metrics_endpoint_answers_only_metrics(system: System) -> None:
    base = metrics_url(system, "qc").removesuffix("/metrics")
    assert httpx.get(base + "/other", timeout=5).status_code == 404
    assert httpx.post(base + "/metrics", timeout=5).status_code == 405
    assert httpx.head(base + "/metrics", timeout=5).status_code == 200


def test_gateway_writes_one_access_line_per_request(http: httpx.Client, system: System) -> None:
    rid = uuid.uuid4().hex
    assert http.get(f"/api/traceability/{LOT}", headers={"x-request-id": rid}).status_code == 200
    # The line is written just after the response: poll the log file, with a deadline.
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        lines = [
            doc
            for raw in system.log("gateway").splitlines()
            if rid in raw and (doc := orjson.loads(raw)).get("msg") == "access"
        ]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, system.log("gateway")[-2000:]
    line = lines[0]
    assert line["request_id"] == rid
    assert (line["method"], line["route"], line["path"], line["status"]) == (
        "GET",
        TRACE_ROUTE,
        f"/api/traceability/{LOT}",
        200,
    )
    assert line["duration_ms"] > 0
    if not tracing.wanted():
        assert "trace_id" not in line  # tracing is off in the system fixture


# --- configuration and the off switch -----------------------------------------------------


@pytest.fixture
def clean_settings() -> Iterator[None]:
    settings.cache_clear()
    yield
    settings.cache_clear()


def test_flowviz_metrics_port_overrides(monkeypatch: pytest.MonkeyPatch, clean_settings: None) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@127.0.0.1/x")
    monkeypatch.setenv("VALKEY_URL", "valkey://127.0.0.1:1/0")
    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLOWVIZ_METRICS_PORT", raising=False)
    assert settings().metrics_port is None
    assert settings().metrics_ports["genealogy"] == 9152
    settings.cache_clear()
    monkeypatch.setenv("FLOWVIZ_METRICS_PORT", "9999")
    assert settings().metrics_port == 9999


def test_tracing_is_off_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    server_factory, bounded = grpc.aio.server, Cache._bounded
    assert cache.round_trip_hook() is None
    assert tracing.setup("test") is None
    assert not tracing.enabled()
    assert tracing.asgi_middleware([]) == []
    # Nothing was wrapped: the off path is the plain code.
    assert grpc.aio.server is server_factory
    assert Cache._bounded is bounded
    assert cache.round_trip_hook() is None  # no hook: a round trip is the plain call
    assert logs.span_ids is None


# --- one trace, gateway -> genealogy -> PostgreSQL, in this process -----------------------


@pytest.fixture
async def traced(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemorySpanExporter]:
    """Tracing on in this process, to memory; undone afterwards (logging and settings too)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    exporter = InMemorySpanExporter()
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    assert tracing.setup("test", exporter=exporter) is not None
    settings.cache_clear()
    try:
        yield exporter
    finally:
        tracing.teardown()
        assert cache.round_trip_hook() is None and logs.span_ids is None  # every hook removed
        settings.cache_clear()
        root.handlers[:] = handlers
        root.setLevel(level)


async def _wait_serving(address: str, task: asyncio.Task[None], within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if task.done():
                task.result()
                raise AssertionError("the service stopped")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{address} not serving after {within}s")


def _one(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    found = [s for s in spans if s.kind is kind and s.name == name]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def _is_under(span: ReadableSpan, ancestor: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        up = by_id.get(parent.span_id)
        parent = up.parent if up else None
    return False


async def test_trace_spans_gateway_grpc_and_database(
    traced: InMemorySpanExporter,
    servers: Servers,
    system: System,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """gateway (in-process) -> genealogy (in-process, the real serve()) -> PostgreSQL, Valkey and
    the qc service (the system fixture's process: its own spans are not captured here)."""
    from flowviz.core.server import serve
    from services.genealogy.servicer import POLICY, register

    port = free_port()
    monkeypatch.setenv("DATABASE_URL", servers.pg.url)
    for name, value in {
        **PUBLIC_KEY_ENV,
        **own_keys("genealogy"),
        "FLOWVIZ_CACHE_SECRET": CACHE_SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLOWVIZ_TOKEN_TTL", "3600")  # the tests' tokens live an hour
    monkeypatch.setenv("FLOWVIZ_GATEWAY_METRICS_PORT", "0")
    # A Valkey database of its own: the first trace is a miss, so it reaches PostgreSQL.
    monkeypatch.setenv("VALKEY_URL", servers.valkey.url.rsplit("/", 1)[0] + "/7")
    monkeypatch.setenv("FLOWVIZ_GENEALOGY_PORT", str(port))
    monkeypatch.setenv("FLOWVIZ_GENEALOGY_ADDR", f"127.0.0.1:{port}")
    monkeypatch.setenv("FLOWVIZ_GENEALOGY_METRICS_PORT", "0")
    monkeypatch.delenv("FLOWVIZ_METRICS_PORT", raising=False)
    monkeypatch.setenv("FLOWVIZ_QC_ADDR", system.addr("qc"))
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: the gateway's health watch just retries
    for name in ("lots", "health"):
        monkeypatch.setenv(f"FLOWVIZ_{name.upper()}_ADDR", dead)
    monkeypatch.setenv("FLOWVIZ_DRAIN_SECONDS", "1")
    settings.cache_clear()

    # The real bootstrap, in this process: serve() calls tracing.setup(), already done here.
    service = asyncio.create_task(serve("genealogy", register, POLICY))
    loop = asyncio.get_running_loop()
    serving = False
    try:
        await _wait_serving(f"127.0.0.1:{port}", service)
        serving = True
        import gateway.app

        # The gateway in this same process: its own service key now (serve() has read its settings).
        monkeypatch.setenv("FLOWVIZ_SERVICE_KEY", own_keys("gateway")["FLOWVIZ_SERVICE_KEY"])
        settings.cache_clear()
        app = gateway.app.create_app()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
        ):
            rid = uuid.uuid4().hex
            r = await client.get(f"/api/traceability/{LOT}", headers={"x-request-id": rid, **bearer("ada")})
            assert r.status_code == 200, r.text
            assert r.json()["lot"]["lot_code"] == LOT
    finally:
        if serving and not service.done():
            # serve() stops on SIGTERM through its loop signal handler: a real drain.
            signal.raise_signal(signal.SIGTERM)
            await asyncio.wait_for(service, 30)
        elif not service.done():
            service.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    spans = list(traced.get_finished_spans())
    http_span = _one(spans, SpanKind.SERVER, f"GET {TRACE_ROUTE}")
    assert http_span.attributes is not None
    assert http_span.attributes["http.route"] == TRACE_ROUTE
    assert http_span.parent is None
    rpc = f"/{GENEALOGY}/GetTraceability"
    client_span = _one(spans, SpanKind.CLIENT, rpc)
    server_span = _one(spans, SpanKind.SERVER, rpc)
    trace_id = http_span.context.trace_id
    assert client_span.context.trace_id == trace_id
    assert server_span.context.trace_id == trace_id
    assert client_span.parent is not None and client_span.parent.span_id == http_span.context.span_id
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id
    assert server_span.parent.is_remote

    queries = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT and s.attributes and s.attributes.get("db.system") == "postgresql"
    ]
    assert queries, [(s.name, s.kind, s.attributes) for s in spans]
    assert all(q.context.trace_id == trace_id and _is_under(q, server_span, spans) for q in queries)
    # genealogy computes effective status itself (qc's read models): it calls no other service.
    assert not [s for s in spans if s.kind is SpanKind.CLIENT and s.name.startswith("/flowviz.qc.")]
    cache_ops = [s for s in spans if s.name.startswith("cache ") and s.context.trace_id == trace_id]
    assert cache_ops and all(_is_under(c, server_span, spans) for c in cache_ops)
    lookup = next(c for c in cache_ops if c.name == "cache lookup")
    assert lookup.attributes is not None and lookup.attributes["flowviz.cache.hit"] is False
    # Background work (probes, health checks) starts no trace of its own.
    assert {s.context.trace_id for s in spans} == {trace_id}

    # The gateway's access line names the trace and the HTTP server span.
    access = [
        doc
        for raw in capfd.readouterr().err.splitlines()
        if raw.startswith("{") and (doc := orjson.loads(raw)).get("msg") == "access"
    ]
    assert [(a["request_id"], a["trace_id"], a["span_id"], a["status"]) for a in access] == [
        (rid, format(trace_id, "032x"), format(http_span.context.span_id, "016x"), 200)
    ]


def test_log_lines_carry_the_trace_id(traced: InMemorySpanExporter) -> None:
    provider = tracing.setup("test")
    assert provider is not None
    formatter = logs.JsonFormatter("test")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "inside", (), None)
    with provider.get_tracer("test").start_as_current_span("work", kind=SpanKind.SERVER) as span:
        doc = orjson.loads(formatter.format(record))
    ctx = span.get_span_context()
    assert doc["trace_id"] == format(ctx.trace_id, "032x")
    assert doc["span_id"] == format(ctx.span_id, "016x")
    assert "trace_id" not in orjson.loads(formatter.format(record))  # outside any span
