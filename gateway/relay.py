"""The routes that stream (gateway/routes.py kinds bytes, upload, document): exports the genealogy
service renders, relayed as the bytes it sends (the gateway knows no export format, only the
content type and file name the first piece names), the bulk import streamed on as it arrives,
and an EPCIS document sent on whole. Nothing is held whole in the gateway but a captured document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flowviz.core import auth
from flowviz.core.config import settings
from flowviz.core.protojson import fill, to_json
from flowviz.genealogy.v1 import genealogy_pb2
from gateway import uploads
from gateway.errors import BadRequest
from gateway.routes import Route

Metadata = tuple[tuple[str, str], ...]
Call = Callable[[Request, Any, Metadata], Awaitable[Response]]


def request_of(route: Route, request: Request) -> Message:
    """The RPC's request from the path and the query (a repeated field takes every value given),
    with the fields the route sets itself."""
    data: dict[str, Any] = dict(request.path_params)
    query = request.query_params
    for name in route.query:
        if name in query:
            field = route.input.fields_by_name[route.field_of(name)]
            data[field.name] = query.getlist(name) if field.is_repeated else query[name]
    message = fill(route.request_class(), data)
    for name, value in route.fixed.items():
        setattr(message, name, value)
    return message


def relay(route: Route) -> Call:
    """A server-streaming RPC of RenderedChunk, answered as its bytes. The first piece is read
    before answering, so a refused request keeps its own HTTP status."""

    async def call(request: Request, upstreams: Any, metadata: Metadata) -> Response:
        stub = getattr(upstreams, route.upstream)
        stream = getattr(stub, route.rpc)(
            request_of(route, request), timeout=settings().rpc_timeout * route.timeouts, metadata=metadata
        )
        pieces = stream.__aiter__()
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = genealogy_pb2.RenderedChunk()

        async def body() -> AsyncIterator[bytes]:
            yield first.data
            async for piece in pieces:
                yield piece.data

        headers = (
            {"content-disposition": f'attachment; filename="{first.filename}"'} if first.filename else {}
        )
        return StreamingResponse(
            body(), media_type=first.content_type or "application/octet-stream", headers=headers
        )

    return call


# --- the bulk import: multipart files streamed on to ImportGenealogy --------------------------

IMPORT_MODES = {
    "strict": genealogy_pb2.IMPORT_MODE_STRICT,
    "historical": genealogy_pb2.IMPORT_MODE_HISTORICAL,
}
UPLOAD_PARTS = {"lots": "lots_csv", "genealogy": "genealogy_csv"}
# An import may take its time: its rows are checked against each other and the data.
IMPORT_TIMEOUT = 600


def import_files(route: Route) -> Call:
    """multipart/form-data with files `lots` and/or `genealogy`, streamed on as the body arrives."""
    parts = frozenset(UPLOAD_PARTS)

    async def call(request: Request, upstreams: Any, metadata: Metadata) -> Response:
        # The caller's role first: a viewer's upload is refused before a byte of it is read.
        identity = request.app.state.verifier.verify(auth.bearer(request.headers.get("authorization")) or "")
        auth.require(identity, *route.roles)
        mode = IMPORT_MODES.get(request.query_params.get("mode", "strict"))
        if mode is None:
            raise BadRequest("FIELD_INVALID", f"mode must be one of {', '.join(IMPORT_MODES)}", field="mode")
        refused: list[uploads.UploadError] = []

        async def chunks() -> AsyncIterator[genealogy_pb2.ImportChunk]:
            yield genealogy_pb2.ImportChunk(mode=mode)  # first, so a refused mode reads no file
            try:
                async for name, data in uploads.parts(request, parts, settings().max_upload_bytes):
                    chunk = genealogy_pb2.ImportChunk()
                    setattr(chunk, UPLOAD_PARTS[name], data)
                    yield chunk
            except uploads.UploadError as exc:  # stop the call: nothing of a refused upload is imported
                refused.append(exc)
                upload.cancel()

        upload = getattr(upstreams, route.upstream).ImportGenealogy(
            chunks(), timeout=IMPORT_TIMEOUT, metadata=metadata
        )
        try:
            reply = await upload
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            if not refused:
                raise
        if refused:
            raise refused[0]
        return Response(
            orjson.dumps(to_json(reply)), status_code=200 if reply.ok else 400, media_type="application/json"
        )

    return call


# --- an EPCIS document to capture, sent on whole ----------------------------------------------

# A captured document goes to the genealogy service whole (its gRPC limit is 16 MiB).
CAPTURE_MAX_BYTES = 8 * 1024 * 1024
# A refused capture's status: the gravest kind among its refused events.
STATUS_OF_CODE = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404}


def capture_status(reply: genealogy_pb2.CaptureEpcisResponse) -> int:
    if reply.ok:
        return 200 if reply.replayed else 201
    codes = {e.code for e in reply.events if e.code}
    return next((status for code, status in STATUS_OF_CODE.items() if code in codes), 409)


def capture(route: Route) -> Call:
    """POST /api/epcis/capture: the EPCIS document as sent, with the Idempotency-Key."""
    too_large = f"the document is larger than {CAPTURE_MAX_BYTES} bytes"

    async def call(request: Request, upstreams: Any, metadata: Metadata) -> Response:
        if int(request.headers.get("content-length") or 0) > CAPTURE_MAX_BYTES:
            raise BadRequest("BODY_TOO_LARGE", too_large, 413)
        document = bytearray()
        async for piece in request.stream():
            document += piece
            if len(document) > CAPTURE_MAX_BYTES:
                raise BadRequest("BODY_TOO_LARGE", too_large, 413)
        message = genealogy_pb2.CaptureEpcisRequest(
            document=bytes(document), idempotency_key=request.headers.get("idempotency-key", "")
        )
        reply = await getattr(upstreams, route.upstream).CaptureEpcis(
            message, timeout=settings().rpc_timeout * route.timeouts, metadata=metadata
        )
        return Response(
            orjson.dumps(to_json(reply)), status_code=capture_status(reply), media_type="application/json"
        )

    return call


HANDLERS: dict[str, Callable[[Route], Call]] = {"bytes": relay, "upload": import_files, "document": capture}
