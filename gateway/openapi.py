"""The OpenAPI 3.1 document of /api/*, generated from the one route table (gateway/routes.py)
and the protos: parameters and bodies from the request messages and flowviz.core.validation's
rules, answers from the reply messages or the media type a route streams."""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.descriptor import Descriptor

from flowviz.core import importformat, units, validation
from flowviz.core.protojson import TIMESTAMP, field_schema, flat_schema, message_schema, schema_name
from flowviz.core.validation import field_rule
from flowviz.lots.v1 import lots_pb2
from gateway.routes import API, Route

ERROR_TEXT = {
    400: "Malformed input: the error names the field and the rule",
    401: "Missing, expired or invalid bearer token",
    403: "The caller's role may not do this",
    404: "Not found",
    409: "Conflict with the current data (duplicate, insufficient quantity, held lot, disallowed transition)",
    413: "Body too large",
    422: "Idempotency key reused with a different body",
    429: "Too many requests",
    503: "A part of the system is down",
    504: "An upstream did not answer in time",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "reason", "message"],
            "properties": {
                "code": {"type": "string", "description": "gRPC status name"},
                "reason": {"type": "string", "description": "machine-readable reason (google.rpc.ErrorInfo)"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    },
}
HEALTH_SCHEMA = {
    "type": "object",
    "required": ["status", "components"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable", "starting"]},
        "components": {"type": "object"},
        "failing": {"type": "array", "items": {"type": "string"}},
        "checked_at": {"type": "string", "format": "date-time"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _field(descriptor: Descriptor, name: str, required: bool, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """The input rule of a field (flowviz.core.validation), else its plain type."""
    field = descriptor.fields_by_name[name]
    if field.message_type is not None and field.message_type.full_name != TIMESTAMP:
        key = f"{descriptor.name}.{name}"
        item = _request_schema(
            field.message_type, refs, required=validation.NESTED_REQUIRED.get(key, ()),
            ignored=validation.NESTED_IGNORED.get(key, ()),
        )  # fmt: skip
        if field.is_repeated:
            return {"type": "array", "items": item, "minItems": 1, "maxItems": validation.MAX_ITEMS}
        return item
    rule = field_rule(descriptor.name, name, required=required)
    if rule is None:
        return field_schema(field, refs)
    schema = dict(rule)
    if schema.get("type") == "integer":
        # A rule narrows the field's type; it keeps the type's own range (an id past int64 is a 400).
        for bound, value in field_schema(field, refs).items():
            if bound in ("minimum", "maximum"):
                schema.setdefault(bound, value)
    return schema


def _request_schema(
    descriptor: Descriptor,
    refs: dict[str, Descriptor],
    skip: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
) -> dict[str, Any]:
    props = {
        f.name: {"type": "string", "description": "not read here"}
        if f.name in ignored
        else _field(descriptor, f.name, f.name in required, refs)
        for f in descriptor.fields
        if f.name not in skip
    }
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    if conditions := validation.CONDITIONS.get(descriptor.name):
        schema["allOf"] = conditions
    if words := validation.IN_WORDS.get(descriptor.name):
        schema["description"] = words
    return schema


def _parameter_schema(route: Route, name: str, required: bool, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """What a parameter takes: the route's own shape for it, else the rule of its field, else (a
    repeated field) the rule of one value under the parameter's name, else the field's type."""
    if name in route.shapes:
        return route.shapes[name]
    field_name = route.field_of(name)
    field = route.input.fields_by_name[field_name]
    if field.is_repeated and field_rule(route.input.name, field_name, required=required) is None:
        item = field_rule(route.input.name, name, required=True)
        return {"type": "array", "items": dict(item)} if item else field_schema(field, refs)
    return _field(route.input, field_name, required, refs)


def _parameters(route: Route, refs: dict[str, Descriptor]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    places = [
        *((name, "path", True) for name in route.path_params),
        *((name, "query", name in route.required_query) for name in route.query),
        *((header, "header", False) for header in route.headers),
    ]
    for name, where, required in places:
        param: dict[str, Any] = {"name": name, "in": where, "required": required}
        if name in route.notes:
            param["description"] = route.notes[name]
        param["schema"] = (
            _parameter_schema(route, name, required, refs)
            if where != "header"
            else route.shapes.get(name) or _field(route.input, route.headers[name], False, refs)
        )
        if where == "query" and param["schema"].get("type") == "array":
            param |= {"style": "form", "explode": True}  # product=a&product=b
        params.append(param)
    return params


def _operation(route: Route, refs: dict[str, Descriptor]) -> dict[str, Any]:
    params = _parameters(route, refs)
    op: dict[str, Any] = {
        "security": [] if route.public else [{"bearerAuth": []}],
        "summary": route.summary,
        "tags": [route.tag],
        "operationId": route.operation_id,
        "parameters": params,
    }
    if route.kind != "json":
        return op | STREAMED[route.kind](route, refs)
    if route.body:
        skip = (*route.path_params, *route.headers.values())
        body = _request_schema(route.input, refs, skip, route.required)
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    refs[schema_name(route.output)] = route.output
    ok = _ref(schema_name(route.output))
    if route.flatten:  # its own schema, with the flattened fields' items in their flat form
        name = schema_name(route.output) + "Json"
        schema = message_schema(route.output, refs)
        for field_name in route.flatten:
            field = route.output.fields_by_name[field_name]
            assert field.message_type is not None
            flat_name = schema_name(field.message_type) + "Flat"
            FLAT[flat_name] = flat_schema(field.message_type, refs)
            item = _ref(flat_name)
            schema["properties"][field_name] = (
                {"type": "array", "items": item} if field.is_repeated else {"anyOf": [item, {"type": "null"}]}
            )
        FLAT[name] = schema
        ok = _ref(name)
    statuses = {route.status, *((200, 201) if route.status_of else ())}
    op["responses"] = {str(s): _json(ok, "OK") for s in sorted(statuses)} | _errors(route)
    return op


def _errors(route: Route) -> dict[str, Any]:
    codes = (*route.errors, *((401,) if route.public else (401, 403)), 503, 504)
    return {str(code): _json(_ref("Error"), ERROR_TEXT[code]) for code in codes}


def _csv_file(columns: tuple[str, ...], rules: str) -> dict[str, Any]:
    header = ",".join(columns)
    return {
        "type": "string",
        "format": "binary",
        "contentMediaType": "text/csv",
        "minLength": len(header),
        # The header row, then one row per line (pattern: the file begins with its header).
        "pattern": f"^{header}(\\r?\\n|$)",
        "description": f"UTF-8 CSV, first row `{header}`; {rules}",
    }


IMPORT_ROWS = (
    "Each row is checked on its own (the columns' rules are those of the JSON routes: "
    "lot codes, kind, product, a decimal quantity with at most 3 decimals, a unit of "
    f"{', '.join(sorted(units.UNITS))}) and against the other rows and the data (a lot once, not "
    "already there; edges between lots that exist or come in the file). Any bad row: 400 with the "
    "report (file, row, field, reason) and nothing imported."
)


def _replies(route: Route, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """An upload's answers: its reply (a report) for the statuses it lists, which past 2xx may be
    an Error instead (a malformed request); then the route's errors."""
    refs[schema_name(route.output)] = route.output
    reply = _ref(schema_name(route.output))
    either = {"anyOf": [reply, _ref("Error")]}
    answers = {
        str(status): _json(reply if status < 300 else either, words)
        for status, words in route.replies.items()
    }
    return answers | _errors(route)


def _bytes(route: Route, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """An export the service renders: a CSV file, or a JSON(-LD) document."""
    csv = route.media_type.startswith("text/")
    schema = {"type": "string" if csv else "object"}
    ok = {
        "description": "CSV" if csv else "JSON-LD document",
        "content": {route.media_type: {"schema": schema}},
    }
    return {"responses": {"200": ok} | _errors(route)}


def _upload(route: Route, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """The import's files as the documented CSV formats (the importer's own column lists)."""
    files = {
        "lots": _csv_file(
            importformat.LOTS_COLUMNS, "produced_at may be empty (ISO 8601, UTC if no offset)."
        ),
        "genealogy": _csv_file(importformat.GENEALOGY_COLUMNS, "run_code may be empty (one run per child)."),
    }
    schema = {
        "type": "object",
        "properties": files,
        "additionalProperties": False,
        "anyOf": [{"required": [name]} for name in files],
        "description": IMPORT_ROWS,
    }
    form = {"schema": schema, "encoding": {name: {"contentType": "text/csv"} for name in files}}
    body = {"required": True, "content": {"multipart/form-data": form}}
    return {"requestBody": body, "responses": _replies(route, refs)}


def _document(route: Route, refs: dict[str, Descriptor]) -> dict[str, Any]:
    """A document sent on as it is (EPCIS 2.0, JSON or JSON-LD)."""
    content = {media: {"schema": {"type": "object"}} for media in ("application/json", "application/ld+json")}
    body = {"required": True, "description": route.body_note, "content": content}
    return {"requestBody": body, "responses": _replies(route, refs)}


STREAMED = {"bytes": _bytes, "upload": _upload, "document": _document}


# Schemas of flattened replies, filled while the operations are built.
FLAT: dict[str, Any] = {}


def build() -> dict[str, Any]:
    refs: dict[str, Descriptor] = {}
    paths: dict[str, Any] = {
        "/api/health": {
            "get": {
                "security": [],
                "summary": "Readiness of every service, the database and the cache",
                "tags": ["system"],
                "operationId": "Health",
                "responses": {
                    "200": _json(_ref("Health"), "All healthy"),
                    "503": _json(_ref("Health"), "Something is down"),
                },
            }
        }
    }
    for route in API:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA, "Health": HEALTH_SCHEMA, **FLAT}
    refs["Lot"] = lots_pb2.Lot.DESCRIPTOR
    done: set[str] = set()
    while set(refs) - done:  # message schemas pull in the messages they reference
        for name in sorted(set(refs) - done):
            schemas[name] = message_schema(refs[name], refs)
            done.add(name)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowviz",
            "version": "1",
            "description": "Lot traceability for food manufacturing. Errors are "
            '`{"error": {"code", "reason", "message", "details"}}`; every response carries `x-request-id`.',
        },
        "paths": paths,
        "security": [{"bearerAuth": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "POST /api/auth/token with a username and password",
                }
            },
        },
    }


DOCUMENT = build()
DOCUMENT_JSON = orjson.dumps(DOCUMENT)
