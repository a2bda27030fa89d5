"""Login throttling (OWASP API2/API4): lock a key after repeated failures, in memory, bounded.

Key every login attempt twice, by username and by client address:

    keys = (username_key(name), address_key(peer))
    if (wait := limiter.check_all(*keys)) is not None:
        raise TooManyAttempts.after(wait)
    if await verify_password_async(stored, pw):
        limiter.success(keys[0])          # not the address: one valid account must not reset it
    else:
        for k in keys: limiter.failure(k)

`max_failures` failures within `window_seconds` lock the key for `lockout_seconds`; each
further lockout before the key has been quiet for a window doubles it, up to
`max_lockout_seconds`. A lock on a username also locks out its owner for that time: the
short first lockout keeps that denial of service small while an online guess rate stays at
a few per minute per username and per address.

Per process and single-threaded (call it from the event loop). With several gateway/lots
replicas each keeps its own counts, so the effective limit is multiplied by the replica count.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import grpc

from flowviz.core.errors import DomainError

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


class _Entry:
    __slots__ = ("failures", "last_failure", "locked_until", "strikes")

    def __init__(self) -> None:
        self.failures: list[float] = []
        self.last_failure = float("-inf")
        self.locked_until = float("-inf")
        self.strikes = 0


class LoginLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        window_seconds: float = 300,
        lockout_seconds: float = 60,
        *,
        max_lockout_seconds: float = 900,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_seconds <= 0 or lockout_seconds <= 0 or max_entries < 1:
            raise ValueError("max_failures, window_seconds, lockout_seconds and max_entries must be positive")
        self.max_failures = max_failures
        self.window = float(window_seconds)
        self.lockout = float(lockout_seconds)
        self.max_lockout = max(float(max_lockout_seconds), self.lockout)
        self.max_entries = max_entries
        self._clock = clock
        # Least recently failed first: stale entries are popped from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @staticmethod
    def _key(key: str) -> str:
        if len(key) <= MAX_KEY_LENGTH:
            return key
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def _stale(self, entry: _Entry, now: float) -> bool:
        return now >= entry.locked_until and now - entry.last_failure > self.window

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            entry = next(iter(entries.values()))
            if not self._stale(entry, now):
                break
            entries.popitem(last=False)

    def check(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may try now."""
        now = self._clock()
        self._purge(now)
        entry = self._entries.get(self._key(key))
        if entry is None or now >= entry.locked_until:
            return None
        return entry.locked_until - now

    def check_all(self, *keys: str) -> float | None:
        """The longest wait among `keys`, or None when none is locked."""
        waits = [w for w in map(self.check, keys) if w is not None]
        return max(waits) if waits else None

    def failure(self, key: str) -> float | None:
        """Record a failed attempt; returns the lockout when this one locked the key."""
        now = self._clock()
        self._purge(now)
        k = self._key(key)
        entries = self._entries
        entry = entries.get(k)
        if entry is None:
            entry = entries[k] = _Entry()
        elif now < entry.locked_until:
            return entry.locked_until - now  # already locked: neither counted nor extended
        elif now - entry.last_failure > self.window:
            entry.strikes = 0  # quiet for a window: forgive earlier lockouts
        cutoff = now - self.window
        entry.failures = [t for t in entry.failures if t > cutoff]
        entry.failures.append(now)
        entry.last_failure = now
        entries.move_to_end(k)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
        if len(entry.failures) < self.max_failures:
            return None
        entry.failures.clear()
        entry.strikes += 1
        duration = min(self.lockout * (1 << min(entry.strikes - 1, 32)), self.max_lockout)
        entry.locked_until = now + duration
        return duration

    def success(self, key: str) -> None:
        """Forget `key`'s failures (after a successful login for that username)."""
        self._entries.pop(self._key(key), None)

    def __len__(self) -> int:
        return len(self._entries)
