"""The one way a Lot message is built (`lot`), and the conversion of a lot row to it.

A row has the lot's columns and `qc_status`, its own QC status as qc publishes it (the read
model qc_lot_status; each service's repository names the columns it selects). The trace engine
builds its lots from its nodes with `lot` too (services/genealogy/convert.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from flowviz.lots.v1 import lots_pb2

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(at: datetime) -> dict[str, int]:
    """A Timestamp field's value for a message constructor: what Timestamp.FromDatetime sets
    (a naive time is UTC), at a third of its cost (recall answers carry tens of thousands)."""
    since = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)) - _EPOCH
    return {"seconds": since.days * 86400 + since.seconds, "nanos": since.microseconds * 1000}


def lot_fields(
    *,
    lot_code: str,
    kind: str,
    product: str,
    quantity: float,
    uom: str,
    status: str,
    produced_at: datetime | None,
    created_at: datetime,
) -> dict[str, Any]:
    """A Lot's own fields as constructor values (answers of thousands of lots are built in one
    constructor); effective_status, blocking and voided_run are the callers'."""
    fields: dict[str, Any] = {
        "lot_code": lot_code,
        "kind": kind,
        "product": product,
        "quantity": quantity,
        "uom": uom,
        "status": status,
        "created_at": timestamp(created_at),
    }
    if produced_at is not None:
        fields["produced_at"] = timestamp(produced_at)
    return fields


def lot(
    *,
    lot_code: str,
    kind: str,
    product: str,
    quantity: float,
    uom: str,
    status: str,
    produced_at: datetime | None,
    created_at: datetime,
) -> lots_pb2.Lot:
    """A Lot with its own fields; effective_status, blocking and voided_run are the callers'."""
    return lots_pb2.Lot(
        **lot_fields(
            lot_code=lot_code,
            kind=kind,
            product=product,
            quantity=quantity,
            uom=uom,
            status=status,
            produced_at=produced_at,
            created_at=created_at,
        )
    )


def lot_message(row: asyncpg.Record) -> lots_pb2.Lot:
    return lot(
        lot_code=row["lot_code"],
        kind=row["kind"],
        product=row["product"],
        quantity=float(row["quantity"]),
        uom=row["uom"],
        status=row["qc_status"] or "pending",
        produced_at=row["produced_at"],
        created_at=row["created_at"],
    )
