"""The QC decisions of lots with their electronic signatures (signer, name, time, meaning), read
from qc's published history (the view qc_decision_history, migration 0016; never qc_decisions
itself): what the EPCIS export and the drill snapshots show of each lot's decisions. (The FSMA
204 spreadsheet reads the same view inside its one COPY query.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from flowviz.core.db import DB

_OF = """
SELECT q.decision_id, l.lot_code, q.decision, q.reason, q.decided_by, q.decided_at, q.signer,
       q.signer_name, q.signed_at, q.signature_meaning
FROM qc_decision_history q JOIN lots l ON l.id = q.lot_id
"""
OF_LOT_IDS = _OF + "WHERE q.lot_id = ANY($1::bigint[]) ORDER BY q.decision_id"
OF_LOT_CODES = _OF + "WHERE l.lot_code = ANY($1::text[]) ORDER BY q.decision_id"


async def of_lot_ids(db: DB, lot_ids: list[int]) -> list[asyncpg.Record]:
    return list(await db.fetch(OF_LOT_IDS, lot_ids))


async def of_lot_codes(db: DB, lot_codes: list[str]) -> list[asyncpg.Record]:
    return list(await db.fetch(OF_LOT_CODES, lot_codes))


def _time(at: datetime) -> str:
    """As the QC API writes a time (a protobuf Timestamp in JSON), so the two compare equal."""
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp.ToJsonString()


def as_json(row: asyncpg.Record) -> dict[str, Any]:
    """A decision as the QC API shows it (signature None when it was not signed)."""
    signature = None
    if row["signed_at"] is not None:
        signature = {
            "signer": row["signer"],
            "signer_name": row["signer_name"],
            "signed_at": _time(row["signed_at"]),
            "meaning": row["signature_meaning"],
        }
    return {
        "id": row["decision_id"],
        "lot_code": row["lot_code"],
        "decision": row["decision"],
        "reason": row["reason"],
        "decided_by": row["decided_by"],
        "decided_at": _time(row["decided_at"]),
        "signature": signature,
    }
