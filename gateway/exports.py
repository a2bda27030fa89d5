"""Routes that stream: trace exports (CSV, GS1 EPCIS 2.0 JSON-LD), a drill's CSV, and the bulk
import (multipart upload streamed to the genealogy service). Rows go out as they arrive, so a
100,000-row export is never held whole in the gateway."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from flowviz.core import auth, epcis
from flowviz.core.config import settings
from flowviz.core.errors import RpcFailure, from_rpc_error
from flowviz.core.protojson import JsonInputError, enum_values, fill, to_json
from flowviz.genealogy.v1 import genealogy_pb2
from gateway import uploads
from gateway.csvcells import neutralise
from gateway.errors import error_response, failure_response

Metadata = tuple[tuple[str, str], ...]
Call = Callable[[Request, Any, Metadata], Awaitable[Response]]

CSV_COLUMNS = [
    "traceability_lot_code",
    "product",
    "quantity",
    "unit",
    "kind",
    "event",
    "reference_document",
    "event_time",
    "location",
    "step",
    "input_lot_code",
    "input_product",
    "input_quantity",
    "input_unit",
    "input_kind",
]
EPCIS_CONTEXT = epcis.CONTEXT
LOT_URN = epcis.LOT_URN


def _csv_line(values: Iterable[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(map(neutralise, values))
    return buffer.getvalue().encode()


def _export_request(request: Request) -> genealogy_pb2.ExportTraceRequest:
    data: dict[str, Any] = {"lot_code": request.path_params["lot_code"]}
    if "direction" in request.query_params:
        data["direction"] = request.query_params["direction"]
    message = genealogy_pb2.ExportTraceRequest()
    fill(message, data)
    return message


async def _first(stream: Any) -> tuple[Any | None, AsyncIterator[Any]]:
    """Read the first item before answering, so a failure still gets its own HTTP status."""
    iterator = stream.__aiter__()
    try:
        return await iterator.__anext__(), iterator
    except StopAsyncIteration:
        return None, iterator


async def _rows(first: Any | None, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is None:
        return
    yield first
    async for row in rest:
        yield row


async def trace_csv(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    call = upstreams.genealogy.ExportTrace(
        _export_request(request), timeout=settings().rpc_timeout * 12, metadata=metadata
    )
    first, rest = await _first(call)

    async def body() -> AsyncIterator[bytes]:
        yield _csv_line(CSV_COLUMNS)
        async for r in _rows(first, rest):
            yield _csv_line(
                [
                    r.output_lot_code,
                    r.output_product,
                    r.output_quantity,
                    r.output_uom,
                    r.output_kind,
                    "transformation" if r.run_code else "link",
                    r.run_code,
                    r.event_time.ToJsonString(),
                    r.stream_code,
                    r.phase_code,
                    r.input_lot_code,
                    r.input_product,
                    r.input_quantity,
                    r.input_uom,
                    r.input_kind,
                ]
            )

    name = f"trace-{request.path_params['lot_code']}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


def _epcis_event(rows: list[Any]) -> bytes:
    """One TransformationEvent: a production run's inputs and outputs with their quantities."""
    head = rows[0]
    inputs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for r in rows:
        item = inputs.setdefault(
            r.input_lot_code, {"epcClass": LOT_URN + r.input_lot_code, "quantity": 0.0, "uom": r.input_uom}
        )
        item["quantity"] += r.input_quantity
        outputs[r.output_lot_code] = {
            "epcClass": LOT_URN + r.output_lot_code,
            "quantity": r.output_quantity,
            "uom": r.output_uom,
        }
    event: dict[str, Any] = {
        "type": "TransformationEvent",
        "eventTime": head.event_time.ToJsonString(),
        "eventTimeZoneOffset": "+00:00",
        "inputQuantityList": list(inputs.values()),
        "outputQuantityList": list(outputs.values()),
        "bizStep": "transforming" if head.run_code else "commissioning",
    }
    if head.run_code:
        event["transformationID"] = f"urn:flowviz:run:{head.run_code}"
        event["bizTransactionList"] = [
            {"type": "prodorder", "bizTransaction": f"urn:flowviz:run:{head.run_code}"}
        ]
    if head.stream_code:
        event["bizLocation"] = {"id": f"urn:flowviz:stream:{head.stream_code}"}
    return orjson.dumps(event)


