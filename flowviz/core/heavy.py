"""A bound on each user's concurrent heavy calls (graph traces, recalls, exports, drills).

One viewer firing 20 large traces at once would otherwise hold 20 database connections and
starve every other user. Each heavy call takes a lease before it runs and gives it back when it
ends; a user holding `limit` leases gets RESOURCE_EXHAUSTED (HTTP 429) with Retry-After.

A lease is held for at least `min_hold` seconds, even when its call ends sooner: a bound on
concurrency alone lets a user fire small heavy calls back to back without limit (measured: one
viewer's 20 traces in flight kept ~200 traces/s going and took both cores from every other user's
hot trace), so `limit / min_hold` is also the most heavy calls a user starts per second.

The leases live in Valkey, one sorted set per user (member: the lease id, score: when it
expires, on Valkey's clock), so the bound holds across every replica of every service. A lease
expires on its own `ttl` after the call's deadline: a process that dies holding leases gives
them back. While Valkey cannot be reached, each process counts its own leases instead (the
bound is then per process: Valkey is never a reason for an error).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import grpc

from flowviz.core.errors import DomainError

log = logging.getLogger(__name__)

_G: Final = "/flowviz.genealogy.v1.GenealogyService/"
# The calls that walk the genealogy without a bound known in advance.
HEAVY_METHODS: Final = frozenset(
    _G + m
    for m in (
        "GetTraceGraph",
        "StreamTraceGraph",
        "GetRecallImpact",
        "GetRecallNotifications",
        "RenderRecallNotificationsCsv",
        "TraceSupplierLot",
        "ExportTrace",
        "RenderExport",
        "CreateScenario",
    )
)
RETRY_AFTER_SECONDS: Final = 1


class TooManyHeavyCalls(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: int) -> None:
        super().__init__(
            "HEAVY_CALLS_LIMITED",
            f"at most {limit} traces, recalls, exports or drills at a time per user; retry when one ends",
            retry_after_seconds=RETRY_AFTER_SECONDS,
            limit=limit,
        )


# KEYS[1]: the user's set. ARGV: limit, lease id, lease ttl (ms). Valkey's time (ms) when the
# lease was taken, or 0 if it was not.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
local expires = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expires, ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return now
"""

# KEYS[1]: the user's set. ARGV: lease id, the time (Valkey's, ms) until which it stays held.
_RELEASE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if tonumber(ARGV[2]) <= now then
    return redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
"""


def key(database_url: str, subject: str) -> str:
    """The user's lease set: users are rows of one database (as revocation.key)."""
    database = urlsplit(database_url).path.lstrip("/") or "flowviz"
    return f"fv:heavy:{database}:" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Lease:
    subject: str
    lease_id: str
    shared: bool  # in Valkey (else in this process's counts)
    taken_ms: int = 0  # Valkey's time when it was taken (shared leases)
    taken_at: float = 0.0  # this process's monotonic time when it was taken


class HeavyCalls:
    """`acquire(subject, ttl)` before a heavy call, `release(lease)` after (module docstring).
    `client()` gives the Valkey client (or None)."""

    def __init__(
        self,
        client: Callable[[], Any],
        database_url: str,
        *,
        limit: int,
        min_hold: float = 0.0,
        timeout: float = 0.2,
    ) -> None:
        self._client = client
        self.database_url = database_url
        self.limit = limit
        self.min_hold = min_hold
        self.timeout = timeout
        self._script: Any = None
        self._release_script: Any = None
        self._local: Counter[str] = Counter()
        self._releasing: set[asyncio.Task[None]] = set()
        self.fallbacks = 0  # leases counted in memory because Valkey failed
        # After a failure Valkey is skipped for a second: a frozen Valkey must not add its
        # timeout to every heavy call (slower calls would pile up against the bound).
        self._skip_until = 0.0

    async def acquire(self, subject: str, ttl: float) -> Lease:
        """A lease for one heavy call of `subject`, or TooManyHeavyCalls."""
        lease_id = uuid.uuid4().hex
        client = self._client() if time.monotonic() >= self._skip_until else None
        if client is not None:
            try:
                if self._script is None:
                    self._script = client.register_script(_ACQUIRE)
                async with asyncio.timeout(self.timeout):
                    taken = await self._script(
                        keys=[key(self.database_url, subject)],
                        args=[self.limit, lease_id, max(1, int(ttl * 1000))],
                    )
            except Exception as exc:  # Valkey down or slow: count in this process instead
                self.fallbacks += 1
                self._skip_until = time.monotonic() + 1.0
                log.warning("heavy-call limit falls back to this process", extra={"error": repr(exc)})
            else:
                if not int(taken):
                    raise TooManyHeavyCalls(self.limit)
                return Lease(subject, lease_id, shared=True, taken_ms=int(taken), taken_at=time.monotonic())
        if self._local[subject] >= self.limit:
            raise TooManyHeavyCalls(self.limit)
        self._local[subject] += 1
        return Lease(subject, lease_id, shared=False, taken_at=time.monotonic())

    def release(self, lease: Lease) -> None:
        """Give the lease back; never waits (the call's answer must not wait for Valkey, and a
        cancelled call releases too). A lease Valkey does not hear about expires on its own."""
        if not lease.shared:
            held = lease.taken_at + self.min_hold - time.monotonic()
            if held > 0:
                asyncio.get_running_loop().call_later(held, self._drop_local, lease.subject)
            else:
                self._drop_local(lease.subject)
            return
        task = asyncio.create_task(self._remove(lease))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _drop_local(self, subject: str) -> None:
        self._local[subject] -= 1
        if self._local[subject] <= 0:
            del self._local[subject]

    async def _remove(self, lease: Lease) -> None:
        client = self._client()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                if self._release_script is None:
                    self._release_script = client.register_script(_RELEASE)
                held_until = lease.taken_ms + int(self.min_hold * 1000)
                await self._release_script(
                    keys=[key(self.database_url, lease.subject)], args=[lease.lease_id, held_until]
                )
        except Exception as exc:
            log.warning("heavy-call lease not released; it expires on its own", extra={"error": repr(exc)})
