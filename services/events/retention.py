"""Outbox retention: events done with go, with their delivery log, FLOWVIZ_EVENTS_RETENTION_DAYS
after (0: never). What may go is decided in the database (flowviz_prune_events, migration 0014):
fanned out, read by genealogy, no delivery pending, every delivery finished before the cutoff.

A pass walks the outbox by id in calls of SCAN rows, each its own short transaction, and stops
at the first rows younger than the cutoff, so it neither holds a lock for long nor rereads the
recent part of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

SCAN = 500
PRUNE = "SELECT last_id, young, events, deliveries FROM flowviz_prune_events($1, $2, $3)"


@dataclass(frozen=True, slots=True)
class Pruned:
    events: int = 0
    deliveries: int = 0
    calls: int = 0


async def prune(pool: asyncpg.Pool, days: int, *, now: datetime | None = None, scan: int = SCAN) -> Pruned:
    """One retention pass; how many events and delivery-log rows it removed, in how many calls."""
    if days <= 0:
        return Pruned()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    after, events, deliveries, calls = 0, 0, 0, 0
    while True:
        row = await pool.fetchrow(PRUNE, cutoff, after, scan)
        assert row is not None
        calls += 1
        events += row["events"]
        deliveries += row["deliveries"]
        if row["young"] or row["last_id"] is None:
            return Pruned(events, deliveries, calls)
        after = row["last_id"]