async def trace_jsonld(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    call = upstreams.genealogy.ExportTrace(
        _export_request(request), timeout=settings().rpc_timeout * 12, metadata=metadata
    )
    first, rest = await _first(call)

    async def body() -> AsyncIterator[bytes]:
        yield (
            b'{"@context":["' + EPCIS_CONTEXT.encode() + b'"],"type":"EPCISDocument","schemaVersion":"2.0",'
            b'"creationDate":"' + _now().encode() + b'","epcisBody":{"eventList":['
        )
        # Rows come grouped by event (the service sorts by time, then run): one event per run.
        group: list[Any] = []
        separator = b""
        async for r in _rows(first, rest):
            key = r.run_code or f"{r.output_lot_code}"
            if group and key != (group[0].run_code or group[0].output_lot_code):
                yield separator + _epcis_event(group)
                separator, group = b",", []
            group.append(r)
        if group:
            yield separator + _epcis_event(group)
        yield b"]}}"

    return StreamingResponse(body(), media_type="application/ld+json")


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def scenario_csv(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    message = genealogy_pb2.GetScenarioRequest()
    fill(message, {"id": request.path_params["id"]})
    reply = await upstreams.genealogy.GetScenario(message, timeout=settings().rpc_timeout, metadata=metadata)
    snapshot = to_json(reply)["scenario"]["snapshot"] or {}
    recall = snapshot.get("recall") or {}
    columns = [
        "relation",
        "lot_code",
        "kind",
        "product",
        "quantity",
        "uom",
        "status",
        "depth",
        "path_count",
        "share_of_root_in_lot",
        "root_quantity_in_lot",
        "share_of_lot_in_root",
        "effective_status",
        "blocking_lots",
    ]

    def lines() -> Iterable[bytes]:
        yield _csv_line(columns)
        for relation, items in (
            ("root", [recall.get("root")]),
            ("downstream", recall.get("downstream", [])),
            ("upstream", recall.get("upstream", [])),
        ):
            for lot in items:
                if lot:
                    yield _csv_line(
                        [
                            relation,
                            lot["lot_code"],
                            lot["kind"],
                            lot["product"],
                            lot["quantity"],
                            lot["uom"],
                            lot["status"],
                            lot["depth"],
                            lot["path_count"],
                            lot.get("root_share"),
                            lot.get("root_quantity"),
                            lot.get("share"),
                            lot.get("effective_status"),
                            " ".join(b["lot_code"] for b in lot.get("blocking") or ()),
                        ]
                    )
        yield from _accountability_lines(snapshot.get("accountability"), len(columns))

    return Response(b"".join(lines()), media_type="text/csv; charset=utf-8")


def _accountability_lines(drill: dict[str, Any] | None, width: int) -> Iterable[bytes]:
    """The drill's accounting as rows `accountability:<figure>`: lot_code (a child or a run's lot),
    kind (a run's flag), product (its run code), quantity and uom; root_quantity_in_lot is the root
    material a child's edges carried; status of the verdict row is pass or fail."""
    if not drill:
        return
    unit = drill["unit"]

    def row(figure: str, quantity: Any, lot_code: str = "", kind: str = "", product: str = "",
            status: str = "", root: Any = None) -> bytes:  # fmt: skip
        cells: list[Any] = [f"accountability:{figure}", lot_code, kind, product, quantity, unit, status]
        cells += [None] * (width - len(cells))
        cells[10] = root
        return _csv_line(cells)

    yield row("basis", drill["basis"])
    for child in drill["children"]:
        yield row("into_child", child["quantity"], child["lot_code"], root=child["root_quantity"])
    yield row("in_stock", drill["in_stock"])
    yield row("downstream", drill["downstream"])
    yield row("end_lots", drill["end_lots"])
    yield row("unaccounted", drill["unaccounted"])
    yield row("unaccounted_percent", drill["unaccounted_percent"])
    for run in drill["runs"]:
        yield row("run", run["root_lost"], run["lot_code"], run["flag"], run["run_code"])
    yield row("trace_ms", drill["trace_ms"])
    yield row("verdict", drill["tolerance"], status="pass" if drill["within_tolerance"] else "fail")


NOTIFICATION_COLUMNS = [
    "relation", "customer_code", "customer_name", "contact_name", "contact_email", "contact_phone",
    "location_code", "location_name", "location_gln", "address", "city", "postal_code", "country",
    "lot_code", "product", "depth", "shipment_id", "shipped_at", "document_type", "document_number", "carrier_code",
    "quantity", "uom", "root_share", "root_quantity",
]  # fmt: skip


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else ""


async def notifications_csv(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    """A recall's notification list as a spreadsheet: one row per shipment, then one per affected
    lot still in the plant (relation in_plant, customer columns empty)."""
    message = genealogy_pb2.GetRecallNotificationsRequest()
    fill(message, {"lot_code": request.path_params["lot_code"]})
    reply = await upstreams.genealogy.GetRecallNotifications(
        message, timeout=settings().rpc_timeout * 4, metadata=metadata
    )

    def lines() -> Iterable[bytes]:
        yield _csv_line(NOTIFICATION_COLUMNS)
        for c in reply.customers:
            for place in c.locations:
                for n in place.shipments:
                    s = n.shipment
                    yield _csv_line([
                        "shipment", c.customer_code, c.name, c.contact_name, c.contact_email, c.contact_phone,
                        place.location_code, place.name, place.gln, place.address, place.city, place.postal_code,
                        place.country, s.lot_code, s.product, n.depth, s.id, s.shipped_at.ToJsonString(),
                        s.document_type, s.document_number, s.carrier_code, s.quantity, s.uom,
                        _optional(n, "root_share"), _optional(n, "root_quantity"),
                    ])  # fmt: skip
        for item in reply.in_plant:
            yield _csv_line([
                "in_plant", "", "", "", "", "", item.location_code, "", "", "", "", "", "", item.lot.lot_code,
                item.lot.product, "", "", "", "", "", "", item.remaining, item.lot.uom,
                _optional(item, "root_share"), _optional(item, "root_quantity"),
            ])  # fmt: skip

    name = f"notifications-{request.path_params['lot_code']}.csv"
    return Response(
        b"".join(lines()),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


async def import_files(request: Request, upstreams: Any, metadata: Metadata) -> Response:
    """multipart/form-data with files `lots` and/or `genealogy`, streamed on as the body arrives."""
    # The caller's role first: a viewer's upload is refused before a byte of it is read.
    identity = request.app.state.verifier.verify(auth.bearer(request.headers.get("authorization")) or "")
    try:
        auth.require(identity, *UPLOAD_ROLES)
    except auth.PermissionDenied as exc:
        return failure_response(RpcFailure(exc.code, exc.message, exc.reason, exc.metadata))
    mode = IMPORT_MODES.get(request.query_params.get("mode", "strict"))
    if mode is None:
        return error_response(
            400,
            "INVALID_ARGUMENT",
            f"mode must be one of {', '.join(IMPORT_MODES)}",
            "FIELD_INVALID",
            {"field": "mode"},
        )
    refused: list[uploads.UploadError] = []

    async def chunks() -> AsyncIterator[genealogy_pb2.ImportChunk]:
        yield genealogy_pb2.ImportChunk(mode=mode)  # first, so a refused mode reads no file
        try:
            async for name, data in uploads.parts(request, UPLOAD_PARTS, settings().max_upload_bytes):
                if name == "lots":
                    yield genealogy_pb2.ImportChunk(lots_csv=data)
                else:
                    yield genealogy_pb2.ImportChunk(genealogy_csv=data)
        except uploads.UploadError as exc:  # stop the call: nothing of a refused upload is imported
            refused.append(exc)
            call.cancel()

    call = upstreams.genealogy.ImportGenealogy(chunks(), timeout=600, metadata=metadata)
    try:
        reply = await call
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        if not refused:
            raise
    if refused:
        return error_response(refused[0].status, "INVALID_ARGUMENT", refused[0].message, refused[0].reason)
    return Response(
        orjson.dumps(to_json(reply)), status_code=200 if reply.ok else 400, media_type="application/json"
    )


IMPORT_MODES = {
    "strict": genealogy_pb2.IMPORT_MODE_STRICT,
    "historical": genealogy_pb2.IMPORT_MODE_HISTORICAL,
}
IMPORT_MODE = {
    "name": "mode",
    "in": "query",
    "required": False,
    "description": "strict (default): a row that breaks a production-run rule refuses the import; historical "
    "(admin): loads the data as it was, each rule let through a warning, an audit row and the mass-balance flag "
    "HISTORICAL_IMPORT",
    "schema": {"type": "string", "enum": list(IMPORT_MODES), "default": "strict"},
}
# Who may upload (the genealogy service's policy for ImportGenealogy says the same; a test checks).
UPLOAD_ROLES = auth.OPERATE
UPLOAD_PARTS = frozenset({"lots", "genealogy"})


DIRECTION = {
    "name": "direction",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(enum_values(genealogy_pb2.Direction.DESCRIPTOR))},
}


def _errors(*codes: int) -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {str(c): {"description": "error", **ref} for c in codes}


def _lot_param() -> dict[str, Any]:
    from flowviz.core.validation import field_rule

    return {
        "name": "lot_code",
        "in": "path",
        "required": True,
        "schema": field_rule("", "lot_code", required=True),
    }


# (method, path, handler, OpenAPI operation)
STREAMING_ROUTES: list[tuple[str, str, Call, dict[str, Any]]] = [
    (
        "GET",
        "/api/traceability/{lot_code}/export.csv",
        trace_csv,
        {
            "summary": "The trace as a spreadsheet: one row per traceability event and input lot (FSMA 204 key data "
            "elements), streamed",
            "tags": ["traceability"],
            "operationId": "ExportTraceCsv",
            "parameters": [_lot_param(), DIRECTION],
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403, 404, 503, 504),
            },
        },
    ),
    (
        "GET",
        "/api/traceability/{lot_code}/export.jsonld",
        trace_jsonld,
        {
            "summary": "The trace as GS1 EPCIS 2.0 JSON-LD: production runs as TransformationEvents with input and "
            "output quantity lists, streamed",
            "tags": ["traceability"],
            "operationId": "ExportTraceJsonLd",
            "parameters": [_lot_param(), DIRECTION],
            "responses": {
                "200": {
                    "description": "EPCIS document",
                    "content": {"application/ld+json": {"schema": {"type": "object"}}},
                },
                **_errors(400, 401, 403, 404, 503, 504),
            },
        },
    ),
    (
        "GET",
        "/api/scenarios/{id}/export.csv",
        scenario_csv,
        {
            "summary": "A drill's frozen snapshot as a spreadsheet",
            "tags": ["drills"],
            "operationId": "ExportScenarioCsv",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403, 404, 503, 504),
            },
        },
    ),
    (
        "GET",
        "/api/recall/{lot_code}/notifications.csv",
        notifications_csv,
        {
            "summary": "A recall's notification list as a spreadsheet: a row per shipment of an affected lot (customer, "
            "contact, ship-to, document, quantity, root quantity), then a row per affected lot still in the plant",
            "tags": ["traceability"],
            "operationId": "ExportRecallNotificationsCsv",
            "parameters": [_lot_param()],
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 403, 404, 503, 504),
            },
        },
    ),
    (
        "POST",
        "/api/import",
        import_files,
        {
            "summary": "Bulk import lots.csv and/or genealogy.csv (multipart files `lots`, `genealogy`): every row "
            "validated, all imported or none, with a report of bad rows",
            "tags": ["import"],
            "operationId": "ImportGenealogy",
            "parameters": [IMPORT_MODE],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "lots": {"type": "string", "format": "binary"},
                                "genealogy": {"type": "string", "format": "binary"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "Imported",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ImportGenealogyResponse"}
                        }
                    },
                },
                "400": {
                    "description": "Rejected rows (nothing imported) or a malformed upload",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"$ref": "#/components/schemas/ImportGenealogyResponse"},
                                    {"$ref": "#/components/schemas/Error"},
                                ]
                            }
                        }
                    },
                },
                **_errors(401, 403, 413, 503, 504),
            },
        },
    ),
]


async def guarded(call: Call, request: Request, upstreams: Any, metadata: Metadata) -> Response:
    try:
        return await call(request, upstreams, metadata)
    except JsonInputError as exc:
        return error_response(400, "INVALID_ARGUMENT", f"{exc.field} {exc.message}", "FIELD_INVALID")
    except grpc.aio.AioRpcError as exc:
        return failure_response(from_rpc_error(exc))
