"""Shared Valkey read-through cache that never fails a read.

Every operation is bounded by a short timeout; after a failure the cache is skipped for
a moment (a small circuit breaker) so a dead Valkey costs nothing per request. Misses on
the same key inside one process share one load (single-flight).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import valkey.asyncio as valkey

log = logging.getLogger(__name__)


class Cache:
    def __init__(self, url: str, *, timeout: float, ttl: int, retry_after: float = 1.0) -> None:
        self.client = valkey.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0
        )
        self.timeout = timeout
        self.ttl = ttl
        self.retry_after = retry_after
        self._down_until = 0.0
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self.hits = self.misses = self.errors = 0

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

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), self.timeout * 4))
        except Exception as exc:
            self._failed("ping", exc)
            return False

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            value: bytes | None = await asyncio.wait_for(self.client.get(key), self.timeout)
        except Exception as exc:
            self._failed("get", exc)
            return None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None:
        if not self.available:
            return
        try:
            await asyncio.wait_for(self.client.set(key, value, ex=ttl or self.ttl), self.timeout)
        except Exception as exc:
            self._failed("set", exc)

    async def delete(self, *keys: str) -> None:
        if not keys or not self.available:
            return
        try:
            await asyncio.wait_for(self.client.delete(*keys), self.timeout)
        except Exception as exc:
            self._failed("delete", exc)

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """Cached value for `key`, else `load()` once however many callers miss together."""
        cached = await self.get(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await load()
            future.set_result(value)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[key]
        await self.set(key, value)
        return value

    async def close(self) -> None:
        await self.client.aclose()
