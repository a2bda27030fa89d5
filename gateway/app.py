"""The HTTP gateway: /api/* -> gRPC with deadlines, JSON out. No database, no business rules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from flowviz.core import auth, keys, logs, metrics, offloop, tracing
from flowviz.core.config import settings
from flowviz.core.protojson import fill
from gateway import observability, openapi, relay, web
from gateway.clients import client_address
from gateway.errors import BadRequest, ClientGone, Unauthorized, error_response, failure
from gateway.routes import API
from gateway.routes import Route as ApiRoute
from gateway.upstreams import Upstreams

MAX_BODY = 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def check_query(request: Request, accepted: frozenset[str]) -> None:
    """Refuse a query parameter the route does not take: a typo must not look like an answer."""
    if not request.scope.get("query_string"):
        return
    for name in request.query_params:
        if name not in accepted:
            takes = f"it takes {', '.join(sorted(accepted))}" if accepted else "it takes none"
            raise BadRequest(
                "QUERY_PARAMETER_UNKNOWN",
                f"unknown query parameter {name!r} on {request.method} {request.url.path}; {takes}",
                field=name,
            )


# Answers larger than this (serialized) are turned into JSON in a worker thread.
RENDER_ON_LOOP_MAX_BYTES = 256 * 1024


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _json_body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise BadRequest("BODY_TOO_LARGE", f"the body is larger than {MAX_BODY} bytes", 413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadRequest("BODY_TOO_LARGE", f"the body is larger than {MAX_BODY} bytes", 413)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("BODY_INVALID", "the body must be a JSON object", field="body") from None
    if not isinstance(body, dict):
        raise BadRequest("BODY_INVALID", "the body must be a JSON object", field="body")
    return body


async def _unless_disconnected(request: Request, call: Any) -> Any:
    """Await the gRPC call, cancelling it (and so the database query behind it) if the client leaves."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    answer = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((answer, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not answer.done():
        call.cancel()
        answer.cancel()
        raise ClientGone
    return answer.result()


