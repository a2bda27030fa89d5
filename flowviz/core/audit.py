"""The audit trail: one append-only row per change, written in the change's own transaction."""

from __future__ import annotations

from typing import Any

import orjson

from flowviz.core.db import Conn
from flowviz.core.identity import caller_name

# `row()` gives the values in this order (details as JSON text: cast it with ::jsonb).
COLUMNS = "actor, action, entity, entity_key, reason, details"
INSERT = f"INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6::jsonb)"


def row(action: str, entity: str, key: str, *, reason: str = "", **details: Any) -> tuple[str, ...]:
    """The audit row of `action` on `entity` `key` by the current caller, for INSERT or a CTE."""
    return caller_name(), action, entity, key, reason, orjson.dumps(details, default=str).decode()


async def record(conn: Conn, action: str, entity: str, key: str, *, reason: str = "", **details: Any) -> None:
    """Record `action` on `entity` `key` by the current caller (server time, UTC)."""
    await conn.execute(INSERT, *row(action, entity, key, reason=reason, **details))
