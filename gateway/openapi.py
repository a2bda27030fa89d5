"""The OpenAPI 3.1 document of /api/*, and a self-contained HTML page for people (no CDN)."""

from __future__ import annotations

import html
from typing import Any

import orjson

from flowviz.core.validation import LOT_CODE_MAX, LOT_CODE_PATTERN, UNITS

LOT_CODE = {"type": "string", "pattern": LOT_CODE_PATTERN.pattern, "maxLength": LOT_CODE_MAX}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed input",
        404: "Not found",
        409: "Conflict",
        503: "A part of the system is down",
        504: "An upstream did not answer in time",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _path_lot() -> dict[str, Any]:
    return {"name": "lot_code", "in": "path", "required": True, "schema": LOT_CODE}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_LOT_PROPS: dict[str, Any] = {
    "lot_code": LOT_CODE,
    "kind": {"type": "string", "examples": ["RAW", "MIX", "FG"]},
    "product": {"type": "string"},
    "quantity": {"type": "number"},
    "uom": {"type": "string", "enum": sorted(UNITS)},
    "status": {"type": "string", "enum": ["pending", "passed", "on_hold", "released", "rejected"]},
    "produced_at": {"type": ["string", "null"], "format": "date-time"},
    "created_at": {"type": ["string", "null"], "format": "date-time"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "reason", "message"],
                "properties": {
                    "code": {"type": "string", "description": "gRPC status name"},
                    "reason": {
                        "type": "string",
                        "description": "machine-readable reason (google.rpc.ErrorInfo)",
                    },
                    "message": {"type": "string"},
                    "details": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        },
    },
    "Lot": {"type": "object", "required": list(_LOT_PROPS), "properties": _LOT_PROPS},
    "LinkedLot": {
        "type": "object",
        "required": [*_LOT_PROPS, "edge_quantity", "edge_uom"],
        "properties": {
            **_LOT_PROPS,
            "edge_quantity": {"type": "number", "description": "quantity that moved along the edge"},
            "edge_uom": {"type": "string"},
            "run_code": {"type": ["string", "null"]},
        },
    },
    "Traceability": {
        "type": "object",
        "required": ["lot", "parents", "children"],
        "properties": {
            "lot": _ref("Lot"),
            "parents": {"type": "array", "items": _ref("LinkedLot")},
            "children": {"type": "array", "items": _ref("LinkedLot")},
        },
    },
    "NewLot": {
        "type": "object",
        "required": ["lot_code", "kind", "product", "quantity", "uom"],
        "properties": {
            "lot_code": LOT_CODE,
            "kind": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,15}$"},
            "product": {"type": "string", "minLength": 1, "maxLength": 200},
            "quantity": {"type": "number", "minimum": 0},
            "uom": {"type": "string", "enum": sorted(UNITS)},
            "produced_at": {"type": "string", "format": "date-time"},
        },
    },
    "QcDecision": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "lot_code": LOT_CODE,
            "gate_code": {"type": ["string", "null"]},
            "decision": {"type": "string", "enum": ["pass", "hold", "release", "reject"]},
            "reason": {"type": "string"},
            "decided_by": {"type": "string"},
            "decided_at": {"type": ["string", "null"], "format": "date-time"},
            "supersedes_id": {"type": ["integer", "null"]},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "components"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable", "starting"]},
            "components": {"type": "object"},
            "failing": {"type": "array", "items": {"type": "string"}},
            "checked_at": {"type": "string", "format": "date-time"},
        },
    },
}

PAGE = [
    _query("page_size", {"type": "integer", "minimum": 0, "maximum": 500}, "default 50"),
    _query("page_token", {"type": "string"}, "next_page_token of the previous page"),
]

PATHS: dict[str, Any] = {
    "/api/health": {
        "get": {
            "summary": "Readiness of every service, the database and the cache",
            "responses": {
                "200": _json(_ref("Health"), "All healthy"),
                "503": _json(_ref("Health"), "Something is down"),
            },
        }
    },
    "/api/traceability/{lot_code}": {
        "get": {
            "summary": "A lot with its direct parents and children",
            "parameters": [_path_lot()],
            "responses": {
                "200": _json(_ref("Traceability"), "The lot and its neighbours"),
                **_errors(400, 404, 503),
            },
        }
    },
    "/api/lots": {
        "get": {
            "summary": "List lots",
            "parameters": [
                _query("kind", {"type": "string"}, "RAW, MIX, FG, ..."),
                _query("product", {"type": "string"}, "exact product name"),
                *PAGE,
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "lots": {"type": "array", "items": _ref("Lot")},
                            "next_page_token": {"type": ["string", "null"]},
                        },
                    },
                    "A page of lots",
                ),
                **_errors(400, 503),
            },
        },
        "post": {
            "summary": "Create a lot",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewLot")}}},
            "responses": {
                "201": _json({"type": "object", "properties": {"lot": _ref("Lot")}}, "Created"),
                **_errors(400, 409, 503),
            },
        },
    },
    "/api/lots/{lot_code}": {
        "get": {
            "summary": "One lot",
            "parameters": [_path_lot()],
            "responses": {
                "200": _json({"type": "object", "properties": {"lot": _ref("Lot")}}, "The lot"),
                **_errors(400, 404, 503),
            },
        }
    },
    "/api/lots/{lot_code}/qc-status": {
        "get": {
            "summary": "The lot's own QC status",
            "parameters": [_path_lot()],
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"lot_code": LOT_CODE, "status": {"type": "string"}}},
                    "Status",
                ),
                **_errors(400, 404, 503),
            },
        }
    },
    "/api/lots/{lot_code}/qc-decisions": {
        "get": {
            "summary": "The lot's QC audit trail, oldest first",
            "parameters": [_path_lot(), *PAGE],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "decisions": {"type": "array", "items": _ref("QcDecision")},
                            "next_page_token": {"type": ["string", "null"]},
                        },
                    },
                    "Decisions",
                ),
                **_errors(400, 404, 503),
            },
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "flowviz",
        "version": "1",
        "description": "Lot traceability for food manufacturing. Errors are "
        '`{"error": {"code", "reason", "message"}}`; every response carries `x-request-id`.',
    },
    "paths": PATHS,
    "components": {"schemas": SCHEMAS},
}
DOCUMENT_JSON = orjson.dumps(DOCUMENT)


def _docs_html() -> str:
    rows = []
    for path, ops in PATHS.items():
        for method, op in ops.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            codes = ", ".join(op["responses"])
            rows.append(
                f"<tr><td><b>{method.upper()}</b></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td><td>{codes}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>flowviz API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;"
        "text-align:left}</style></head><body><h1>flowviz API</h1>"
        "<p>Machine-readable document: <a href='/api/openapi.json'>/api/openapi.json</a>.</p>"
        "<table><tr><th>method</th><th>path</th><th>what</th><th>parameters</th><th>responses</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


DOCS_HTML = _docs_html()
