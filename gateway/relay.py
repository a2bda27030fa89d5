"""Exports the genealogy service renders (RenderExport), relayed as the bytes it sends: the
gateway knows no export format, only the content type and file name the first piece names.
The first piece is read before answering, so a refused request keeps its own HTTP status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flowviz.core.config import settings
from flowviz.core.protojson import fill, to_json
from flowviz.genealogy.v1 import genealogy_pb2
from gateway.errors import error_response

Metadata = tuple[tuple[str, str], ...]
Build = Callable[[Request], genealogy_pb2.RenderExportRequest]
# Query parameter -> request field, for the request-scoped exports (FSMA 204, EPCIS by range).
RANGE_QUERY = {"from": "since", "to": "until", "lot_code_from": "lot_code_from", "lot_code_to": "lot_code_to"}


def of_lot(fmt: int) -> Build:
    def build(request: Request) -> genealogy_pb2.RenderExportRequest:
        data: dict[str, Any] = {"lot_code": request.path_params["lot_code"]}
        if "direction" in request.query_params:
            data["direction"] = request.query_params["direction"]
        message = genealogy_pb2.RenderExportRequest()
        fill(message, data)
        message.format = fmt  # type: ignore[assignment]
        return message

    return build


def of_range(fmt: int) -> Build:
    def build(request: Request) -> genealogy_pb2.RenderExportRequest:
        query = request.query_params
        message = genealogy_pb2.RenderExportRequest(products=query.getlist("product"))
        for name, field in RANGE_QUERY.items():
            if name in query:
                setattr(message, field, query[name])
        message.format = fmt  # type: ignore[assignment]
        return message

    return build


def relay(build: Build) -> Callable[[Request, Any, Metadata], Any]:
    async def call(request: Request, upstreams: Any, metadata: Metadata) -> Response:
        stream = upstreams.genealogy.RenderExport(
            build(request), timeout=settings().rpc_timeout * 12, metadata=metadata
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


# A captured document goes to the genealogy service whole (its gRPC limit is 16 MiB).
CAPTURE_MAX_BYTES = 8 * 1024 * 1024
# A refused capture's status: the gravest kind among its refused events.
STATUS_OF_CODE = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404}


def capture_status(reply: genealogy_pb2.CaptureEpcisResponse) -> int:
    if reply.ok:
        return 200 if reply.replayed else 201
    codes = {e.code for e in reply.events if e.code}
    return next((status for code, status in STATUS_OF_CODE.items() if code in codes), 409)


async def capture(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    """POST /api/epcis/capture: the EPCIS document as sent, with the Idempotency-Key."""
    if int(request.headers.get("content-length") or 0) > CAPTURE_MAX_BYTES:
        return error_response(413, "INVALID_ARGUMENT", f"the document is larger than {CAPTURE_MAX_BYTES} bytes",
                              "BODY_TOO_LARGE")  # fmt: skip
    document = bytearray()
    async for piece in request.stream():
        document += piece
        if len(document) > CAPTURE_MAX_BYTES:
            return error_response(413, "INVALID_ARGUMENT", f"the document is larger than {CAPTURE_MAX_BYTES} bytes",
                                  "BODY_TOO_LARGE")  # fmt: skip
    message = genealogy_pb2.CaptureEpcisRequest(
        document=bytes(document), idempotency_key=request.headers.get("idempotency-key", "")
    )
    reply = await upstreams.genealogy.CaptureEpcis(
        message, timeout=settings().rpc_timeout * 12, metadata=metadata
    )
    return Response(
        orjson.dumps(to_json(reply)), status_code=capture_status(reply), media_type="application/json"
    )
