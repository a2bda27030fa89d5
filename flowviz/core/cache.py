"""Shared Valkey read-through cache that is never stale and never fails a read.

Answers about a lot (its trace, recall, balance, ...) live as fields of one hash per lot,
`fv:<ns>:lot:<code>`, so a write can drop every cached answer rooted at an affected lot
with one UNLINK. Read-your-writes across processes:

- a writer commits, then bumps `fv:epoch` and unlinks the affected lots' hashes;
- a reader notes the epoch in the same round trip as its cache lookup, and stores what it
  loaded only if the epoch is unchanged (a Lua check-and-set). A load that raced a write
  is therefore never stored, and one that finished before the write is unlinked by it.
- a bulk import bumps the namespace `fv:ns` instead: every old entry is orphaned at once
  and ages out (TTL, LRU).

Every stored answer carries an HMAC-SHA256 (over the lot, the field and the answer) with a key
Valkey never sees: a value written into Valkey by anyone else fails it, is treated as a miss
and counted (`rejected`), so a poisoned cache can cost a database read but never a wrong answer.

Every operation is bounded by a short timeout; after a failure the cache is skipped for a
moment (a small circuit breaker) so a dead Valkey costs nothing per request. Misses on the
same entry at the same epoch inside one process share one load (single-flight); a miss after
an invalidation never joins a load that started before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import valkey.asyncio as valkey

log = logging.getLogger(__name__)

EPOCH_KEY = "fv:epoch"
NS_KEY = "fv:ns"

# Returns {value or false, epoch, ns} for hash field ARGV[2] of lot ARGV[1].
_LOOKUP = """
local ns = redis.call('GET', KEYS[2]) or '0'
local value = redis.call('HGET', 'fv:' .. ns .. ':lot:' .. ARGV[1], ARGV[2])
return {value, redis.call('GET', KEYS[1]) or '0', ns}
"""
# Stores ARGV[4] in field ARGV[3] of the lot hash ARGV[2]... only if the epoch is still ARGV[1].
_FILL = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', ARGV[2], ARGV[3], ARGV[4])
redis.call('EXPIRE', ARGV[2], ARGV[5])
return 1
"""
# Bumps the epoch, then unlinks the hash of each lot code in ARGV (under the current namespace).
_INVALIDATE = """
redis.call('INCR', KEYS[1])
local ns = redis.call('GET', KEYS[2]) or '0'
for i = 1, #ARGV, 500 do
    local keys = {}
    for j = i, math.min(i + 499, #ARGV) do keys[#keys + 1] = 'fv:' .. ns .. ':lot:' .. ARGV[j] end
    redis.call('UNLINK', unpack(keys))
end
return 1
"""


TAG_BYTES = 32

# What may watch every Valkey round trip of the cache: `hook(op, run)` awaits `run()` (the round
# trip, None when the cache is down or fails) and returns its result. flowviz.core.tracing puts a
# span around each while tracing is on; without a hook a round trip is the plain call.
RoundTripHook = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
_round_trip_hook: RoundTripHook | None = None


def watch_round_trips(hook: RoundTripHook | None) -> RoundTripHook | None:
    """Set the hook (None: none); returns the one it replaces."""
    global _round_trip_hook
    previous, _round_trip_hook = _round_trip_hook, hook
    return previous


def round_trip_hook() -> RoundTripHook | None:
    return _round_trip_hook


def signing_key(secret: bytes) -> bytes:
    """The cache's HMAC key, derived from a process secret (never sent to Valkey)."""
    return hmac.new(secret, b"flowviz cache values v1", hashlib.sha256).digest()


