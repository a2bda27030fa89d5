"""What a delivery's body is: the event as flowviz JSON (native), or as an EPCIS 2.0 document
(epcis)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


def native(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["event_id"],
        "type": row["type"],
        "timestamp": row["occurred_at"].isoformat(),
        "actor": row["actor"],
        "lot_code": row["lot_code"],
        "data": orjson.loads(row["data"]),
    }


def render(row: asyncpg.Record, fmt: str) -> bytes:
    return orjson.dumps(native(row))
