"""lot.blocked and lot.unblocked, derived where the lineage is (issue 16).

qc writes qc.decision.recorded into the outbox with each decision (its lot's status before and
after, exact under qc's per-lot lock). genealogy reads those events in the order their
transactions committed and, for each decision that starts or ends a block, announces every lot
whose blocked state it changes: on a block, the lot and each of its descendants (what the recall
impact lists) that nothing announced was blocking yet; on a release, each lot this block was the
last announced block of. What it announced is kept (genealogy_event_blocks) and advanced in the
same transaction as the events it writes and its read position, so a crash repeats nothing and
skips nothing, and a lot blocked by two ancestors is unblocked only when both are released.

It runs in the background: qc's QcStatusChanged call wakes it, and it polls as well, so a wake-up
that never came delays the events by one poll at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import orjson

from flowviz.core import outbox

log = logging.getLogger(__name__)

BLOCKING = frozenset({"on_hold", "rejected"})
POLL_SECONDS = 0.5
BATCH = 200

# Decisions past our read position, from transactions older than every one still running (a
# later-committing transaction can hold a smaller id, never an older xid than the horizon).
# The cursor is a subquery, not a join: then the index seeks to it rather than reading every
# retained decision event and filtering (1.7 ms at 3,100 events, growing with the outbox).
_PENDING = """
SELECT o.id, o.tx, o.event_id, o.lot_code, o.actor, o.data::text AS data
FROM event_outbox o
WHERE o.type = 'qc.decision.recorded' AND (o.tx, o.id) > (SELECT tx, id FROM genealogy_event_cursor)
  AND o.tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY o.tx, o.id
LIMIT $1
"""

# $1 the blocking lot's id: it and its descendants that were not announced blocked before.
_BLOCK = """
WITH RECURSIVE down(id) AS (
    SELECT $1::bigint
    UNION
    SELECT g.child_lot_id FROM down d JOIN lot_genealogy g ON g.parent_lot_id = d.id
), added AS (
    INSERT INTO genealogy_event_blocks (lot_id, blocking_lot_id) SELECT id, $1 FROM down
    ON CONFLICT DO NOTHING
)
SELECT l.lot_code, l.product, l.kind FROM down d JOIN lots l ON l.id = d.id
WHERE NOT EXISTS (SELECT 1 FROM genealogy_event_blocks b WHERE b.lot_id = d.id)
ORDER BY l.id
"""

# $1 the released lot's id: the lots it was the last announced block of.
_RELEASE = """
WITH gone AS (DELETE FROM genealogy_event_blocks WHERE blocking_lot_id = $1 RETURNING lot_id)
SELECT l.lot_code, l.product, l.kind FROM gone JOIN lots l ON l.id = gone.lot_id
WHERE NOT EXISTS (
    SELECT 1 FROM genealogy_event_blocks b WHERE b.lot_id = gone.lot_id AND b.blocking_lot_id <> $1
)
ORDER BY l.id
"""


def _lot(row: asyncpg.Record) -> dict[str, Any]:
    return {"lot_code": row["lot_code"], "product": row["product"], "kind": row["kind"]}


async def derive_once(pool: asyncpg.Pool) -> int:
    """Derive the events of the next batch of decisions; the number of decisions read (0: none
    pending, or another genealogy process is at it)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('genealogy-events'))"):
            return 0
        rows = await conn.fetch(_PENDING, BATCH)
        for row in rows:
            data = orjson.loads(row["data"])
            was, now = data["previous_status"] in BLOCKING, data["status"] in BLOCKING
            if was == now:
                continue
            lot_id = await conn.fetchval("SELECT id FROM lots WHERE lot_code = $1", row["lot_code"])
            decision = data["decision"]
            cause = {
                "lot_code": row["lot_code"],
                "status": data["status"],
                "decision_id": decision["id"],
                "decision": decision["decision"],
                "reason": decision["reason"],
                "event_id": str(row["event_id"]),
            }
            if now:
                found = await conn.fetch(_BLOCK, lot_id)
                events = [
                    (outbox.LOT_BLOCKED, r["lot_code"], {"lot": _lot(r), "blocking_lot": cause})
                    for r in found
                ]
            else:
                found = await conn.fetch(_RELEASE, lot_id)
                events = [
                    (outbox.LOT_UNBLOCKED, r["lot_code"], {"lot": _lot(r), "released_lot": cause})
                    for r in found
                ]
            await outbox.emit_many(conn, events, actor=row["actor"])
        if rows:
            await conn.execute(
                "UPDATE genealogy_event_cursor SET tx = $1, id = $2", rows[-1]["tx"], rows[-1]["id"]
            )
        return len(rows)


class Deriver:
    """The background task: derive on a wake-up or every POLL_SECONDS."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                while await derive_once(self._pool) == BATCH:
                    pass
            except (asyncpg.PostgresError, OSError) as exc:  # the next poll tries again
                log.warning("deriving lot events failed", extra={"error": repr(exc)})
