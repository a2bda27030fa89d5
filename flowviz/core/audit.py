"""The audit trail: one append-only row per change, written in the change's own transaction."""

from __future__ import annotations

from typing import Any

import orjson

from flowviz.core.db import Conn
from flowviz.core.identity import caller_name

INSERT = """
INSERT INTO audit_log (actor, action, entity, entity_key, reason, details)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
"""


async def record(conn: Conn, action: str, entity: str, key: str, *, reason: str = "", **details: Any) -> None:
    """Record `action` on `entity` `key` by the current caller (server time, UTC)."""
    await conn.execute(
        INSERT, caller_name(), action, entity, key, reason, orjson.dumps(details, default=str).decode()
    )
