"""SQL of the lots service (the only writer of lots, streams, phases and users)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from flowviz.core.db import DB
from flowviz.core.lotrow import LOT_COLUMNS, LOT_STATUS_JOIN

GET_LOT = f"SELECT {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN} WHERE l.lot_code = $1"

LIST_LOTS = f"""
SELECT l.id, {LOT_COLUMNS} FROM lots l {LOT_STATUS_JOIN}
WHERE l.id > $1 AND ($2 = '' OR l.kind = $2) AND ($3 = '' OR l.product = $3)
  AND ($5 = '' OR COALESCE(q.decision, '') = $5)
ORDER BY l.id LIMIT $4
"""

INSERT_LOT = """
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING lot_code, kind, product, quantity, uom, produced_at, created_at, NULL::text AS decision
"""


async def get_lot(pool: DB, lot_code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(GET_LOT, lot_code)


async def list_lots(
    pool: DB, *, after_id: int, kind: str, product: str, decision: str, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_LOTS, after_id, kind, product, limit, decision)


async def insert_lot(
    pool: DB,
    *,
    lot_code: str,
    kind: str,
    product: str,
    quantity: float,
    uom: str,
    produced_at: datetime | None,
    created_by: str,
) -> asyncpg.Record:
    row = await pool.fetchrow(INSERT_LOT, lot_code, kind, product, quantity, uom, produced_at, created_by)
    assert row is not None
    return row


STREAM = "SELECT id, code, name, description, created_at FROM streams"
PHASES = """
SELECT s.code AS stream_code, p.code, p.name, p.seq FROM phases p JOIN streams s ON s.id = p.stream_id
WHERE p.stream_id = ANY($1::bigint[]) ORDER BY p.stream_id, p.seq
"""


async def get_stream(db: DB, code: str) -> asyncpg.Record | None:
    return await db.fetchrow(f"{STREAM} WHERE code = $1", code)


async def list_streams(db: DB, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(f"{STREAM} WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit)


async def phases(db: DB, stream_ids: list[int]) -> list[asyncpg.Record]:
    return await db.fetch(PHASES, stream_ids)


async def insert_stream(db: DB, code: str, name: str, description: str) -> None:
    await db.execute(
        "INSERT INTO streams (code, name, description) VALUES ($1, $2, $3)", code, name, description
    )


async def update_stream(db: DB, code: str, name: str, description: str) -> bool:
    status = await db.execute(
        "UPDATE streams SET name = COALESCE(NULLIF($2, ''), name), "
        "description = COALESCE(NULLIF($3, ''), description) WHERE code = $1",
        code,
        name,
        description,
    )
    return bool(status != "UPDATE 0")


async def insert_phase(db: DB, stream_id: int, code: str, name: str, seq: int) -> None:
    await db.execute(
        "INSERT INTO phases (stream_id, code, name, seq) VALUES ($1, $2, $3, $4)", stream_id, code, name, seq
    )


async def update_phase(db: DB, stream_id: int, code: str, name: str, seq: int) -> bool:
    status = await db.execute(
        "UPDATE phases SET name = COALESCE(NULLIF($3, ''), name), seq = COALESCE(NULLIF($4, 0), seq) "
        "WHERE stream_id = $1 AND code = $2",
        stream_id,
        code,
        name,
        seq,
    )
    return bool(status != "UPDATE 0")


USER = "SELECT id, username, display_name, role, disabled, created_at FROM users"


async def user_credentials(db: DB, username: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, role, password_hash, disabled FROM users WHERE username = $1", username
    )


async def set_password_hash(db: DB, user_id: int, password_hash: str) -> None:
    await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


async def get_user(db: DB, username: str) -> asyncpg.Record | None:
    return await db.fetchrow(f"{USER} WHERE username = $1", username)


async def list_users(db: DB, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await db.fetch(f"{USER} WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit)


async def insert_user(db: DB, username: str, display_name: str, role: str, password_hash: str) -> None:
    await db.execute(
        "INSERT INTO users (username, display_name, role, password_hash) VALUES ($1, $2, $3, $4)",
        username,
        display_name,
        role,
        password_hash,
    )


async def update_user(
    db: DB, username: str, display_name: str, role: str, password_hash: str, disabled: bool | None
) -> bool:
    status = await db.execute(
        "UPDATE users SET display_name = COALESCE(NULLIF($2, ''), display_name), role = COALESCE(NULLIF($3, ''), role), "
        "password_hash = COALESCE(NULLIF($4, ''), password_hash), disabled = COALESCE($5, disabled) "
        "WHERE username = $1",
        username,
        display_name,
        role,
        password_hash,
        disabled,
    )
    return bool(status != "UPDATE 0")
