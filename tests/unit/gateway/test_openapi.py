"""gateway/openapi.py: the document generated from the route table describes every route of it,
streaming ones included, with schemas that are JSON Schema 2020-12 (OpenAPI 3.1's dialect) and
references that resolve."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.openapi import DOCUMENT
from gateway.routes import API, Route

OPERATIONS = {(m.upper(), path): op for path, ops in DOCUMENT["paths"].items() for m, op in ops.items()}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_route_and_only_those_and_health() -> None:
    assert set(OPERATIONS) == {(r.method, r.path) for r in API} | {("GET", "/api/health")}


@pytest.mark.parametrize("entry", API, ids=lambda r: f"{r.method} {r.path}")
def test_each_operation_says_what_its_route_takes_and_answers(entry: Route) -> None:
    op = OPERATIONS[entry.method, entry.path]
    assert op["operationId"] == entry.operation_id and op["security"] == (
        [] if entry.public else [{"bearerAuth": []}]
    )
    places = {(p["in"], p["name"]): p["required"] for p in op["parameters"]}
    assert [name for (where, name) in places if where == "query"] == list(entry.query)
    assert all(places["path", name] for name in entry.path_params)
    assert {name for (where, name), required in places.items() if where == "query" and required} == set(
        entry.required_query
    )
    responses = op["responses"]
    assert {"401", "503", "504"} <= set(responses)
    if entry.kind == "bytes":
        assert set(responses["200"]["content"]) == {entry.media_type}
    if entry.kind in ("upload", "document"):
        assert {str(s) for s in entry.replies} <= set(responses) and op["requestBody"]["required"]


def test_the_schemas_are_json_schema_2020_12_and_every_reference_resolves() -> None:
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for op in OPERATIONS.values():
        for param in op.get("parameters", ()):
            Draft202012Validator.check_schema(param["schema"])
    targets = {f"#/components/schemas/{name}" for name in DOCUMENT["components"]["schemas"]}
    assert set(refs(DOCUMENT)) <= targets
