"""The exports this service renders: which rendering a request asks for, checked before the
first byte (so a bad request is a 400 and an unknown lot a 404, never a broken stream), as a
stream of byte pieces with the content type and file name the gateway passes on. RenderExport's
(FSMA 204, EPCIS, the trace CSV), then the spreadsheets of a drill and of a recall's
notification list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from google.protobuf.message import Message

from flowviz.core import validation
from flowviz.core.csvcells import Sheet
from flowviz.core.errors import InvalidArgument, NotFound
from flowviz.core.protojson import timestamp
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


# --- spreadsheets of answers this service gives (a drill, a recall's notification list) ----------


def csv_line(values: Iterable[object]) -> bytes:
    """One row as the spreadsheets below write it (each cell through the OWASP rule)."""
    sheet = Sheet()
    sheet.row(values)
    return sheet.take()


async def _sheet(rows: Iterable[Iterable[object]]) -> AsyncIterator[bytes]:
    sheet = Sheet()
    for row in rows:
        sheet.row(row)
        if sheet.full():
            yield sheet.take()
    if last := sheet.take():
        yield last


SCENARIO_COLUMNS = (
    "relation", "lot_code", "kind", "product", "quantity", "uom", "status", "depth", "path_count",
    "share_of_root_in_lot", "root_quantity_in_lot", "share_of_lot_in_root", "effective_status", "blocking_lots",
    "decision", "decision_reason", "decided_by", "decided_at", "signer", "signer_name", "signed_at", "signature_meaning",
)  # fmt: skip
_LOT_WIDTH = SCENARIO_COLUMNS.index("decision")  # the lot columns; the decision columns follow


def scenario_csv(scenario: genealogy_pb2.Scenario) -> Rendering:
    """A drill's frozen snapshot: the root, the downstream and upstream lots of its recall, then
    its accounting (_accountability_rows). Read from the snapshot's JSON as it was frozen."""
    snapshot: dict[str, Any] = (
        orjson.loads(scenario.snapshot_json) if scenario.snapshot_json else None
    ) or {}
    recall = snapshot.get("recall") or {}

    def rows() -> Iterator[list[object]]:
        yield list(SCENARIO_COLUMNS)
        for relation, items in (
            ("root", [recall.get("root")]),
            ("downstream", recall.get("downstream", [])),
            ("upstream", recall.get("upstream", [])),
        ):
            for lot in items:
                if lot:
                    yield [
                        relation, lot["lot_code"], lot["kind"], lot["product"], lot["quantity"], lot["uom"],
                        lot["status"], lot["depth"], lot["path_count"], lot.get("root_share"),
                        lot.get("root_quantity"), lot.get("share"), lot.get("effective_status"),
                        " ".join(b["lot_code"] for b in lot.get("blocking") or ()),
                    ] + [None] * (len(SCENARIO_COLUMNS) - _LOT_WIDTH)  # fmt: skip
        yield from _decision_rows(snapshot.get("qc_decisions") or ())
        yield from _accountability_rows(snapshot.get("accountability"), len(SCENARIO_COLUMNS))

    return Rendering(_sheet(rows()), CSV, "")


def _decision_rows(decisions: Iterable[dict[str, Any]]) -> Iterator[list[object]]:
    """The snapshot's QC decisions (relation qc_decision), each with its electronic signature as
    it was when the drill froze (empty signature cells when the decision was not signed)."""
    for d in decisions:
        signature = d.get("signature") or {}
        cells: list[object] = ["qc_decision", d["lot_code"]] + [None] * (_LOT_WIDTH - 2)
        cells += [
            d["decision"], d["reason"], d["decided_by"], d["decided_at"], signature.get("signer"),
            signature.get("signer_name"), signature.get("signed_at"), signature.get("meaning"),
        ]  # fmt: skip
        yield cells


def _accountability_rows(drill: dict[str, Any] | None, width: int) -> Iterator[list[object]]:
    """The drill's accounting as rows `accountability:<figure>`: lot_code (a child or a run's lot),
    kind (a run's flag), product (its run code), quantity and uom; root_quantity_in_lot is the root
    material a child's edges carried; status of the verdict row is pass or fail."""
    if not drill:
        return
    unit = drill["unit"]

    def row(figure: str, quantity: Any, lot_code: str = "", kind: str = "", product: str = "",
            status: str = "", root: Any = None) -> list[object]:  # fmt: skip
        cells: list[object] = [f"accountability:{figure}", lot_code, kind, product, quantity, unit, status]
        cells += [None] * (width - len(cells))
        cells[10] = root
        return cells

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


NOTIFICATION_COLUMNS = (
    "relation", "customer_code", "customer_name", "contact_name", "contact_email", "contact_phone",
    "location_code", "location_name", "location_gln", "address", "city", "postal_code", "country",
    "lot_code", "product", "depth", "shipment_id", "shipped_at", "document_type", "document_number", "carrier_code",
    "quantity", "uom", "root_share", "root_quantity",
)  # fmt: skip


def _optional(message: Message, name: str) -> object:
    return getattr(message, name) if message.HasField(name) else ""


def notifications_csv(code: str, reply: genealogy_pb2.GetRecallNotificationsResponse) -> Rendering:
    """A recall's notification list (GetRecallNotifications' answer): one row per shipment, then
    one per affected lot still in the plant (relation in_plant, customer columns empty)."""

    def rows() -> Iterator[list[object]]:
        yield list(NOTIFICATION_COLUMNS)
        for c in reply.customers:
            for place in c.locations:
                for n in place.shipments:
                    s = n.shipment
                    yield [
                        "shipment", c.customer_code, c.name, c.contact_name, c.contact_email, c.contact_phone,
                        place.location_code, place.name, place.gln, place.address, place.city, place.postal_code,
                        place.country, s.lot_code, s.product, n.depth, s.id, timestamp(s.shipped_at),
                        s.document_type, s.document_number, s.carrier_code, s.quantity, s.uom,
                        _optional(n, "root_share"), _optional(n, "root_quantity"),
                    ]  # fmt: skip
        for item in reply.in_plant:
            yield [
                "in_plant", "", "", "", "", "", item.location_code, "", "", "", "", "", "", item.lot.lot_code,
                item.lot.product, "", "", "", "", "", "", item.remaining, item.lot.uom,
                _optional(item, "root_share"), _optional(item, "root_quantity"),
            ]  # fmt: skip

    return Rendering(_sheet(rows()), CSV, f"notifications-{code}.csv")
