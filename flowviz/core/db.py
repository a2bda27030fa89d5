"""The asyncpg pool each service owns, and the gate that makes a database outage fail fast.

When PostgreSQL is unreachable, a call must not wait for its deadline: the first failed
connection closes the gate, and while it is closed every new connection is refused at once
(DATABASE_UNAVAILABLE, HTTP 503 with Retry-After) without touching the network. Every
`retry_after` seconds one connection attempt (a probe) goes through; only when it succeeds
do the others reconnect, so a returning server sees one connection, not a storm.
Connections already in the pool die with the server (asyncpg sees the socket close) and are
replaced through the same gate on their next acquire. A server that is alive but slow to hand
out a new connection (the pool growing under load on a busy machine) does not close the gate:
see Gate.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from flowviz.core.errors import Unavailable

log = logging.getLogger(__name__)

# What a query sees when the server goes away under it: an outage, not a bug in the call.
# (QueryCanceledError shares AdminShutdownError's class 57 but is a timeout: not listed.)
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# ... and what connecting sees: refused, no route, too slow.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, *OUTAGE_ERRORS)


def _stuck(exc: BaseException) -> bool:
    """asyncpg refusing a query on a connection still waiting for the end of its last answer
    (the server died before sending it, and asyncpg has not yet seen the socket close): raised
    before anything is sent, so the call did nothing on it."""
    return isinstance(exc, asyncpg.InternalClientError) and "another operation" in str(exc)


def is_outage(exc: BaseException) -> bool:
    """An outage error, or one raised while handling it (a transaction's exit on a connection
    that died under it raises InterfaceError "the underlying connection is closed"), or a
    connection left stuck by a server that died mid-answer (seen in the fault suite right after
    PostgreSQL's kill -9: 502 INTERNAL before)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OUTAGE_ERRORS) or _stuck(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unavailable(retry_after: float = 1.0) -> Unavailable:
    return Unavailable(
        "DATABASE_UNAVAILABLE",
        "the database is unreachable; retry shortly",
        retry_after_seconds=max(1, round(retry_after)),
    )


class Gate:
    """Closed after a connection failure; lets one probe through every `retry_after` seconds.

    A refused connection (no server, or one starting or shutting down) closes it at once. A
    connection still not made after `connect_timeout` closes it only when the server has shown
    no sign of life meanwhile: while other connections of the pool keep answering queries (each
    release of a live connection is one, see `answered`), a slow new connection (a busy
    machine's scram exchange, a backend fork) is waited for, up to `slow_connect_timeout`, and
    never closes the gate: that is a slow server, not a dead one, and refusing every caller for
    `retry_after` would fail requests a healthy pool could answer."""

    def __init__(
        self,
        name: str,
        *,
        retry_after: float = 0.5,
        connect_timeout: float = 1.0,
        slow_connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.retry_after = retry_after
        self.connect_timeout = connect_timeout
        self.slow_connect_timeout = slow_connect_timeout
        self.down_since: float | None = None
        self.last_answer = float("-inf")
        self.last_failure = float("-inf")
        self._next_probe = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.down_since is None

    def troubled(self, within: float = 5.0) -> bool:
        """Closed now, or failed within the last `within` seconds."""
        return self.down_since is not None or time.monotonic() - self.last_failure <= within

    def answered(self) -> None:
        """The server answered on one of the pool's connections (it is alive)."""
        self.last_answer = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("database unreachable, failing fast", extra={"pool": self.name, "error": str(exc)})
        self._next_probe = now + self.retry_after
        self.last_failure = now

    def recovered(self) -> None:
        if self.down_since is not None:
            log.info(
                "database reachable again",
                extra={"pool": self.name, "down_seconds": round(time.monotonic() - self.down_since, 3)},
            )
        self.down_since = None

    async def connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        """asyncpg's `connect`, refused at once while the gate is closed (but for the probe)."""
        probe = False
        if self.down_since is not None:
            if self._probing or time.monotonic() < self._next_probe:
                raise unavailable(self.retry_after)
            self._probing = probe = True
        started = waited_from = time.monotonic()
        attempt = asyncio.ensure_future(asyncpg.connect(*args, timeout=self.slow_connect_timeout, **kwargs))
        try:
            while True:
                done, _ = await asyncio.wait({attempt}, timeout=self.connect_timeout)
                if done:
                    conn: asyncpg.Connection = attempt.result()
                    break
                # Not connected within connect_timeout. A probe, or no other connection
                # answered meanwhile either: the server is down (or frozen).
                if probe or self.last_answer <= waited_from:
                    raise TimeoutError(f"no connection within {self.connect_timeout} s")
                waited_from = time.monotonic()
                log.info(
                    "slow connection, the server answers others: waiting",
                    extra={"pool": self.name, "seconds": round(waited_from - started, 3)},
                )
        except CONNECTION_ERRORS as exc:
            # Past slow_connect_timeout while others still answer: this call fails, the gate
            # stays open (the server is up).
            slow_but_alive = (
                isinstance(exc, TimeoutError)
                and not probe
                and time.monotonic() - self.last_answer <= self.connect_timeout
                and waited_from > started
            )
            if not slow_but_alive:
                self.failed(exc)
            raise unavailable(self.retry_after) from exc
        finally:
            if probe:
                self._probing = False
            if not attempt.done():
                attempt.cancel()
        self.recovered()
        self.answered()
        return conn


def _session_unchanged(gate: Gate) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """Release without the default reset query (a round trip after every pooled query).

    asyncpg still rolls back a transaction left open before calling this. Our code keeps no
    session state: settings and advisory locks are transaction-scoped (SET LOCAL,
    pg_advisory_xact_lock), and it holds no cursors or LISTENs across a release. asyncpg calls
    it only for a connection still open after its queries: the gate's sign that the server
    answers (a connection the server dropped is terminated instead)."""

    async def reset(conn: asyncpg.Connection) -> None:
        gate.answered()

    return reset


# The monotonic time by which the gRPC call being served must answer (None: no deadline, as
# for work outside a call). The server interceptor sets it from the call's time_remaining().
call_deadline: ContextVar[float | None] = ContextVar("flowviz_call_deadline", default=None)


def statement_timeout_ms(remaining: float | None) -> int | None:
    """The statement_timeout (ms) for a call with `remaining` seconds left (None: the server's
    default). A margin below the deadline, so PostgreSQL cancels the statement (and the call
    answers DEADLINE_EXCEEDED itself) before the caller gives up; above a second it is rounded
    down to 100 ms so that calls with the same deadline find it already set on the connection."""
    if remaining is None:
        return None
    ms = (remaining - min(0.25, 0.1 * remaining)) * 1000
    if ms > 1000:
        ms = math.floor(ms / 100) * 100
    return max(1, int(ms))


def may_stay(current: int | None, limit: int | None) -> bool:
    """Whether a connection whose statement_timeout is `current` (None: the server's default)
    may keep it for a call whose limit (statement_timeout_ms) is `limit`: anything from 80%
    of the limit up to it may. At 50 connections the exact value, rounded to 100 ms, changed
    on about a quarter of all acquires, a round trip each."""
    if limit is None or current is None:
        return limit is current
    return 0.8 * limit <= current <= limit


def with_headroom(limit: int | None) -> int | None:
    """The statement_timeout set when the current one may not stay: 90% of the limit, so the
    next acquires of this call (with a little less time left) and of calls with about the same
    deadline find it in the band."""
    if limit is None:
        return None
    ms = limit * 0.9
    if ms > 1000:
        ms = math.floor(ms / 100) * 100
    return max(1, int(ms))


class Connection(asyncpg.Connection):
    """A pooled connection that remembers the statement_timeout it was last given (the pool's
    reset does not touch session settings), so following the deadline costs a round trip only
    when the value leaves its band (may_stay)."""

    __slots__ = ("_statement_timeout_ms",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._statement_timeout_ms: int | None = None

    async def follow_deadline(self, limit: int | None, *, check: bool = False) -> None:
        """`check`: make the round trip even when the value may stay."""
        if may_stay(self._statement_timeout_ms, limit):
            if not check:
                return
            ms = self._statement_timeout_ms
        else:
            ms = with_headroom(limit)
        # Session-level (not SET LOCAL): it must hold for queries outside a transaction too;
        # kept across acquires (no reset query). A transaction may still SET LOCAL its own.
        await self.execute(
            "SET statement_timeout TO DEFAULT" if ms is None else f"SET statement_timeout = {ms}"
        )
        self._statement_timeout_ms = ms


def remaining() -> float | None:
    """Seconds left for the call being served (None: no deadline)."""
    deadline = call_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def _follow_deadline(gate: Gate) -> Callable[[PoolConnectionProxy], Coroutine[Any, Any, None]]:
    """The pool's `setup`, run at every acquire (pool.fetch() included): this statement_timeout
    follows the deadline of the call that acquired the connection. One helper for every pool.

    Around an outage it also checks the connection: one whose server died in the middle of an
    answer can come back to the pool before asyncpg has seen the socket close, still waiting for
    the rest of that answer ("another operation is in progress"); found here, before the call
    ran anything on it, it is closed (by the pool) and the call answers DATABASE_UNAVAILABLE,
    not an internal error."""

    async def setup(conn: PoolConnectionProxy) -> None:
        connection: Connection = conn  # type: ignore[assignment]  # the proxy passes lookups on
        ms = statement_timeout_ms(remaining())
        try:
            await connection.follow_deadline(ms, check=gate.troubled())
        except asyncpg.InternalClientError as exc:
            if not _stuck(exc):
                raise
            raise unavailable(gate.retry_after) from exc

    return setup


# What opening the pool sees while the server is still starting.
_NOT_YET: tuple[type[BaseException], ...] = (Unavailable, *CONNECTION_ERRORS)


async def create_pool(
    dsn: str,
    *,
    name: str,
    min_size: int,
    max_size: int,
    statement_cache: int = 1024,
    wait: float = 30.0,
    gate: Gate | None = None,
) -> asyncpg.Pool:
    """Open the pool, retrying while the server starts (bounded by `wait` seconds). New
    connections go through `gate` (one is made for the pool if not given); each acquire sets
    the connection's statement_timeout from the call's deadline (`call_deadline`)."""
    gate = gate or Gate(name)
    deadline = time.monotonic() + wait
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"application_name": f"flowviz-{name}"},
                # Settings.statement_cache (FLOWVIZ_STATEMENT_CACHE; 0 behind PgBouncer).
                statement_cache_size=statement_cache,
                reset=_session_unchanged(gate),
                setup=_follow_deadline(gate),
                connection_class=Connection,
                connect=gate.connect,
            )
            assert pool is not None
            try:
                await _warm(pool, min_size)
            except BaseException:
                pool.terminate()
                raise
            return pool
        except _NOT_YET as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not ready, retrying", extra={"error": str(exc)})
            await asyncio.sleep(0.5)


async def _warm(pool: asyncpg.Pool, size: int) -> None:
    """One round trip on each of the `size` connections the pool opened, all held at once, so a
    service reports SERVING with that many connections made and answering (not one it finds
    broken, or has to make, under its first load)."""
    held = [await pool.acquire() for _ in range(size)]
    try:
        await asyncio.gather(*(conn.fetchval("SELECT 1") for conn in held))
    finally:
        for conn in held:
            await pool.release(conn)


# Anything that runs a query: the pool, a connection, or a connection acquired from the pool.
DB: TypeAlias = "asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy"
# A connection held for a transaction.
Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy"
