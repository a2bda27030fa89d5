"""Revocation that bites: a per-user token generation kept in Valkey.

Every user token carries its user's generation at sign-in (claim `gen`). Disabling a user,
changing their role or setting their password bumps it (INCR `fv:gen:<database>:<user>`: users
are rows of one database, so two deployments sharing a Valkey do not revoke each other's); a
token below the current generation is refused (401 TOKEN_REVOKED) by every service. Each
process remembers what it read for at most `max_age` (1 s): a revocation bites everywhere
within a second, with no database round trip per request and at most one Valkey GET per user
per process per second.

While Valkey is unreachable a process goes on with the last generation it knew (0 if none),
so a revoked token may be accepted again, but never beyond its own expiry (FLOWVIZ_TOKEN_TTL,
15 min); a disabled user cannot sign in again (the lots service checks the database). A Valkey
restarted empty forgets generations the same way, with the same bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from valkey.exceptions import ValkeyError

log = logging.getLogger(__name__)

MAX_KNOWN = 10_000  # users remembered per process; beyond it the memory starts afresh


def key(database_url: str, user: str) -> str:
    database = urlsplit(database_url).path.lstrip("/") or "flowviz"
    return f"fv:gen:{database}:{user}"


class Revocations:
    def __init__(self, client: Any, database_url: str, *, timeout: float, max_age: float = 1.0) -> None:
        self.client = client
        self.database_url = database_url
        self.timeout = timeout
        self.max_age = max_age
        self._known: dict[str, tuple[int, float]] = {}

    async def generation(self, user: str, *, fresh: bool = False) -> int:
        """The user's current generation, as read at most `max_age` ago (now if `fresh`)."""
        now = time.monotonic()
        known = self._known.get(user)
        if known is not None and not fresh and now - known[1] < self.max_age:
            return known[0]
        try:
            raw = await asyncio.wait_for(self.client.get(key(self.database_url, user)), self.timeout)
            value = int(raw or 0)
        except (ValkeyError, OSError, TimeoutError, ValueError) as exc:
            value = known[0] if known is not None else 0
            log.warning("token generations unreadable, using the last known", extra={"error": str(exc)})
        if len(self._known) >= MAX_KNOWN:
            self._known.clear()
        self._known[user] = (value, now)
        return value

    async def revoke(self, user: str) -> bool:
        """End every token of `user` issued so far. False if Valkey could not be told (those
        tokens then end at their expiry)."""
        try:
            value = int(await asyncio.wait_for(self.client.incr(key(self.database_url, user)), self.timeout))
        except (ValkeyError, OSError, TimeoutError) as exc:
            log.error("could not revoke tokens", extra={"user": user, "error": str(exc)})
            return False
        self._known[user] = (value, time.monotonic())
        return True