class Cache:
    def __init__(self, url: str, *, key: bytes, timeout: float, ttl: int, retry_after: float = 1.0) -> None:
        self.client = valkey.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
        )
        self._lookup: Any = self.client.register_script(_LOOKUP)
        self._fill: Any = self.client.register_script(_FILL)
        self._invalidate: Any = self.client.register_script(_INVALIDATE)
        self.timeout = timeout
        self.ttl = ttl
        self.retry_after = retry_after
        self._down_until = 0.0
        self._inflight: dict[tuple[str, str, bytes], asyncio.Future[bytes]] = {}
        self._storing: set[asyncio.Task[None]] = set()  # strong references until they finish
        self._missed_invalidation = False
        self.hits = self.misses = self.errors = self.rejected = 0
        if len(key) < 32:
            raise ValueError("the cache's HMAC key must be at least 32 bytes")
        self._key = key

    def _tag(self, lot_code: str, field: str, value: bytes) -> bytes:
        message = b"%b\0%b\0%b" % (lot_code.encode(), field.encode(), value)
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _opened(self, lot_code: str, field: str, stored: bytes) -> bytes | None:
        """The answer in a stored value, or None when its tag does not match (not ours)."""
        tag, value = stored[:TAG_BYTES], stored[TAG_BYTES:]
        if len(tag) == TAG_BYTES and hmac.compare_digest(tag, self._tag(lot_code, field, value)):
            return value
        self.rejected += 1
        log.warning("cache value failed its HMAC; read from the database", extra={"lot_code": lot_code})
        return None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            log.warning(
                "cache unavailable, reading through to the database", extra={"op": op, "error": repr(exc)}
            )
        self._down_until = time.monotonic() + self.retry_after

    async def _bounded(
        self, op: str, call: Callable[[], Awaitable[Any]], limit: float | None = None, force: bool = False
    ) -> Any:
        """`call()` within the time limit; None when the cache is down or fails. Every Valkey
        round trip goes through here, seen by the round-trip hook when one is set."""
        hook = _round_trip_hook
        if hook is None:
            return await self._round_trip(op, call, limit, force)
        return await hook(op, lambda: self._round_trip(op, call, limit, force))

    async def _round_trip(
        self, op: str, call: Callable[[], Awaitable[Any]], limit: float | None, force: bool
    ) -> Any:
        if not (force or self.available):
            return None
        try:
            async with asyncio.timeout(limit or self.timeout):  # no extra task, unlike wait_for
                result = await call()
        except Exception as exc:
            self._failed(op, exc)
            return None
        self._down_until = 0.0
        return result

    async def ping(self) -> bool:
        return bool(await self._bounded("ping", self.client.ping, self.timeout * 4, force=True))

    async def lot_answer(
        self,
        lot_code: str,
        field: str,
        load: Callable[[], Awaitable[bytes]],
        max_bytes: int = 4 * 1024 * 1024,
    ) -> bytes:
        """The cached answer `field` about lot `lot_code`, else `load()` it (once per process).
        Answers over `max_bytes` are not stored (they would crowd out many small ones)."""
        if not self.available:
            return await load()
        if self._missed_invalidation and await self._invalidate_all() is None:
            return await load()
        found = await self._bounded(
            "lookup", lambda: self._lookup(keys=[EPOCH_KEY, NS_KEY], args=[lot_code, field])
        )
        if found is None:  # cache down: straight to the database
            return await load()
        value, epoch, ns = found
        if value and (answer := self._opened(lot_code, field, bytes(value))) is not None:
            self.hits += 1
            return answer
        # Keyed by epoch too: a load that began before a write may have read the old rows.
        flight = (lot_code, field, bytes(epoch))
        pending = self._inflight.get(flight)
        if pending is not None:
            if pending.done():  # loaded here a moment ago and being stored: served from memory
                self.hits += 1
                return pending.result()
            self.misses += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        try:
            loaded = await load()
        except BaseException as exc:
            del self._inflight[flight]
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; nobody else must
            raise
        future.set_result(loaded)
        if len(loaded) > max_bytes:
            del self._inflight[flight]
            return loaded
        # Stored after answering, not before: the answer leaves one round trip sooner. Until it
        # is stored, the flight stays, so a repeat request meanwhile gets it from here.
        sealed = self._tag(lot_code, field, loaded) + loaded
        store = asyncio.create_task(self._store(flight, f"fv:{ns.decode()}:lot:{lot_code}", sealed))
        self._storing.add(store)
        store.add_done_callback(self._storing.discard)
        return loaded

    async def _store(self, flight: tuple[str, str, bytes], key: str, loaded: bytes) -> None:
        _, field, epoch = flight
        try:
            await self._bounded(
                "fill", lambda: self._fill(keys=[EPOCH_KEY], args=[epoch, key, field, loaded, self.ttl])
            )
        finally:
            del self._inflight[flight]

    async def invalidate(self, lot_codes: Iterable[str]) -> None:
        """After a committed write: drop every cached answer rooted at these lots.

        Tried even while the breaker is open. If it fails, the next lookup that reaches
        Valkey first orphans everything, so this process never serves what it just changed.
        """
        codes = list(dict.fromkeys(lot_codes))

        async def run() -> bool:
            # One round trip per 10,000 lots; the epoch is bumped by each (harmless).
            for start in range(0, max(len(codes), 1), 10_000):
                await self._invalidate(keys=[EPOCH_KEY, NS_KEY], args=codes[start : start + 10_000])
            return True

        if await self._bounded("invalidate", run, self.timeout * 20, force=True) is None:
            self._missed_invalidation = True
            log.error("cache invalidation failed; will orphan all entries when Valkey answers")

    async def invalidate_all(self) -> bool:
        """After a bulk write (an import, a restore): orphan every cached answer. False when
        Valkey could not be told (this process then retries on its next cache call)."""
        if await self._invalidate_all() is None:
            self._missed_invalidation = True
            return False
        return True

    async def _invalidate_all(self) -> bool | None:
        async def run() -> bool:
            await self.client.incr(EPOCH_KEY)
            await self.client.incr(NS_KEY)
            return True

        done: bool | None = await self._bounded("invalidate_all", run, self.timeout * 20, force=True)
        if done:
            self._missed_invalidation = False
        return done

    async def settled(self) -> None:
        """Wait until the answers being stored after a load are stored (or given up)."""
        await asyncio.gather(*self._storing)

    async def close(self) -> None:
        await self.settled()
        await self.client.aclose()
