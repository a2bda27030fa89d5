"""Receiving, a critical tracking event: a new lot from a supplier, recorded whole (lot, receipt,
audit row) or not at all, idempotent by key. The received lot is a lot like any other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from flowviz.core import audit, validation
from flowviz.core.db import DB, Conn
from flowviz.core.errors import AlreadyExists, InvalidArgument
from flowviz.core.identity import caller_name
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import parties, runs

RECEIPT = """
SELECT r.id, l.lot_code, l.kind, l.product, l.quantity::float8 AS quantity, l.uom, s.code AS supplier_code,
       s.name AS supplier_name, f.code AS ship_from_location_code, t.code AS receiving_location_code,
       r.received_at, r.supplier_lot_code, r.document_type, r.document_number, r.expires_on, r.recorded_by,
       r.created_at
FROM receipts r JOIN lots l ON l.id = r.lot_id JOIN trading_partners s ON s.id = r.supplier_id
JOIN locations f ON f.id = r.ship_from_location_id JOIN locations t ON t.id = r.location_id
"""

_INSERT = f"""
WITH r AS (
    INSERT INTO receipts (lot_id, supplier_id, ship_from_location_id, location_id, received_at,
                          supplier_lot_code, document_type, document_number, expires_on,
                          idempotency_key, request_hash, recorded_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    RETURNING id
), a AS (
    INSERT INTO audit_log ({audit.COLUMNS}) SELECT $13, $14, $15, $16, $17, $18::jsonb FROM r
)
SELECT id FROM r
"""


@dataclass(frozen=True)
class Recorded:
    receipt_id: int
    replayed: bool


def _parties(request: genealogy_pb2.RecordReceiptRequest) -> tuple[parties.Partners, parties.Locations]:
    return (
        {"supplier_code": (request.supplier_code, "supplier")},
        {
            "ship_from_location_code": (request.ship_from_location_code, "supplier_code"),
            "receiving_location_code": (request.receiving_location_code, ""),
        },
    )


def validate(request: genealogy_pb2.RecordReceiptRequest) -> dict[str, Any]:
    """The request's fields checked (a 400 names the field), as the lot and receipt columns."""
    partners, locations = _parties(request)
    parties.codes(partners, locations)
    expires = None
    if request.expires_on:
        try:
            expires = date.fromisoformat(request.expires_on)
        except ValueError:
            raise InvalidArgument(
                "DATE_INVALID", "expires_on must be a date, YYYY-MM-DD", field="expires_on"
            ) from None
    if request.idempotency_key:
        validation.text(request.idempotency_key, "idempotency_key", max_len=200)
    doc_type, doc_number = parties.document(request.document_type, request.document_number)
    return {
        "lot_code": validation.lot_code(request.lot_code),
        "kind": validation.kind(request.kind or "RAW"),
        "product": validation.text(request.product, "product").strip(),
        "quantity": validation.quantity(request.quantity, positive=True),
        "uom": validation.uom(request.uom),
        "received_at": parties.event_time(
            request.received_at, request.HasField("received_at"), "received_at"
        ),
        "supplier_lot_code": validation.text(request.supplier_lot_code, "supplier_lot_code", max_len=64),
        "document_type": doc_type,
        "document_number": doc_number,
        "expires_on": expires,
    }


async def _earlier(db: DB, key: str, digest: str) -> Recorded | None:
    row = await db.fetchrow("SELECT id, request_hash FROM receipts WHERE idempotency_key = $1", key)
    if row is None:
        return None
    runs.same_request(key, str(row["id"]), row["request_hash"], digest, "receipt")
    return Recorded(row["id"], True)


async def record(
    pool: asyncpg.Pool | Conn,
    request: genealogy_pb2.RecordReceiptRequest,
    fields: dict[str, Any],
    digest: str,
) -> Recorded:
    key = request.idempotency_key or None
    async with runs.transaction(pool) as conn:
        if key and (earlier := await _earlier(conn, key, digest)):
            return earlier
        found = await parties.resolve(conn, *_parties(request))
        lot_id = await conn.fetchval(
            "INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (lot_code) DO NOTHING RETURNING id",
            *[fields[k] for k in ("lot_code", "kind", "product", "quantity", "uom", "received_at")],
            caller_name(),
        )
        if lot_id is None:
            # A concurrent retry with this key may have created it: it committed before our insert
            # returned, so a fresh statement sees it.
            if key and (earlier := await _earlier(conn, key, digest)):
                return earlier
            raise AlreadyExists(
                "LOT_EXISTS", f"lot {fields['lot_code']} already exists", lot_code=fields["lot_code"]
            )
        receipt_id = await conn.fetchval(
            _INSERT,
            lot_id,
            found["supplier_code"]["id"],
            found["ship_from_location_code"]["id"],
            found["receiving_location_code"]["id"],
            *[fields[k] for k in ("received_at", "supplier_lot_code", "document_type", "document_number")],
            fields["expires_on"],
            key,
            digest,
            caller_name(),
            *audit.row(
                "record",
                "receipt",
                fields["lot_code"],
                supplier=request.supplier_code,
                supplier_lot_code=fields["supplier_lot_code"],
                quantity=fields["quantity"],
                uom=fields["uom"],
                document=f"{fields['document_type']} {fields['document_number']}",
            ),
        )
    return Recorded(receipt_id, False)


def message(row: asyncpg.Record) -> genealogy_pb2.Receipt:
    receipt = genealogy_pb2.Receipt(
        **{
            k: row[k]
            for k in (
                "id",
                "lot_code",
                "kind",
                "product",
                "quantity",
                "uom",
                "supplier_code",
                "supplier_name",
                "ship_from_location_code",
                "receiving_location_code",
                "supplier_lot_code",
                "document_type",
                "document_number",
                "recorded_by",
            )
        },
        expires_on=row["expires_on"].isoformat() if row["expires_on"] else "",
    )
    receipt.received_at.FromDatetime(row["received_at"])
    receipt.created_at.FromDatetime(row["created_at"])
    return receipt


async def of_lots(db: DB, lot_ids: list[int]) -> list[genealogy_pb2.Receipt]:
    if not lot_ids:
        return []
    rows = await db.fetch(
        f"{RECEIPT} WHERE r.lot_id = ANY($1::bigint[]) ORDER BY r.received_at, r.id", lot_ids
    )
    return [message(r) for r in rows]


async def of_lot(db: DB, lot_code: str) -> list[genealogy_pb2.Receipt]:
    rows = await db.fetch(
        f"{RECEIPT} WHERE r.lot_id = (SELECT id FROM lots WHERE lot_code = $1) ORDER BY r.received_at, r.id",
        lot_code,
    )
    return [message(r) for r in rows]


async def of_supplier_lot(db: DB, supplier_code: str, supplier_lot_code: str) -> list[genealogy_pb2.Receipt]:
    rows = await db.fetch(
        f"{RECEIPT} WHERE s.code = $1 AND r.supplier_lot_code = $2 ORDER BY r.received_at, r.id",
        supplier_code,
        supplier_lot_code,
    )
    return [message(r) for r in rows]


async def get(db: DB, receipt_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(f"{RECEIPT} WHERE r.id = $1", receipt_id)
