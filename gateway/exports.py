"""Routes that stream: the exports the genealogy service renders (FSMA 204 CSV, EPCIS 2.0 JSON-LD,
relayed as bytes by gateway/relay.py), a drill's CSV, and the bulk import (multipart upload
streamed to the genealogy service). Nothing is held whole in the gateway."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response

from flowviz.core import auth
from flowviz.core.config import settings
from flowviz.core.protojson import enum_values, fill, to_json
from flowviz.genealogy.v1 import genealogy_pb2
from gateway import relay, uploads
from gateway.csvcells import neutralise
from gateway.errors import error_response

Metadata = tuple[tuple[str, str], ...]
Call = Callable[[Request, Any, Metadata], Awaitable[Response]]


def _csv_line(values: Iterable[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(map(neutralise, values))
    return buffer.getvalue().encode()


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
    auth.require(identity, *UPLOAD_ROLES)
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
        raise refused[0]
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
        relay.relay(relay.of_lot(genealogy_pb2.EXPORT_FORMAT_TRACE_CSV)),
        {
            "summary": "The trace as a spreadsheet: one row per transformation and input lot, receipt and shipment "
            "(FSMA 204 key data elements), rendered by the genealogy service and streamed",
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
        relay.relay(relay.of_lot(genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD)),
        {
            "summary": "The trace as GS1 EPCIS 2.0 JSON-LD (valid by GS1's schema): receipts and shipments as "
            "ObjectEvents, production runs as TransformationEvents with input and output quantity lists, lots and "
            "locations as master data; rendered by the genealogy service and streamed",
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


def _range_params() -> list[dict[str, Any]]:
    when = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
    code = {"type": "string", "pattern": r"^[^\x00-\x1f]*$", "maxLength": 64}
    return [
        {"name": "product", "in": "query", "required": False, "style": "form", "explode": True,
         "description": "a product (repeat for a list); none: every product",
         "schema": {"type": "array", "items": {"type": "string"}}},
        {"name": "from", "in": "query", "required": True, "schema": when,
         "description": "start of the time range: a date (YYYY-MM-DD) or an RFC 3339 time; before `to` (400 "
                        "TIME_RANGE_INVALID)"},
        {"name": "to", "in": "query", "required": True, "schema": when,
         "description": "end of the time range: a date (inclusive) or an RFC 3339 time (exclusive)"},
        {"name": "lot_code_from", "in": "query", "required": False, "schema": code,
         "description": "lowest traceability lot code (or lot code) of the range; not after `lot_code_to` (400 "
                        "LOT_CODE_RANGE_INVALID)"},
        {"name": "lot_code_to", "in": "query", "required": False, "schema": code,
         "description": "highest traceability lot code (or lot code) of the range"},
    ]  # fmt: skip


def _csv_operation(summary: str, operation_id: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["traceability"],
        "operationId": operation_id,
        "parameters": parameters,
        "responses": {
            "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
            **_errors(400, 401, 403, 404, 503, 504),
        },
    }


# Rendered by the genealogy service (RenderExport) and relayed as bytes (gateway/relay.py).
STREAMING_ROUTES += [
    (
        "GET",
        "/api/fsma204",
        relay.relay(relay.of_range(genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV)),
        _csv_operation(
            "The FSMA 204 electronic sortable spreadsheet for an FDA request: every receiving, transformation and "
            "shipping event of the products (and/or the lot code range) in the time range, with its key data "
            "elements, streamed",
            "ExportFsma204",
            _range_params(),
        ),
    ),
    (
        "GET",
        "/api/epcis",
        relay.relay(relay.of_range(genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD)),
        {
            "summary": "Every receiving, transformation and shipping event of the products (and/or the lot code range) "
            "in the time range as one GS1 EPCIS 2.0 JSON-LD document (valid by GS1's schema), streamed",
            "tags": ["traceability"],
            "operationId": "ExportEpcis",
            "parameters": _range_params(),
            "responses": {
                "200": {
                    "description": "EPCIS document",
                    "content": {"application/ld+json": {"schema": {"type": "object"}}},
                },
                **_errors(400, 401, 403, 503, 504),
            },
        },
    ),
    (
        "GET",
        "/api/traceability/{lot_code}/fsma204.csv",
        relay.relay(relay.of_lot(genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV)),
        _csv_operation(
            "The FSMA 204 sortable spreadsheet of one lot's trace (every receiving, transformation and shipping "
            "event of its lots), streamed",
            "ExportTraceFsma204",
            [_lot_param(), DIRECTION],
        ),
    ),
]


def _capture_reply(description: str) -> dict[str, Any]:
    schema = {
        "anyOf": [
            {"$ref": "#/components/schemas/CaptureEpcisResponse"},
            {"$ref": "#/components/schemas/Error"},
        ]
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


STREAMING_ROUTES.append(
    (
        "POST",
        "/api/epcis/capture",
        relay.capture,
        {
            "summary": "Capture an EPCIS 2.0 JSON(-LD) document (ObjectEvents receiving and shipping, TransformationEvents "
            "for runs): validated against GS1's EPCIS 2.0 JSON Schema and flowviz's rules, every event recorded in one "
            "transaction or none (Idempotency-Key: a retry replays it), with a report per event",
            "tags": ["traceability"],
            "operationId": "CaptureEpcis",
            "parameters": [
                {
                    "name": "idempotency-key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 180},
                }
            ],
            "requestBody": {
                "required": True,
                "description": "An EPCIS 2.0 document (JSON or JSON-LD) that validates against GS1's EPCIS 2.0 JSON "
                "Schema, https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json (400 EPCIS_SCHEMA_INVALID otherwise)",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/ld+json": {"schema": {"type": "object"}},
                },
            },
            "responses": {
                "201": _capture_reply("Every event recorded"),
                "200": _capture_reply("Recorded earlier under this Idempotency-Key (replayed)"),
                "400": _capture_reply(
                    "Nothing recorded: an event is malformed (the report says which and why), or the "
                    "document is no EPCIS 2.0 document (an Error)"
                ),
                "404": _capture_reply(
                    "Nothing recorded: an event names a lot, partner or location that does not exist"
                ),
                "409": _capture_reply(
                    "Nothing recorded: an event is refused by the data (not enough left, a lot on hold, "
                    "a lot that exists)"
                ),
                **_errors(401, 403, 413, 422, 503, 504),
            },
        },
    )
)
