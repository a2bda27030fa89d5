"""EPCIS 2.0 capture: a JSON(-LD) document from a partner or a line system, checked against GS1's
EPCIS 2.0 JSON Schema, its events read as flowviz's own requests (an ObjectEvent receiving: a
receipt; shipping: a shipment; a TransformationEvent: a production run) and checked by the same
rules, then recorded in one transaction: every event or none. The answer reports each event.

Identifiers are read as services/genealogy/epcis.py writes them (and GS1's: an LGTIN's lot, a
PGLN or SGLN looked up by GLN); what events do not carry (a lot's product and kind, the
supplier's lot code, the expiry) comes from the document's master data, else defaults (the
lot code as the supplier's, kind RAW for a receipt and WIP for a run's output).

With an Idempotency-Key, event i is recorded under "{key}:{i}", so a retry replays every
event (the same body) or fails with 422 (another body), as the native routes do."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import asyncpg
import grpc
import orjson
from google.protobuf.message import Message

from flowviz.core import audit
from flowviz.core import epcis as gs1
from flowviz.core.constraints import database_error
from flowviz.core.db import Conn
from flowviz.core.errors import DomainError, InvalidArgument
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import epcis, receiving, runs, shipping

if TYPE_CHECKING:
    import jsonschema

SCHEMA_FILE = Path(__file__).with_name("EPCIS-JSON-Schema.json")
MAX_EVENTS = 10_000
KEY_MAX = 180
CBV_PREFIXES = (
    "urn:epcglobal:cbv:bizstep:",
    "https://ref.gs1.org/cbv/BizStep-",
    "https://gs1.org/voc/BizStep-",
)
BTT_PREFIXES = ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-", "https://gs1.org/voc/BTT-")
SDT_PREFIXES = ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-", "https://gs1.org/voc/SDT-")
# What is wrong with a rejected event: a gRPC code per reason kind, for the HTTP status.
CODE_OF_ERROR = {
    grpc.StatusCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    grpc.StatusCode.NOT_FOUND: "NOT_FOUND",
    grpc.StatusCode.FAILED_PRECONDITION: "FAILED_PRECONDITION",
    grpc.StatusCode.ALREADY_EXISTS: "ALREADY_EXISTS",
}


@cache
def validator() -> jsonschema.Draft7Validator:
    # Imported on the first capture: jsonschema and its format checkers are about 10 MB of
    # memory that a genealogy service nobody captures into never needs.
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


class Rejected(Exception):
    """One event that cannot be recorded: a reason, a message naming the field, a gRPC code."""

    def __init__(self, reason: str, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.reason, self.message, self.code = reason, message, code


@dataclass
class Planned:
    """An event read as flowviz's request."""

    index: int
    type: str
    biz_step: str
    request: Message | None = None
    lot_code: str = ""
    # Lots that must exist already (inputs, shipped lots) and the lots it creates.
    uses: list[str] = field(default_factory=list)
    creates: list[str] = field(default_factory=list)
    rejected: Rejected | None = None
    record_id: str = ""
    replayed: bool = False


