"""RenderExport: which rendering a request asks for, checked before the first byte (so a bad
request is a 400 and an unknown lot a 404, never a broken stream), as a stream of byte pieces
with the content type and file name the gateway passes on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from flowviz.core import validation
from flowviz.core.errors import InvalidArgument, NotFound
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import convert, epcis, exports, fsma204

CSV = "text/csv; charset=utf-8"
JSONLD = "application/ld+json"
# Every product, lot code and time: a lot's trace names its lots by id.
WHOLE: tuple[object, ...] = (None, None, None, *fsma204.WHOLE_TIME)


@dataclass(frozen=True)
class Rendering:
    pieces: AsyncIterator[bytes]
    content_type: str
    filename: str


async def _lot(pool: asyncpg.Pool, request: genealogy_pb2.RenderExportRequest) -> tuple[str, list[int]]:
    code = validation.lot_code(request.lot_code)
    direction = convert.DIRECTION_OF_ENUM.get(request.direction)
    if direction is None:
        raise InvalidArgument(
            "DIRECTION_INVALID", "direction must be upstream, downstream or both", field="direction"
        )
    ids = await exports.trace_lot_ids(pool, code, direction)
    if ids is None:
        raise NotFound("LOT_NOT_FOUND", f"lot {code} does not exist", lot_code=code)
    return code, ids


async def open_rendering(pool: asyncpg.Pool, request: genealogy_pb2.RenderExportRequest) -> Rendering:
    fmt = request.format
    if fmt == genealogy_pb2.EXPORT_FORMAT_TRACE_CSV:
        code, _ = await _lot(pool, request)
        direction = convert.DIRECTION_OF_ENUM[request.direction]
        return Rendering(exports.trace_csv(pool, code, direction), CSV, f"trace-{code}.csv")
    if fmt == genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV:
        if request.lot_code:
            code, ids = await _lot(pool, request)
            return Rendering(fsma204.render(pool, WHOLE, ids), CSV, f"fsma204-{code}.csv")
        args = _range(request)
        return Rendering(fsma204.render(pool, args), CSV, "fsma204.csv")
    if fmt == genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD:
        if request.lot_code:
            code, ids = await _lot(pool, request)
            return Rendering(epcis.render(pool, WHOLE, ids), JSONLD, f"epcis-{code}.jsonld")
        return Rendering(epcis.render(pool, _range(request)), JSONLD, "epcis.jsonld")
    raise InvalidArgument(
        "FORMAT_INVALID", "format must be fsma204_csv, epcis_jsonld or trace_csv", field="format"
    )


def _range(request: genealogy_pb2.RenderExportRequest) -> tuple[object, ...]:
    return fsma204.arguments(
        list(request.products), request.lot_code_from, request.lot_code_to, request.since, request.until
    )
