"""The HTTP gateway: /api/* -> gRPC with deadlines, JSON out. No database, no business rules."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from flowviz.core import logs
from flowviz.core.config import settings
from flowviz.core.errors import from_rpc_error
from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2
from gateway import convert, openapi
from gateway.errors import error_response, failure_response
from gateway.upstreams import Upstreams

MAX_BODY = 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Handler = Callable[[Request], Awaitable[Response]]


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class BadRequest(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def endpoint(fn: Callable[[Request, Upstreams, tuple[tuple[str, str], ...]], Awaitable[Response]]) -> Handler:
    """Wrap a route: request id in and out, gRPC failures through the one status table."""

    async def handle(request: Request) -> Response:
        rid = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        logs.request_id.set(rid)
        metadata = (("x-request-id", rid),)
        try:
            response = await fn(request, request.app.state.upstreams, metadata)
        except grpc.aio.AioRpcError as exc:
            response = failure_response(from_rpc_error(exc))
        except BadRequest as exc:
            response = error_response(400, "INVALID_ARGUMENT", exc.message, exc.reason)
        response.headers["x-request-id"] = rid
        return response

    return handle


def _int_param(request: Request, name: str, default: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest("PARAM_INVALID", f"{name} must be an integer") from None


async def _json_body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise BadRequest("BODY_TOO_LARGE", f"the body is larger than {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadRequest("BODY_TOO_LARGE", f"the body is larger than {MAX_BODY} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("BODY_INVALID", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("BODY_INVALID", "the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest("FIELD_REQUIRED", f"{name} is required")
        return kind()
    value = body[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRequest("FIELD_INVALID", f"{name} must be a {'number' if kind is float else 'string'}")
    return value


# --- routes ---------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    view = request.app.state.upstreams.current_health()
    return Response(view.body, status_code=200 if view.healthy else 503, media_type="application/json")


@endpoint
async def traceability(request: Request, up: Upstreams, md: Any) -> Response:
    reply = await up.genealogy.GetTraceability(
        genealogy_pb2.GetTraceabilityRequest(lot_code=request.path_params["lot_code"]),
        timeout=settings().rpc_timeout,
        metadata=md,
    )
    return json(convert.traceability(reply))


async def empty_lot_code(request: Request) -> Response:
    return error_response(400, "INVALID_ARGUMENT", "lot_code must not be empty", "LOT_CODE_EMPTY")


@endpoint
async def get_lot(request: Request, up: Upstreams, md: Any) -> Response:
    reply = await up.lots.GetLot(
        lots_pb2.GetLotRequest(lot_code=request.path_params["lot_code"]),
        timeout=settings().rpc_timeout,
        metadata=md,
    )
    return json({"lot": convert.lot(reply.lot)})


@endpoint
async def list_lots(request: Request, up: Upstreams, md: Any) -> Response:
    q = request.query_params
    reply = await up.lots.ListLots(
        lots_pb2.ListLotsRequest(
            kind=q.get("kind", ""),
            product=q.get("product", ""),
            page_size=_int_param(request, "page_size"),
            page_token=q.get("page_token", ""),
        ),
        timeout=settings().rpc_timeout,
        metadata=md,
    )
    return json(
        {"lots": [convert.lot(m) for m in reply.lots], "next_page_token": reply.next_page_token or None}
    )


@endpoint
async def create_lot(request: Request, up: Upstreams, md: Any) -> Response:
    body = await _json_body(request)
    message = lots_pb2.CreateLotRequest(
        lot_code=_field(body, "lot_code", str),
        kind=_field(body, "kind", str),
        product=_field(body, "product", str),
        quantity=_field(body, "quantity", float),
        uom=_field(body, "uom", str),
    )
    produced_at = _field(body, "produced_at", str, required=False)
    if produced_at:
        try:
            message.produced_at.FromJsonString(produced_at)
        except ValueError:
            raise BadRequest("FIELD_INVALID", "produced_at must be an RFC 3339 timestamp") from None
    reply = await up.lots.CreateLot(message, timeout=settings().rpc_timeout, metadata=md)
    return json({"lot": convert.lot(reply.lot)}, status=201)


@endpoint
async def qc_status(request: Request, up: Upstreams, md: Any) -> Response:
    reply = await up.qc.GetQcStatus(
        qc_pb2.GetQcStatusRequest(lot_code=request.path_params["lot_code"]),
        timeout=settings().rpc_timeout,
        metadata=md,
    )
    return json({"lot_code": reply.lot_code, "status": reply.status})


@endpoint
async def qc_decisions(request: Request, up: Upstreams, md: Any) -> Response:
    reply = await up.qc.ListQcDecisions(
        qc_pb2.ListQcDecisionsRequest(
            lot_code=request.path_params["lot_code"],
            page_size=_int_param(request, "page_size"),
            page_token=request.query_params.get("page_token", ""),
        ),
        timeout=settings().rpc_timeout,
        metadata=md,
    )
    return json(
        {
            "decisions": [convert.qc_decision(d) for d in reply.decisions],
            "next_page_token": reply.next_page_token or None,
        }
    )


async def openapi_json(request: Request) -> Response:
    return Response(openapi.DOCUMENT_JSON, media_type="application/json")


async def docs(request: Request) -> Response:
    return HTMLResponse(openapi.DOCS_HTML)


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(
        404, "NOT_FOUND", f"no route for {request.method} {request.url.path}", "ROUTE_NOT_FOUND"
    )


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}")


async def internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "INTERNAL", "internal error; the request id identifies it in the logs")


ROUTES = [
    Route("/api/health", health),
    Route("/api/traceability/", empty_lot_code),
    Route("/api/traceability/{lot_code}", traceability),
    Route("/api/lots", list_lots, methods=["GET"]),
    Route("/api/lots", create_lot, methods=["POST"]),
    Route("/api/lots/{lot_code}/qc-status", qc_status),
    Route("/api/lots/{lot_code}/qc-decisions", qc_decisions, methods=["GET"]),
    Route("/api/lots/{lot_code}", get_lot),
    Route("/api/openapi.json", openapi_json),
    Route("/api/docs", docs),
]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    cfg = settings()
    logs.setup("gateway", cfg.log_format)
    app.state.upstreams = Upstreams(cfg)
    yield
    await app.state.upstreams.close()


def create_app() -> Starlette:
    cfg = settings()
    middleware = []
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
    return Starlette(
        routes=ROUTES,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, 500: internal_error},
    )


app = create_app()
