"""The asyncpg pool each service owns."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger(__name__)


async def _session_unchanged(conn: asyncpg.Connection) -> None:
    """Release without the default reset query (a round trip after every pooled query).

    asyncpg still rolls back a transaction left open before calling this. Our code keeps no
    session state: settings and advisory locks are transaction-scoped (SET LOCAL,
    pg_advisory_xact_lock), and it holds no cursors or LISTENs across a release."""


async def create_pool(
    dsn: str, *, name: str, min_size: int, max_size: int, wait: float = 30.0
) -> asyncpg.Pool:
    """Open the pool, retrying while the server starts (bounded by `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"application_name": f"flowviz-{name}"},
                # Behind PgBouncer in transaction mode set FLOWVIZ_STATEMENT_CACHE=0.
                statement_cache_size=1024,
                reset=_session_unchanged,
            )
            assert pool is not None
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not ready, retrying", extra={"error": str(exc)})
            await asyncio.sleep(0.5)


# Anything that runs a query: the pool, a connection, or a connection acquired from the pool.
DB: TypeAlias = "asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy"
# A connection held for a transaction.
Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy"
