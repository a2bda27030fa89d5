"""The audit trail: one append-only row per change, written in the change's own transaction, and
the background sealer that links committed rows into the hash chain (migration 0013)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from flowviz.core.db import Conn
from flowviz.core.identity import caller_name

log = logging.getLogger(__name__)

# `row()` gives the values in this order (details as JSON text: cast it with ::jsonb).
COLUMNS = "actor, action, entity, entity_key, reason, details"
INSERT = f"INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6::jsonb)"


def row(action: str, entity: str, key: str, *, reason: str = "", **details: Any) -> tuple[str, ...]:
    """The audit row of `action` on `entity` `key` by the current caller, for INSERT or a CTE."""
    return caller_name(), action, entity, key, reason, orjson.dumps(details, default=str).decode()


async def record(conn: Conn, action: str, entity: str, key: str, *, reason: str = "", **details: Any) -> None:
    """Record `action` on `entity` `key` by the current caller (server time, UTC)."""
    await conn.execute(INSERT, *row(action, entity, key, reason=reason, **details))


# --- sealing (migration 0013) --------------------------------------------------------------
# A write only stamps its audit row (no lock: writers never wait for each other); the chain is
# linked after commit by flowviz_audit_seal(), which every service that writes audit rows runs
# about every SEAL_EVERY seconds. One sealer at a time (the function's try-lock): the others skip
# their turn, so the extra services cost one cheap call each. Health writes none and may not seal.
SEALING_SERVICES = frozenset({"lots", "genealogy", "qc", "events"})
SEAL_EVERY = 0.2  # seconds between passes: how long a committed row normally stays unsealed
SEAL_BATCH = 5_000  # rows a pass seals in one short transaction; a full batch goes again at once
SEAL = "SELECT flowviz_audit_seal($1, false)"


async def seal(conn: Conn, batch: int = SEAL_BATCH) -> int | None:
    """Seal up to `batch` committed unsealed rows; None if another sealer is at it (outside a
    transaction: the function's lock is released with its own commit)."""
    sealed = await conn.fetchval(SEAL, batch)
    return None if sealed is None else int(sealed)


async def keep_sealed(pool: asyncpg.Pool, stop: asyncio.Event, every: float = SEAL_EVERY) -> None:
    """Seal until `stop` is set, then once more (the last writes before it). A failure (the
    database away, a restore replacing the function) is logged once and retried next pass: rows
    wait unsealed, nothing is lost."""
    failing = False
    while True:
        sealed: int | None = 0
        try:
            async with pool.acquire() as conn:
                sealed = await seal(conn)
            if failing:
                log.info("audit sealing resumed")
            failing = False
        except Exception as exc:  # a background loop: keep going, say it once
            if not failing:
                log.warning("audit sealing failed; retrying", extra={"error": repr(exc)})
            failing = True
        if stop.is_set():
            return
        if sealed == SEAL_BATCH:
            continue  # a backlog: seal on without waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


def start_sealing(service: str, pool: asyncpg.Pool) -> Callable[[], Awaitable[None]] | None:
    """Start `service`'s background sealer; returns what stops it (run it after the server has
    drained, so the last writes are sealed too). None for a service that writes no audit rows."""
    if service not in SEALING_SERVICES:
        return None
    stop = asyncio.Event()
    task = asyncio.create_task(keep_sealed(pool, stop), name="audit-sealer")

    async def close() -> None:
        stop.set()
        await task

    return close