def _metadata(request: Request, rid: str, public: bool = False) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for the call: request id, client address, and the caller's bearer token.

    The token is verified here first (cached per token), so a caller without a valid one gets
    401 before anything about the request is looked at; each service verifies it again and
    checks the caller's role itself. A public call carries the gateway's own identity instead,
    which is what lets the service believe the client address."""
    peer = request.client.host if request.client else ""
    client = client_address(peer, request.headers.get("x-forwarded-for"), settings().trusted_proxies)
    metadata: tuple[tuple[str, str], ...] = (("x-request-id", rid), ("x-client-address", client))
    if public:
        return (*metadata, ("authorization", f"Bearer {request.app.state.service_token.token()}"))
    bearer_token = auth.bearer(request.headers.get("authorization"))
    if bearer_token is None:
        raise Unauthorized("TOKEN_MISSING" if "authorization" not in request.headers else "TOKEN_INVALID")
    try:
        request.app.state.verifier.verify(bearer_token)
    except auth.Unauthenticated as exc:
        raise Unauthorized(exc.reason, exc.message) from None
    return (*metadata, ("authorization", f"Bearer {bearer_token}"))


def endpoint(handle: Handler) -> Handler:
    """Every /api endpoint: whatever it raises answered by the one handler (gateway.errors.failure).
    Its request id is set and echoed by gateway.observability, around every request."""

    async def answer(request: Request) -> Response:
        try:
            return await handle(request)
        except Exception as exc:
            if (refused := failure(exc)) is None:
                raise
            return refused

    return answer


def streaming_endpoint(route: ApiRoute) -> Handler:
    """A route that streams (gateway/relay.py): its own handler, after the token and the query."""
    call = relay.HANDLERS[route.kind](route)
    accepted = frozenset(route.query)

    @endpoint
    async def handle(request: Request) -> Response:
        metadata = _metadata(request, logs.request_id.get(), route.public)
        check_query(request, accepted)
        return await call(request, request.app.state.upstreams, metadata)

    return handle


def rpc_endpoint(route: ApiRoute) -> Handler:
    """Build the request message from path, query, body and headers; call; render the reply."""
    path_params = route.path_params
    accepted = frozenset(route.query)

    @endpoint
    async def handle(request: Request) -> Response:
        metadata = _metadata(request, logs.request_id.get(), route.public)
        check_query(request, accepted)
        data: dict[str, Any] = await _json_body(request) if route.body else {}
        for name in path_params:
            if name in data and data[name] != request.path_params[name]:
                raise BadRequest("FIELD_CONFLICT", f"{name} in the body differs from the path", field=name)
        query = request.query_params
        data.update((route.field_of(name), query[name]) for name in route.query if name in query)
        data.update((f, request.headers[h]) for h, f in route.headers.items() if h in request.headers)
        data.update(request.path_params)
        missing = [name for name in route.required if data.get(name) is None]
        if missing:
            raise BadRequest("FIELD_REQUIRED", f"{', '.join(missing)} required", field=missing[0])
        message = fill(route.request_class(), data)
        stub = getattr(request.app.state.upstreams, route.upstream)
        call = getattr(stub, route.rpc)(message, timeout=settings().rpc_timeout, metadata=metadata)
        reply = await (_unless_disconnected(request, call) if route.cancellable else call)
        status = route.status_of(reply) if route.status_of else route.status
        if reply.ByteSize() > RENDER_ON_LOOP_MAX_BYTES:
            # Off the event loop: a 10,000-lot graph takes ~200 ms to turn into JSON, and every
            # other request would wait that long behind it.
            with offloop.quick_turns():
                body = await asyncio.to_thread(route.render_bytes, reply)
            return Response(body, status_code=status, media_type="application/json")
        return json(route.render(reply), status)

    return handle


def no_query(handler: Handler) -> Handler:
    """A route that takes no query parameters (health, the documents)."""

    @endpoint
    async def handle(request: Request) -> Response:
        check_query(request, frozenset())
        return await handler(request)

    return handle


async def health(request: Request) -> Response:
    view = request.app.state.upstreams.current_health()
    return Response(view.body, status_code=200 if view.healthy else 503, media_type="application/json")


async def empty_lot_code(request: Request) -> Response:
    return error_response(
        400, "INVALID_ARGUMENT", "lot_code must not be empty", "LOT_CODE_EMPTY", {"field": "lot_code"}
    )


async def openapi_json(request: Request) -> Response:
    return Response(openapi.DOCUMENT_JSON, media_type="application/json")


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(
        404, "NOT_FOUND", f"no route for {request.method} {request.url.path}", "ROUTE_NOT_FOUND"
    )


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    response = error_response(
        405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}"
    )
    response.headers.update(getattr(exc, "headers", None) or {})  # Allow: the methods the path has
    return response


async def internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "INTERNAL", "internal error; the request id identifies it in the logs")


def _routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/api/health", no_query(health)),
        Route("/api/traceability/", empty_lot_code),
        Route("/api/openapi.json", no_query(openapi_json)),
        *web.routes(),
    ]
    # Starlette matches in order: group methods of one path into one Route.
    by_path: dict[str, list[ApiRoute]] = {}
    for route in API:
        by_path.setdefault(route.path, []).append(route)
    for path, group in by_path.items():
        handlers = {r.method: rpc_endpoint(r) if r.kind == "json" else streaming_endpoint(r) for r in group}

        async def dispatch(request: Request, handlers: dict[str, Handler] = handlers) -> Response:
            return await (handlers.get(request.method) or handlers["GET"])(request)  # HEAD is GET

        routes.append(Route(path, dispatch, methods=list(handlers)))
    return routes


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    cfg = settings()
    logs.setup("gateway", cfg.log_format)
    app.state.upstreams = Upstreams(cfg)
    # The gateway verifies users' tokens and signs its own identity; it holds no key that signs users'.
    app.state.verifier = auth.TokenVerifier(
        auth.TrustedKeys(cfg.token_public_key), max_lifetime=cfg.token_ttl
    )
    own_key = keys.own_service_key(cfg.service_key, cfg.service_public_keys, "gateway")
    app.state.service_token = auth.ServiceTokenSource("gateway", own_key)
    # /metrics on a port of its own (the public HTTP port, and so the ingress, never serves it).
    port = cfg.metrics_port if cfg.metrics_port is not None else cfg.metrics_ports["gateway"]
    await metrics.serve_metrics("gateway", cfg.bind_host, port)
    yield
    await app.state.upstreams.close()


def create_app() -> Starlette:
    cfg = settings()
    tracing.setup("gateway")  # no-op unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    routes = _routes()
    # Outermost first: the security headers, the trace span (when on), then metrics and the access log.
    middleware = [
        Middleware(web.SecureHeaders),
        *tracing.asgi_middleware(routes),
        Middleware(observability.Observability),
    ]
    if cfg.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cfg.cors_origins),
                allow_methods=["GET", "POST", "PATCH", "OPTIONS"],
                allow_headers=["authorization", "content-type", "idempotency-key", "x-request-id"],
                expose_headers=["x-request-id"],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, 500: internal_error},
    )
    # A trailing slash is a 404, never a redirect built from the request's Host header.
    app.router.redirect_slashes = False
    return app


app = create_app()
