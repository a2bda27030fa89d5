"""OpenTelemetry tracing, off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

Switched on per process by the environment: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, `setup(name)` builds a TracerProvider (service
name `flowviz-<name>` unless `OTEL_SERVICE_NAME` says otherwise) that batches spans to that
OTLP/gRPC endpoint, and instruments:

- grpc.aio servers and channels created from then on (`grpc.aio.server`, `grpc.aio.insecure_channel`):
  trace context travels in gRPC metadata gateway -> service and service -> service;
- asyncpg: one span per query, under the RPC's server span;
- the cache: a span per Valkey round trip (the hook `flowviz.core.cache.watch_round_trips` sets);
- the gateway's ASGI app: `asgi_middleware()` returns the server-span middleware, named by
  route template (`GET /api/traceability/{lot_code}`);
- log lines: `trace_id` and `span_id` of the current span (`flowviz.core.logs.use_span_ids`).

Without the variable `setup()` returns at once: no provider, no instrumentation, no wrappers,
so tracing costs nothing. grpc.health.v1 calls, `/api/health` and `/metrics` are not traced,
and unless `OTEL_TRACES_SAMPLER` is set, a trace starts only at a server span (an HTTP
request or an RPC), so the health service's background probes do not flood the collector. The standard `OTEL_*` variables of
the exporter (headers, timeout, insecure, ...) and the batch processor apply as usual.

Tests pass `exporter=` (e.g. an InMemorySpanExporter, exported synchronously) or `provider=`
and call `teardown()` afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowviz.core import config

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer
    from starlette.middleware import Middleware
    from starlette.routing import BaseRoute


@dataclass
class _State:
    process_name: str
    provider: TracerProvider
    owned: bool
    undo: list[Callable[[], None]] = field(default_factory=list)


_state: _State | None = None


def enabled() -> bool:
    return _state is not None


def wanted() -> bool:
    """Whether the environment asks for tracing."""
    return config.tracing_requested()


def setup(
    process_name: str,
    *,
    exporter: SpanExporter | None = None,
    provider: TracerProvider | None = None,
) -> TracerProvider | None:
    """Turn tracing on for this process if the environment (or a test) asks; idempotent.

    Returns the provider in use, or None when tracing is off.
    """
    global _state
    if _state is not None:
        return _state.provider
    if exporter is None and provider is None and not wanted():
        return None

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    owned = provider is None
    if provider is None:
        kwargs: dict[str, Any] = {"resource": Resource.create({"service.name": f"flowviz-{process_name}"})}
        if not config.sampler_chosen():
            kwargs["sampler"] = _server_roots_sampler()
        provider = TracerProvider(**kwargs)
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            # The process-wide provider, for code that asks the API for a tracer.
            trace.set_tracer_provider(provider)
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))

    state = _State(process_name, provider, owned)
    _instrument_grpc(state)
    _instrument_asyncpg(state)
    _trace_cache(state, provider.get_tracer("flowviz.cache"))
    _log_span_ids(state)
    _state = state
    return provider


def teardown() -> None:
    """Undo `setup()`: remove every instrumentation and flush (tests; process exit flushes anyway)."""
    global _state
    state, _state = _state, None
    if state is None:
        return
    for undo in reversed(state.undo):
        undo()
    if state.owned:
        state.provider.shutdown()


def asgi_middleware(routes: Sequence[BaseRoute]) -> list[Middleware]:
    """The gateway's server-span middleware when tracing is on, else nothing."""
    if _state is None:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware
    from starlette.routing import Match

    def span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        method = scope.get("method", "HTTP")
        full = partial = None
        for route in routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                full = route
                break
            if match is Match.PARTIAL and partial is None:
                partial = route
        path = getattr(full or partial, "path", None)
        if not isinstance(path, str):
            return method, {}
        return f"{method} {path}", {"http.route": path}

    return [
        Middleware(
            OpenTelemetryMiddleware,
            tracer_provider=_state.provider,
            default_span_details=span_details,
            exclude_spans=["receive", "send"],
            # Probes and scrapes: frequent, served from memory, nothing to follow.
            excluded_urls="/metrics$,/api/health$",
        )
    ]


# --- pieces -------------------------------------------------------------------------------


def _server_roots_sampler() -> Any:
    """Follow the parent's decision; start a trace only at a server span."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class ServerRoots(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            sampler = ALWAYS_ON if kind in (SpanKind.SERVER, SpanKind.CONSUMER) else ALWAYS_OFF
            return sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return "ServerRoots"

    return ParentBased(root=ServerRoots())


def _instrument_grpc(state: _State) -> None:
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.grpc.filters import health_check, negate

    not_health = negate(health_check())
    server = GrpcAioInstrumentorServer(filter_=not_health)  # type: ignore[no-untyped-call]
    server.instrument(tracer_provider=state.provider)
    state.undo.append(server.uninstrument)
    client = GrpcAioInstrumentorClient(filter_=not_health)  # type: ignore[no-untyped-call]
    client.instrument(tracer_provider=state.provider)
    state.undo.append(client.uninstrument)


def _instrument_asyncpg(state: _State) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=state.provider)
    state.undo.append(instrumentor.uninstrument)


def _trace_cache(state: _State, tracer: Tracer) -> None:
    """A client span around every Valkey round trip of the cache (its round-trip hook, see
    flowviz.core.cache), named `cache <op>` (lookup, fill, invalidate, ...)."""
    from opentelemetry.trace import SpanKind

    from flowviz.core import cache

    async def traced(op: str, run: Callable[[], Awaitable[Any]]) -> Any:
        with tracer.start_as_current_span(
            f"cache {op}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "valkey", "db.operation.name": op},
        ) as span:
            result = await run()
            if result is None:  # the cache was down, failed or timed out: the caller reads through
                span.set_attribute("flowviz.cache.skipped", True)
            elif op == "lookup":
                span.set_attribute("flowviz.cache.hit", bool(result[0]))
            return result

    previous = cache.watch_round_trips(traced)

    def undo() -> None:
        cache.watch_round_trips(previous)

    state.undo.append(undo)


def _log_span_ids(state: _State) -> None:
    from opentelemetry import trace

    from flowviz.core import logs

    def span_ids() -> tuple[str, str] | None:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")

    previous = logs.use_span_ids(span_ids)

    def undo() -> None:
        logs.use_span_ids(previous)

    state.undo.append(undo)