def parse(document: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument("DOCUMENT_INVALID", f"document is not JSON: {exc}", field="document") from None
    if not isinstance(body, dict):
        raise InvalidArgument("DOCUMENT_INVALID", "document must be a JSON object", field="document")
    return body


def schema_errors(body: dict[str, Any]) -> tuple[list[str], dict[int, list[str]]]:
    """GS1 schema violations: of the document itself, and per event (by index)."""
    whole: list[str] = []
    per_event: dict[int, list[str]] = {}
    for error in validator().iter_errors(body):
        path = list(error.absolute_path)
        where = "/".join(str(p) for p in path) or "document"
        if len(path) >= 3 and path[:2] == ["epcisBody", "eventList"] and isinstance(path[2], int):
            per_event.setdefault(path[2], []).append(f"{where}: {error.message}")
        else:
            whole.append(f"{where}: {error.message}")
    return whole, per_event


def _term(value: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


@dataclass
class MasterData:
    lots: dict[str, dict[str, Any]]
    gln_partners: dict[str, str]
    gln_locations: dict[str, str]


def _attributes(body: dict[str, Any], vtype: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    header = body.get("epcisHeader") or {}
    for vocabulary in (header.get("epcisMasterData") or {}).get("vocabularyList") or []:
        if vocabulary.get("type") != vtype:
            continue
        for element in vocabulary.get("vocabularyElementList") or []:
            found[element["id"]] = {a["id"]: a.get("attribute") for a in element.get("attributes") or []}
    return found


def _glns(events: list[dict[str, Any]], prefix: str) -> set[str]:
    """Every GLN the events name in a Digital Link URI with `prefix` (417 party, 414 location)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith(f"{gs1.DL}{prefix}/"):
            found.add(value[len(gs1.DL) + len(prefix) + 1 :].split("/")[0])
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(events)
    return found


async def master_data(conn: Conn, body: dict[str, Any], events: list[dict[str, Any]]) -> MasterData:
    partners = await conn.fetch(
        "SELECT gln, code FROM trading_partners WHERE gln = ANY($1::text[])", sorted(_glns(events, "417"))
    )
    places = await conn.fetch(
        "SELECT gln, code FROM locations WHERE gln = ANY($1::text[])", sorted(_glns(events, "414"))
    )
    return MasterData(
        _attributes(body, epcis.VTYPE_CLASS),
        {r["gln"]: r["code"] for r in partners},
        {r["gln"]: r["code"] for r in places},
    )


class Reader:
    """One event's fields read as flowviz's, each error naming where in the document it is."""

    def __init__(self, event: dict[str, Any], index: int, data: MasterData) -> None:
        self.e, self.where, self.data = event, f"epcisBody/eventList/{index}", data

    def fail(self, reason: str, message: str, code: str = "INVALID_ARGUMENT") -> Rejected:
        return Rejected(reason, f"{self.where}/{message}", code)

    def time(self) -> datetime:
        value = str(self.e.get("eventTime", ""))
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise self.fail("TIME_INVALID", f"eventTime {value!r} is no RFC 3339 time") from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    def lot(self, item: dict[str, Any], where: str) -> tuple[str, float, str]:
        uri = str(item.get("epcClass", ""))
        code = gs1.lot_code_of(uri)
        if code is None:
            raise self.fail(
                "LOT_URI_UNKNOWN", f"{where}/epcClass {uri!r} names no lot (urn:flowviz:lot:... or an LGTIN)"
            )
        if "quantity" not in item:
            raise self.fail("QUANTITY_REQUIRED", f"{where}/quantity is required")
        unit = gs1.UNIT_OF_REC20.get(str(item.get("uom", "")))
        if unit is None:
            known = ", ".join(gs1.UNIT_OF_REC20)
            raise self.fail("UOM_UNKNOWN", f"{where}/uom {item.get('uom')!r} is not one of {known}")
        return code, float(item["quantity"]), unit

    def one_lot(self) -> tuple[str, float, str]:
        items = self.e.get("quantityList") or []
        if len(items) != 1 or self.e.get("epcList"):
            raise self.fail(
                "QUANTITY_LIST_INVALID", "quantityList must name exactly one lot (and no epcList)"
            )
        return self.lot(items[0], "quantityList/0")

    def attribute(self, lot_code: str, name: str) -> Any:
        for uri, attributes in self.data.lots.items():
            if gs1.lot_code_of(uri) == lot_code:
                return attributes.get(name)
        return None

    def party(self, items: list[dict[str, Any]], key: str, kind: str, list_name: str) -> str:
        for i, item in enumerate(items):
            if _term(str(item.get("type", "")), SDT_PREFIXES) == kind:
                return self._code(str(item.get(key, "")), f"{list_name}/{i}/{key}", kind)
        return ""

    def _code(self, uri: str, where: str, kind: str) -> str:
        location = kind == "location"
        prefix = gs1.LOCATION if location else gs1.PARTY
        if uri.startswith(prefix):
            return unquote(uri[len(prefix) :])
        digital_link = f"{gs1.DL}{'414' if location else '417'}/"
        if uri.startswith(digital_link):
            gln = uri[len(digital_link) :].split("/")[0]
            found = (self.data.gln_locations if location else self.data.gln_partners).get(gln)
            if found is None:
                what = "location" if location else "trading partner"
                raise self.fail(
                    f"{'LOCATION' if location else 'PARTNER'}_NOT_FOUND",
                    f"{where}: no {what} has GLN {gln}",
                    "NOT_FOUND",
                )
            return found
        raise self.fail("URI_UNKNOWN", f"{where} {uri!r} names no {kind} flowviz knows")

    def document(self) -> tuple[str, str]:
        for item in self.e.get("bizTransactionList") or []:
            doc_type = gs1.DOC_TYPE_OF_BT.get(_term(str(item.get("type", "")), BTT_PREFIXES))
            if doc_type is not None:
                uri = str(item["bizTransaction"])
                number = gs1.document_number_of(uri) or uri.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
                return doc_type, number
        raise self.fail(
            "DOCUMENT_REQUIRED",
            "bizTransactionList needs a po, bol, inv or desadv transaction (the document)",
        )


def _timestamp(message: Any, name: str, at: datetime) -> None:
    getattr(message, name).FromDatetime(at)


def receipt(r: Reader, key: str) -> genealogy_pb2.RecordReceiptRequest:
    lot_code, quantity, uom = r.one_lot()
    sources = r.e.get("sourceList") or []
    doc_type, number = r.document()
    expires = r.attribute(lot_code, epcis.MDA + "itemExpirationDate")
    request = genealogy_pb2.RecordReceiptRequest(
        lot_code=lot_code,
        kind=str(r.attribute(lot_code, epcis.FLOWVIZ_MDA + "kind") or "RAW"),
        product=str(r.attribute(lot_code, epcis.MDA + "descriptionShort") or ""),
        quantity=quantity,
        uom=uom,
        supplier_code=r.party(sources, "source", "owning_party", "sourceList"),
        ship_from_location_code=r.party(sources, "source", "location", "sourceList"),
        receiving_location_code=r.party(
            r.e.get("destinationList") or [], "destination", "location", "destinationList"
        )
        or _location(r),
        supplier_lot_code=str(r.attribute(lot_code, epcis.FLOWVIZ_MDA + "supplierLotCode") or lot_code),
        document_type=doc_type,
        document_number=number,
        expires_on=str(expires or ""),
        idempotency_key=key,
    )
    _timestamp(request, "received_at", r.time())
    return request


def _location(r: Reader) -> str:
    place = (r.e.get("bizLocation") or {}).get("id", "")
    return r._code(str(place), "bizLocation/id", "location") if place else ""


def shipment(r: Reader, key: str) -> genealogy_pb2.RecordShipmentRequest:
    lot_code, quantity, uom = r.one_lot()
    destinations = r.e.get("destinationList") or []
    doc_type, number = r.document()
    request = genealogy_pb2.RecordShipmentRequest(
        lot_code=lot_code,
        quantity=quantity,
        uom=uom,
        customer_code=r.party(destinations, "destination", "owning_party", "destinationList"),
        ship_to_location_code=r.party(destinations, "destination", "location", "destinationList"),
        ship_from_location_code=r.party(r.e.get("sourceList") or [], "source", "location", "sourceList")
        or _location(r),
        carrier_code=r.party(destinations, "destination", "possessing_party", "destinationList"),
        document_type=doc_type,
        document_number=number,
        idempotency_key=key,
    )
    _timestamp(request, "shipped_at", r.time())
    return request


def production_run(r: Reader, key: str) -> genealogy_pb2.RecordProductionRunRequest:
    run_uri = str(r.e.get("transformationID", ""))
    if not run_uri.startswith(gs1.RUN):
        raise r.fail(
            "TRANSFORMATION_ID_REQUIRED", "transformationID must name the run (urn:flowviz:run:<run code>)"
        )
    stream = str((r.e.get("bizLocation") or {}).get("id", ""))
    phase = str((r.e.get("readPoint") or {}).get("id", ""))
    stream_code = unquote(stream[len(gs1.STREAM) :]) if stream.startswith(gs1.STREAM) else ""
    marker = ":phase:"
    phase_code = unquote(phase.split(marker, 1)[1]) if stream_code and marker in phase else ""
    request = genealogy_pb2.RecordProductionRunRequest(
        run_code=unquote(run_uri[len(gs1.RUN) :]),
        stream_code=stream_code,
        phase_code=phase_code,
        idempotency_key=key,
    )
    _timestamp(request, "ended_at", r.time())
    for i, item in enumerate(r.e.get("inputQuantityList") or []):
        code, quantity, uom = r.lot(item, f"inputQuantityList/{i}")
        request.inputs.add(lot_code=code, quantity=quantity, uom=uom)
    for i, item in enumerate(r.e.get("outputQuantityList") or []):
        code, quantity, uom = r.lot(item, f"outputQuantityList/{i}")
        request.outputs.add(
            lot_code=code,
            quantity=quantity,
            uom=uom,
            kind=str(r.attribute(code, epcis.FLOWVIZ_MDA + "kind") or "WIP"),
            product=str(r.attribute(code, epcis.MDA + "descriptionShort") or ""),
        )
    if r.e.get("inputEPCList") or r.e.get("outputEPCList"):
        raise r.fail(
            "EPC_LIST_UNSUPPORTED", "a run's inputs and outputs are lots: quantity lists, not EPC lists"
        )
    return request


def plan(body: dict[str, Any], data: MasterData, key: str, invalid: dict[int, list[str]]) -> list[Planned]:
    """Every event of the document read as a request, or rejected with why: first by GS1's
    schema (`invalid`: its messages per event, such an event is not read further)."""
    events = (body.get("epcisBody") or {}).get("eventList") or []
    planned: list[Planned] = []
    for i, event in enumerate(events):
        if i in invalid or not isinstance(event, dict):
            messages = "; ".join(invalid.get(i, ["an event must be an object"])[:3])
            kind = str(event.get("type", "")) if isinstance(event, dict) else ""
            planned.append(Planned(i, kind, "", rejected=Rejected("EPCIS_SCHEMA_INVALID", messages)))
            continue
        kind, step = str(event.get("type", "")), _term(str(event.get("bizStep", "")), CBV_PREFIXES)
        item = Planned(i, kind, step)
        planned.append(item)
        reader = Reader(event, i, data)
        event_key = f"{key}:{i}" if key else ""
        try:
            if kind == "ObjectEvent" and step == "receiving":
                item.request = receipt(reader, event_key)
                receiving.validate(item.request)
                item.lot_code = item.request.lot_code
                item.creates = [item.lot_code]
            elif kind == "ObjectEvent" and step == "shipping":
                item.request = shipment(reader, event_key)
                shipping.validate(item.request)
                item.lot_code = item.request.lot_code
                item.uses = [item.lot_code]
            elif kind == "TransformationEvent":
                item.request = production_run(reader, event_key)
                runs.validate(item.request)
                item.lot_code = item.request.outputs[0].lot_code
                item.uses = [line.lot_code for line in item.request.inputs]
                item.creates = [line.lot_code for line in item.request.outputs]
            else:
                raise reader.fail(
                    "EVENT_NOT_SUPPORTED",
                    f"type: flowviz captures ObjectEvents receiving or shipping and TransformationEvents, not {kind} {step}",
                )
        except Rejected as exc:
            item.rejected = exc
        except DomainError as exc:
            where = exc.metadata.get("field", "")
            item.rejected = Rejected(exc.reason, f"epcisBody/eventList/{i}: {exc.message}" + (f" ({where})" if where else ""),
                                     CODE_OF_ERROR.get(exc.code, "INVALID_ARGUMENT"))  # fmt: skip
    return planned


async def record(pool: asyncpg.Pool, planned: list[Planned], key: str, refusals: dict[str, str]) -> bool:
    """Record every planned event in one transaction, or none: False (nothing written) when one
    is refused, each refused event carrying its reason. `refusals` names the lots already there
    that QC keeps from being shipped (with the message why); a run checks its inputs itself."""
    for p in planned:
        hit = next((refusals[c] for c in p.uses if c in refusals), None)
        if p.rejected is None and hit is not None:
            p.rejected = Rejected(
                runs.LOT_BLOCKED, f"epcisBody/eventList/{p.index}: {hit}", "FAILED_PRECONDITION"
            )
    if any(p.rejected for p in planned):
        return False
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            for p in planned:
                try:
                    await _record_one(conn, p)
                except runs.IdempotencyMismatch:
                    raise
                except DomainError as exc:
                    p.rejected = Rejected(exc.reason, f"epcisBody/eventList/{p.index}: {exc.message}",
                                          CODE_OF_ERROR.get(exc.code, "INVALID_ARGUMENT"))  # fmt: skip
                except asyncpg.PostgresError as exc:
                    refused = database_error(exc)  # a value the database refused, as the 4xx it is
                    if refused is None:
                        raise
                    p.rejected = Rejected(refused.reason, f"epcisBody/eventList/{p.index}: {refused.message}",
                                          CODE_OF_ERROR.get(refused.code, "INVALID_ARGUMENT"))  # fmt: skip
            ok = not any(p.rejected for p in planned)
            if ok and not all(p.replayed for p in planned):
                await audit.record(conn, "capture", "epcis_document", key or "-", events=len(planned),
                                   lots=[p.lot_code for p in planned])  # fmt: skip
        except BaseException:
            await transaction.rollback()
            raise
        if ok:
            await transaction.commit()
        else:
            await transaction.rollback()
            for p in planned:
                p.record_id = ""
    return ok


async def _record_one(conn: Conn, p: Planned) -> None:
    request = p.request
    digest = runs.request_hash(request) if request is not None else ""
    if isinstance(request, genealogy_pb2.RecordReceiptRequest):
        fields = receiving.validate(request)
        got = await receiving.record(conn, request, fields, digest)
        p.record_id, p.replayed = str(got.receipt_id), got.replayed
    elif isinstance(request, genealogy_pb2.RecordShipmentRequest):
        fields = shipping.validate(request)
        sent = await shipping.record(conn, request, fields, digest)
        p.record_id, p.replayed = str(sent.shipment_id), sent.replayed
    elif isinstance(request, genealogy_pb2.RecordProductionRunRequest):
        made = await runs.record(conn, request, digest)
        p.record_id, p.replayed = request.run_code, made.run is None


def report(planned: list[Planned], ok: bool) -> genealogy_pb2.CaptureEpcisResponse:
    response = genealogy_pb2.CaptureEpcisResponse(
        ok=ok, replayed=ok and bool(planned) and all(p.replayed for p in planned)
    )
    for p in planned:
        status = (
            "rejected" if p.rejected else ("replayed" if p.replayed else "recorded") if ok else "not_recorded"
        )
        response.events.add(
            index=p.index, type=p.type, biz_step=p.biz_step, status=status, record_id=p.record_id if ok else "",
            lot_code=p.lot_code, reason=p.rejected.reason if p.rejected else "",
            message=p.rejected.message if p.rejected else "", code=p.rejected.code if p.rejected else "",
        )  # fmt: skip
    return response
