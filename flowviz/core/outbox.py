"""The transactional outbox (issue 16): an event is one INSERT into event_outbox in the
transaction of the change it tells of, so it exists exactly when the change does.

Producers only insert; the events service reads and delivers (services/events/). A lot's event
carries the lot's product, kind and stream, which subscriptions filter on.
"""

from __future__ import annotations

from typing import Any

import orjson

from flowviz.core import validation
from flowviz.core.db import DB
from flowviz.core.identity import caller_name

QC_DECISION_RECORDED = "qc.decision.recorded"
LOT_BLOCKED = "lot.blocked"
LOT_UNBLOCKED = "lot.unblocked"
RUN_RECORDED = "run.recorded"
DRILL_COMPLETED = "drill.completed"
SHIPMENT_RECORDED = "shipment.recorded"
SHIPMENT_REFUSED = "shipment.refused"
TYPES = validation.EVENT_TYPES  # stated there for the API's schema
assert set(TYPES) == {
    QC_DECISION_RECORDED,
    LOT_BLOCKED,
    LOT_UNBLOCKED,
    RUN_RECORDED,
    DRILL_COMPLETED,
    SHIPMENT_RECORDED,
    SHIPMENT_REFUSED,
}

# $1 type, $2 actor, $3 lot code (or NULL), $4 data. The lot's filter fields come from its row.
_INSERT = """
INSERT INTO event_outbox (type, actor, lot_code, product, kind, stream_code, data)
SELECT $1, $2, $3, coalesce(l.product, ''), coalesce(l.kind, ''), coalesce(s.code, ''), $4::jsonb
FROM (SELECT 1) one
LEFT JOIN lots l ON l.lot_code = $3
LEFT JOIN streams s ON s.id = l.stream_id
"""


def encode(data: dict[str, Any]) -> str:
    """An event's data as written to the outbox (for a statement that writes its own event)."""
    return orjson.dumps(data, default=str).decode()


async def emit(
    db: DB, type_: str, lot_code: str | None, data: dict[str, Any], actor: str | None = None
) -> None:
    """Write one event (call it inside the change's transaction)."""
    await db.execute(_INSERT, type_, actor or caller_name(), lot_code, encode(data))


async def emit_many(
    db: DB, events: list[tuple[str, str | None, dict[str, Any]]], actor: str | None = None
) -> None:
    """Write several events (type, lot code, data) in their order."""
    if events:
        who = actor or caller_name()
        await db.executemany(_INSERT, [(t, who, lot, encode(data)) for t, lot, data in events])
