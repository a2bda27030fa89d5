"""Login throttling (OWASP API2/API4): a progressive delay per key, shared by every replica.

Every login attempt is keyed twice, by username and by client address:

    keys = (username_key(name), address_key(client))
    for throttle, key in ...: if (wait := await throttle.wait(key)) is not None: raise TooManyAttempts.after(wait)
    if right password: await user_throttle.success(keys[0])   # not the address: one account must not reset it
    else: for each: await throttle.failure(key)

The first `free` failures of a key within `window_seconds` cost nothing; after that each attempt
must wait `base_delay * 2**(failures - free)` seconds (at most `max_delay`) after the last failure,
and an attempt before then is a 429 with Retry-After, its password not even checked. Nothing is
ever locked: once the wait is over, the right password works (so a stranger's guesses cost the
owner at most `max_delay`), while guesses slow to one per `max_delay` per username and per address.

The counts live in Valkey (one hash per key, expiring after the window; the clock is Valkey's own,
so replicas agree), shared by every replica. When Valkey cannot be reached they fall back to this
process's memory (bounded) rather than letting attempts through unthrottled.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import grpc

from flowviz.core.errors import DomainError

log = logging.getLogger(__name__)

MAX_KEY_LENGTH: Final = 256
IPV6_PREFIX: Final = 64


class TooManyAttempts(DomainError):
    """Login throttled (HTTP 429); `retry_after_seconds` in the ErrorInfo metadata."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @classmethod
    def after(cls, seconds: float) -> TooManyAttempts:
        wait = max(1, int(seconds + 0.999))
        return cls("LOGIN_THROTTLED", f"too many failed logins, retry in {wait} s", retry_after_seconds=wait)


def username_key(username: str) -> str:
    return "user:" + username.strip().casefold()


def address_key(peer: str) -> str:
    """A key for a client address: gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`), `host:port`
    or a bare address. IPv6 addresses are keyed by their /64, which one client usually holds."""
    text = peer.strip()
    for prefix in ("ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return "addr:" + peer.strip()
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return f"addr:{mapped}"
        return f"addr:{ipaddress.ip_network(f'{ip}/{IPV6_PREFIX}', strict=False)}"
    return f"addr:{ip}"


# KEYS[1]: the key's hash. ARGV[1]: 1 to count a failure, 0 to read; ARGV[2]: window in ms.
# Returns {failures, ms since the last failure}.
_STEP = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if ARGV[1] == '1' then
    local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
    redis.call('HSET', KEYS[1], 'last', now)
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {n, 0}
end
local state = redis.call('HMGET', KEYS[1], 'n', 'last')
if not state[1] then
    return {0, 0}
end
return {tonumber(state[1]), now - tonumber(state[2])}
"""


class LoginThrottle:
    """Progressive delay per key (module docstring). `client()` gives the Valkey client (or None)."""

    def __init__(
        self,
        client: Callable[[], Any],
        *,
        free: int,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        window_seconds: float = 900.0,
        timeout: float = 0.5,
        max_local_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if free < 1 or base_delay <= 0 or max_delay < base_delay or window_seconds <= 0:
            raise ValueError("free, base_delay, max_delay and window_seconds must be positive")
        self._client = client
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.window = window_seconds
        self.timeout = timeout
        self._clock = clock
        self._script: Any = None
        # The fallback: key -> (failures, time of the last one), least recently failed first.
        self._local: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_local = max_local_entries
        self.fallbacks = 0  # calls answered from memory because Valkey failed

    def delay_after(self, failures: int) -> float:
        """Seconds an attempt must wait after the last of `failures` failures."""
        if failures < self.free:
            return 0.0
        return min(self.base_delay * 2.0 ** min(failures - self.free, 32), self.max_delay)

    @staticmethod
    def _key(key: str) -> str:
        return "fv:login:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    async def _step(self, key: str, count: bool) -> tuple[int, float]:
        """(failures, seconds since the last one), counting a failure first when `count`."""
        client = self._client()
        if client is not None:
            try:
                if self._script is None:
                    self._script = client.register_script(_STEP)
                async with asyncio.timeout(self.timeout):
                    n, ms = await self._script(
                        keys=[self._key(key)], args=[int(count), int(self.window * 1000)]
                    )
                return int(n), int(ms) / 1000
            except Exception as exc:  # Valkey down or slow: throttle from memory instead
                self.fallbacks += 1
                log.warning("login throttle falls back to this process", extra={"error": repr(exc)})
        return self._local_step(key, count)

    def _local_step(self, key: str, count: bool) -> tuple[int, float]:
        now = self._clock()
        local = self._local
        while local and now - next(iter(local.values()))[1] > self.window:
            local.popitem(last=False)
        n, last = local.get(key, (0, now))
        if count:
            n, last = n + 1, now
            local[key] = (n, now)
            local.move_to_end(key)
            while len(local) > self._max_local:
                local.popitem(last=False)
        return n, now - last

    async def wait(self, key: str) -> float | None:
        """Seconds `key` must still wait before its next attempt, or None when it may try now."""
        failures, since = await self._step(key, count=False)
        left = self.delay_after(failures) - since
        return left if left > 0 else None

    async def failure(self, key: str) -> float | None:
        """Count a failed attempt; the wait it imposes on the next one (None: none)."""
        failures, _ = await self._step(key, count=True)
        return self.delay_after(failures) or None

    async def success(self, key: str) -> None:
        """Forget `key`'s failures (a successful login for that username)."""
        self._local.pop(key, None)
        client = self._client()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await client.delete(self._key(key))
        except Exception as exc:
            self.fallbacks += 1
            log.warning("login throttle could not reset a key", extra={"error": repr(exc)})
