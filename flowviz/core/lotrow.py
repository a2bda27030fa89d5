"""The one conversion of a lot row to its proto message.

A row has the lot's columns and `qc_status`, its own QC status as qc publishes it (the read
model qc_lot_status; each service's repository names the columns it selects).
"""

from __future__ import annotations

import asyncpg

from flowviz.lots.v1 import lots_pb2


def lot_message(row: asyncpg.Record) -> lots_pb2.Lot:
    lot = lots_pb2.Lot(
        lot_code=row["lot_code"],
        kind=row["kind"],
        product=row["product"],
        quantity=float(row["quantity"]),
        uom=row["uom"],
        status=row["qc_status"] or "pending",
    )
    if row["produced_at"] is not None:
        lot.produced_at.FromDatetime(row["produced_at"])
    lot.created_at.FromDatetime(row["created_at"])
    return lot
