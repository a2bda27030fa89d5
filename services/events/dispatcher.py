"""The dispatcher: from the outbox to each subscriber, after commit, at least once (issue 16).

Fan-out: every POLL_SECONDS (one index probe when nothing is new; LISTEN/NOTIFY would wake it
sooner, but NOTIFY serializes the producers' commits: see the migration 0012), it reads the outbox in (transaction id, id) order up to the oldest transaction still running, adds
one delivery per matching subscription and moves its cursor, in one statement: nothing is read
twice or skipped, whatever order the producers commit in.

Delivery: one lane per active subscription, each with its own HTTP client and
FLOWVIZ_WEBHOOKS_CONCURRENCY workers, so a slow or dead receiver only ever occupies its own. A
worker claims one delivery (repository.CLAIM: the oldest pending of its lot, due, unclaimed, FOR
UPDATE SKIP LOCKED) with a lease a little longer than an attempt may take, sends it, and records
the outcome. A dispatcher killed mid-attempt leaves the lease to lapse: the delivery is sent
again (the receiver sees the same webhook-id). Failures wait base x 2^attempt with jitter, at
most FLOWVIZ_WEBHOOKS_RETRY_MAX, and are given up FLOWVIZ_WEBHOOKS_RETRY_FOR (24 h) after the
event; a redeliver puts them back.

Retention: every RETENTION_SECONDS, events done with for FLOWVIZ_EVENTS_RETENTION_DAYS leave the
outbox with their delivery log (retention.py), in small batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlunsplit

import asyncpg
import httpx

from flowviz.core.server import Resources
from services.events import payloads, repository, retention, signing, targets

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
RETENTION_SECONDS = 600.0
FANOUT_BATCH = 500
USER_AGENT = "flowviz-webhooks/1"
DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True, slots=True)
class Sub:
    id: int
    target_url: str
    format: str
    secret: str


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling, capped, with
    jitter (half fixed, half random) so receivers coming back are not hit by every retry at once."""
    delay = min(cap, base * 2.0 ** min(attempts - 1, 40))
    return float(delay / 2 + random.uniform(0, delay / 2))


class Lane:
    """One subscription's workers and HTTP client."""

    def __init__(self, dispatcher: Dispatcher, sub: Sub) -> None:
        self.d = dispatcher
        self.sub = sub
        cfg = dispatcher.r.settings
        # No redirects (a 3xx is a failed attempt), no proxies from the environment.
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(cfg.webhooks_timeout),
            headers={"user-agent": USER_AGENT},
        )
        self._wake = asyncio.Event()
        self._workers = [asyncio.create_task(self._work()) for _ in range(cfg.webhooks_concurrency)]

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()

    async def _work(self) -> None:
        cfg = self.d.r.settings
        lease = cfg.webhooks_timeout + 5
        while True:
            try:
                row = await self.d.r.pool.fetchrow(repository.CLAIM, self.sub.id, lease)
            except DB_ERRORS as exc:
                log.warning("claiming a delivery failed", extra={"error": repr(exc)})
                row = None
            if row is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                self._wake.clear()
                continue
            try:
                await self._attempt(row)
            except DB_ERRORS as exc:  # the lease lapses and the delivery is attempted again
                log.warning("recording a delivery failed", extra={"error": repr(exc)})

    async def _attempt(self, row: asyncpg.Record) -> None:
        cfg = self.d.r.settings
        body = payloads.render(row, self.sub.format)
        started = time.perf_counter()
        code: int | None = None
        error = ""
        try:
            target, address = await targets.check(
                self.sub.target_url, cfg.webhooks_allow_private, cfg.webhooks_loopback_only
            )
            response = await asyncio.wait_for(
                self._post(target, address, body, row["event_id"]), cfg.webhooks_timeout
            )
            code = response.status_code
            if 300 <= code < 400:
                error = f"HTTP {code}: redirect to {response.headers.get('location', '?')} not followed"
            elif not 200 <= code < 300:
                error = f"HTTP {code}: {response.text[:200]}"
        except targets.TargetRefused as exc:
            error = f"target refused: {exc}"
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000
        now = datetime.now(UTC)
        if not error:
            status, next_at = "delivered", now
        else:
            next_at = now + timedelta(
                seconds=backoff(row["attempts"], cfg.webhooks_retry_base, cfg.webhooks_retry_max)
            )
            gone = next_at > row["occurred_at"] + timedelta(seconds=cfg.webhooks_retry_for)
            status = "failed" if gone else "pending"
        await self.d.r.pool.execute(repository.RESULT, row["id"], status, next_at, code, error, latency_ms)

    async def _post(
        self, target: targets.Target, address: targets.IP, body: bytes, msg_id: str
    ) -> httpx.Response:
        """POST to the checked address itself (the Host header and TLS name stay the URL's)."""
        parts = target.url
        host = f"[{address}]" if address.version == 6 else str(address)
        url = urlunsplit((parts.scheme, f"{host}:{target.port}", parts.path or "/", parts.query, ""))
        headers = {
            "content-type": "application/json" if self.sub.format == "native" else "application/ld+json",
            "host": parts.netloc,
            **signing.headers(self.sub.secret, msg_id, body),
        }
        extensions: dict[str, Any] = {}
        if parts.scheme == "https":
            extensions["sni_hostname"] = target.host
        return await self.client.post(url, content=body, headers=headers, extensions=extensions)


class Dispatcher:
    def __init__(self, resources: Resources) -> None:
        self.r = resources
        self._wake = asyncio.Event()
        self._lanes: dict[int, Lane] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self, sub_id: int | None = None) -> None:
        self._wake.set()
        if sub_id is not None and (lane := self._lanes.get(sub_id)) is not None:
            lane.wake()

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._retain())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for lane in list(self._lanes.values()):
            await lane.close()
        self._lanes.clear()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                await self._sync_lanes()
                while True:
                    done = await self.r.pool.fetchrow(repository.FANOUT, FANOUT_BATCH)
                    assert done is not None
                    for sub_id in done["subscriptions"] or ():
                        if (lane := self._lanes.get(sub_id)) is not None:
                            lane.wake()
                    if done["events"] < FANOUT_BATCH:
                        break
            except DB_ERRORS as exc:
                log.warning("fan-out failed", extra={"error": repr(exc)})

    async def _retain(self) -> None:
        days = self.r.settings.events_retention_days
        while days > 0:
            try:
                done = await retention.prune(self.r.pool, days)
                if done.events:
                    log.info(
                        "retention pruned the outbox",
                        extra={"events": done.events, "deliveries": done.deliveries, "days": days},
                    )
            except DB_ERRORS as exc:  # the database away: the next pass takes what is left
                log.warning("outbox retention failed", extra={"error": repr(exc)})
            await asyncio.sleep(RETENTION_SECONDS)

    async def _sync_lanes(self) -> None:
        """A lane per active subscription: new ones start, paused or deleted ones stop."""
        wanted = {
            r["id"]: Sub(r["id"], r["target_url"], r["format"], r["secret"])
            for r in await repository.active(self.r.pool)
        }
        for sub_id, lane in list(self._lanes.items()):
            if wanted.get(sub_id) != lane.sub:
                del self._lanes[sub_id]
                await lane.close()
        for sub_id, sub in wanted.items():
            if sub_id not in self._lanes:
                self._lanes[sub_id] = Lane(self, sub)
