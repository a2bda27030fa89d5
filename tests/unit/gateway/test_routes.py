"""gateway/routes.py and gateway/relay.py: the one route table, every entry naming an RPC of the
right shape and fields its request has, and the requests the relay builds from a path and a
query (Starlette requests made from an ASGI scope: no server)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from flowviz.core.protojson import JsonInputError
from flowviz.genealogy.v1 import genealogy_pb2
from gateway.relay import HANDLERS, request_of
from gateway.routes import API, ROUTES, SERVICES, Route

# The RPC shape each kind of route needs: (client streaming, server streaming).
SHAPES = {"json": (False, False), "bytes": (False, True), "upload": (True, False), "document": (False, False)}


def route(method: str, path: str) -> Route:
    return next(r for r in API if (r.method, r.path) == (method, path))


def request(params: dict[str, str], query: dict[str, str] | list[tuple[str, str]] | None = None) -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "path_params": params,
             "query_string": urlencode(query or {}, doseq=True).encode()}  # fmt: skip
    return Request(scope)


def test_each_route_is_declared_once() -> None:
    twice = [key for key, n in Counter((r.method, r.path) for r in API).items() if n > 1]
    assert not twice
    assert len({r.operation_id for r in API}) == len(API)  # operationIds are unique in OpenAPI


@pytest.mark.parametrize("entry", API, ids=lambda r: f"{r.method} {r.path}")
def test_each_route_names_an_rpc_of_its_shape_and_fields_its_request_has(entry: Route) -> None:
    method = SERVICES[entry.upstream].methods_by_name[entry.rpc]
    assert (method.client_streaming, method.server_streaming) == SHAPES[entry.kind]
    if entry.kind == "bytes":
        assert method.output_type.name == "RenderedChunk" and entry.media_type
    fields = entry.input.fields_by_name
    if entry.kind != "upload":  # the import's path has no parameters; its mode is read by the relay
        for name in (*entry.path_params, *entry.query):
            assert entry.field_of(name) in fields, name
        assert all(field in fields for field in (*entry.headers.values(), *entry.fixed, *entry.required))
    assert set(entry.required_query) <= set(entry.query)
    assert entry.kind == "json" or entry.kind in HANDLERS


def test_routes_is_the_json_part_of_the_table() -> None:
    assert [r for r in API if r.kind == "json"] == ROUTES
    assert {r.kind for r in API} == set(SHAPES)


def test_a_lot_export_request_takes_the_path_the_query_and_its_format() -> None:
    entry = route("GET", "/api/traceability/{lot_code}/export.jsonld")
    message = request_of(entry, request({"lot_code": "FG-1"}, {"direction": "upstream"}))
    assert message == genealogy_pb2.RenderExportRequest(
        lot_code="FG-1",
        direction=genealogy_pb2.DIRECTION_UPSTREAM,
        format=genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD,
    )


def test_a_range_export_maps_http_names_to_fields_and_repeats_a_list() -> None:
    entry = route("GET", "/api/fsma204")
    query = [("product", "Doner"), ("product", "Salt"), ("from", "2026-01-01"), ("to", "2026-02-01"),
             ("lot_code_to", "Z")]  # fmt: skip
    message = request_of(entry, request({}, query))
    assert message == genealogy_pb2.RenderExportRequest(
        products=["Doner", "Salt"], since="2026-01-01", until="2026-02-01", lot_code_to="Z",
        format=genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV,
    )  # fmt: skip


def test_a_drill_export_reads_its_id_and_refuses_one_that_is_no_number() -> None:
    entry = route("GET", "/api/scenarios/{id}/export.csv")
    assert request_of(entry, request({"id": "42"})) == genealogy_pb2.RenderScenarioCsvRequest(id=42)
    with pytest.raises(JsonInputError) as refused:
        request_of(entry, request({"id": "forty-two"}))
    assert refused.value.field == "id"


def test_a_bad_direction_is_refused_naming_it() -> None:
    entry = route("GET", "/api/traceability/{lot_code}/export.csv")
    with pytest.raises(JsonInputError) as refused:
        request_of(entry, request({"lot_code": "FG-1"}, {"direction": "sideways"}))
    assert refused.value.field == "direction"
