"""Shipping, a critical tracking event: part or all of a lot to a customer's location.

Checked and written in one transaction under the same row lock a production run takes on its
inputs (runs.lock_lots), so what a lot still holds accounts for every run that consumed it and
every earlier shipment, and no run or shipment can take the same quantity in between. The QC
rule (a lot on hold or rejected, itself or through an ancestor, cannot leave) is the servicer's,
the same check a run's inputs pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from flowviz.core import audit, outbox, validation
from flowviz.core.db import DB, Conn
from flowviz.core.errors import DomainError
from flowviz.core.identity import caller_name
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import parties, runs

# A shipment's columns over `s` (shipments) and `l` (its lot), and the joins they need: the
# notification list selects the same columns over its own rows of `s` and `l`.
SHIPMENT_COLUMNS = """
s.id, l.lot_code, l.product, s.quantity::float8 AS quantity, s.uom, c.code AS customer_code,
c.name AS customer_name, t.code AS ship_to_location_code, f.code AS ship_from_location_code,
COALESCE(k.code, '') AS carrier_code, s.shipped_at, s.document_type, s.document_number,
s.recorded_by, s.created_at,
-- for notification lists: whom to call, and where it went
COALESCE(c.gln, '') AS customer_gln, c.contact_name, c.contact_email, c.contact_phone,
t.name AS ship_to_name, COALESCE(t.gln, '') AS ship_to_gln, t.address AS ship_to_address,
t.city AS ship_to_city, t.postal_code AS ship_to_postal_code, t.country AS ship_to_country,
-- the two times again as microseconds since the epoch: Timestamp fields without datetime arithmetic
(extract(epoch FROM s.shipped_at) * 1000000)::int8 AS shipped_us,
(extract(epoch FROM s.created_at) * 1000000)::int8 AS created_us
"""
SHIPMENT_JOINS = """
JOIN trading_partners c ON c.id = s.customer_id
JOIN locations t ON t.id = s.ship_to_location_id JOIN locations f ON f.id = s.ship_from_location_id
LEFT JOIN trading_partners k ON k.id = s.carrier_id
"""
SHIPMENT = f"SELECT {SHIPMENT_COLUMNS} FROM shipments s JOIN lots l ON l.id = s.lot_id {SHIPMENT_JOINS}"

_USED_AND_EARLIER = runs.used_and_earlier("shipments", "id")

# The shipment, its audit row and its shipment.recorded event (the outbox) in one statement:
# one round trip, not three (the audit row takes no lock since migration 0013: the chain is
# sealed after commit, flowviz.core.audit). $20: the event's data without shipment_id, which the
# insert gives. It answers the shipment as a SHIPMENT row (no read-back: a round trip fewer),
# joined by the ids given, not the inserted row's: the planner cannot size the insert's rows and
# merge-joined all the locations (1.35 ms against 0.67 for the insert alone, on the 1M set).
_INSERT = f"""
WITH s AS (
    INSERT INTO shipments (lot_id, quantity, uom, customer_id, ship_to_location_id, ship_from_location_id,
                           carrier_id, shipped_at, document_type, document_number, idempotency_key,
                           request_hash, recorded_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING *
), e AS (
    INSERT INTO event_outbox (type, actor, lot_code, product, kind, stream_code, data)
    SELECT '{outbox.SHIPMENT_RECORDED}', $13, l.lot_code, l.product, l.kind, coalesce(t.code, ''),
           $20::jsonb || jsonb_build_object('shipment_id', s.id)
    FROM s JOIN lots l ON l.id = $1 LEFT JOIN streams t ON t.id = l.stream_id
), a AS (
    INSERT INTO audit_log ({audit.COLUMNS}) SELECT $14, $15, $16, $17, $18, $19::jsonb FROM s
)
SELECT {SHIPMENT_COLUMNS}
FROM s JOIN lots l ON l.id = $1 JOIN trading_partners c ON c.id = $4 JOIN locations t ON t.id = $5
JOIN locations f ON f.id = $6 LEFT JOIN trading_partners k ON k.id = $7
"""


@dataclass(frozen=True)
class Recorded:
    shipment_id: int
    replayed: bool
    row: asyncpg.Record | None = None  # the SHIPMENT row written (None for a replay)


def _parties(request: genealogy_pb2.RecordShipmentRequest) -> tuple[parties.Partners, parties.Locations]:
    partners = {"customer_code": (request.customer_code, "customer")}
    if request.carrier_code:
        partners["carrier_code"] = (request.carrier_code, "carrier")
    return partners, {
        "ship_to_location_code": (request.ship_to_location_code, "customer_code"),
        "ship_from_location_code": (request.ship_from_location_code, ""),
    }


def validate(request: genealogy_pb2.RecordShipmentRequest) -> dict[str, Any]:
    """The request's fields checked (a 400 names the field)."""
    validation.lot_code(request.lot_code)
    validation.quantity(request.quantity, positive=True)
    validation.uom(request.uom)
    parties.codes(*_parties(request))
    if request.idempotency_key:
        validation.text(request.idempotency_key, "idempotency_key", max_len=200)
    doc_type, doc_number = parties.document(request.document_type, request.document_number)
    return {
        "shipped_at": parties.event_time(request.shipped_at, request.HasField("shipped_at"), "shipped_at"),
        "document_type": doc_type,
        "document_number": doc_number,
    }


async def replay(db: DB, key: str, digest: str) -> int | None:
    """The shipment recorded earlier under `key`, or None; 422 when the body differs."""
    row = await db.fetchrow("SELECT id, request_hash FROM shipments WHERE idempotency_key = $1", key)
    if row is None:
        return None
    runs.same_request(key, str(row["id"]), row["request_hash"], digest, "shipment")
    return int(row["id"])


async def record(
    pool: asyncpg.Pool | Conn,
    request: genealogy_pb2.RecordShipmentRequest,
    fields: dict[str, Any],
    digest: str,
) -> Recorded:
    key = request.idempotency_key or None
    async with runs.transaction(pool) as conn:
        found = await parties.resolve(conn, *_parties(request))
        lots = await runs.lock_lots(conn, [request.lot_code], "lot")
        rows = await conn.fetch(_USED_AND_EARLIER, [lots[0]["id"]], key)
        if key and rows[0]["earlier"] is not None:
            runs.same_request(key, rows[0]["earlier"], rows[0]["request_hash"], digest, "shipment")
            return Recorded(int(rows[0]["earlier"]), True)
        runs.check_not_voided(lots, rows[0], "lot", "shipped")
        used = [u for u in rows if u["parent_lot_id"] is not None]
        runs.check_consumption(lots, {request.lot_code: request}, used, "the shipment")
        carrier = found.get("carrier_code")
        event = _event(request, fields, None)
        del event["shipment_id"]  # the statement adds it
        row = await conn.fetchrow(
            _INSERT,
            lots[0]["id"],
            request.quantity,
            request.uom,
            found["customer_code"]["id"],
            found["ship_to_location_code"]["id"],
            found["ship_from_location_code"]["id"],
            carrier["id"] if carrier else None,
            fields["shipped_at"],
            fields["document_type"],
            fields["document_number"],
            key,
            digest,
            caller_name(),
            *audit.row(
                "record",
                "shipment",
                request.lot_code,
                customer=request.customer_code,
                ship_to=request.ship_to_location_code,
                quantity=request.quantity,
                uom=request.uom,
                document=f"{fields['document_type']} {fields['document_number']}",
            ),
            outbox.encode(event),
        )
        if row is None:  # a concurrent request with this key (for another lot) won
            assert key is not None
            earlier = await replay(conn, key, digest)
            assert earlier is not None
            return Recorded(earlier, True)
    return Recorded(int(row["id"]), False, row)


def _event(
    request: genealogy_pb2.RecordShipmentRequest, fields: dict[str, Any], shipment_id: int | None
) -> dict[str, Any]:
    """A shipment (recorded or refused) as an event's data."""
    return {
        "shipment_id": shipment_id,
        "lot_code": request.lot_code,
        "quantity": request.quantity,
        "uom": request.uom,
        "customer_code": request.customer_code,
        "ship_to_location_code": request.ship_to_location_code,
        "ship_from_location_code": request.ship_from_location_code,
        "carrier_code": request.carrier_code,
        "shipped_at": fields["shipped_at"],
        "document_type": fields["document_type"],
        "document_number": fields["document_number"],
    }


async def refused(
    pool: asyncpg.Pool, request: genealogy_pb2.RecordShipmentRequest, error: DomainError
) -> None:
    """shipment.refused: a blocked lot was about to leave. Nothing else is written, so the event
    is a transaction of its own."""
    data = _event(request, validate(request), None)
    data["refusal"] = {"reason": error.reason, "message": error.message, **error.metadata}
    await outbox.emit(pool, outbox.SHIPMENT_REFUSED, request.lot_code, data)


# The Shipment fields a row has under the same name.
_FIELDS = (
    "id",
    "lot_code",
    "product",
    "quantity",
    "uom",
    "customer_code",
    "customer_name",
    "ship_to_location_code",
    "ship_from_location_code",
    "carrier_code",
    "document_type",
    "document_number",
    "recorded_by",
)


def _micros(us: int) -> dict[str, int]:
    seconds, micros = divmod(us, 1_000_000)  # floor: nanos stay positive before the epoch
    return {"seconds": seconds, "nanos": micros * 1000}


def fields(row: asyncpg.Record) -> dict[str, Any]:
    """A Shipment's fields from a SHIPMENT row, for a constructor (a notification list builds
    thousands in one go)."""
    found = {k: row[k] for k in _FIELDS}
    found["shipped_at"] = _micros(row["shipped_us"])
    found["created_at"] = _micros(row["created_us"])
    return found


def message(row: asyncpg.Record) -> genealogy_pb2.Shipment:
    return genealogy_pb2.Shipment(**fields(row))


async def of_lots(db: DB, lot_ids: list[int]) -> list[genealogy_pb2.Shipment]:
    if not lot_ids:
        return []
    rows = await db.fetch(
        f"{SHIPMENT} WHERE s.lot_id = ANY($1::bigint[]) ORDER BY s.shipped_at, s.id", lot_ids
    )
    return [message(r) for r in rows]


async def of_lot(db: DB, lot_code: str) -> list[genealogy_pb2.Shipment]:
    rows = await db.fetch(
        f"{SHIPMENT} WHERE s.lot_id = (SELECT id FROM lots WHERE lot_code = $1) ORDER BY s.shipped_at, s.id",
        lot_code,
    )
    return [message(r) for r in rows]


async def get(db: DB, shipment_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"{SHIPMENT} WHERE s.id = $1", shipment_id)
