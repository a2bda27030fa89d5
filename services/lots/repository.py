"""SQL of the lots service (the only writer of lots, streams, phases and users)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from flowviz.core.db import DB, Conn

# A lot's own QC status (qc publishes it: the read model qc_lot_status; no row is pending).
STATUSES = ("pending", "passed", "on_hold", "released", "rejected")

# Columns of a lot row (flowviz.core.lotrow.lot_message); use with `FROM lots l` + LOT_STATUS_JOIN.
LOT_COLUMNS = (
    "l.lot_code, l.kind, l.product, l.quantity, l.uom, l.produced_at, l.created_at, q.status AS qc_status"
)
LOT_STATUS_JOIN = "LEFT JOIN qc_lot_status q ON q.lot_id = l.id"

# The voided run that produced the lot, when it has no live inputs left (Lot.voided_run).
VOIDED_RUN = """(SELECT r.run_code FROM voided_edges v JOIN production_runs r ON r.id = v.run_id
    WHERE v.child_lot_id = l.id AND v.run_void_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM lot_genealogy g WHERE g.child_lot_id = l.id) LIMIT 1) AS voided_run"""

GET_LOT = f"SELECT {LOT_COLUMNS}, {VOIDED_RUN} FROM lots l {LOT_STATUS_JOIN} WHERE l.lot_code = $1"

INSERT_LOT = """
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING lot_code, kind, product, quantity, uom, produced_at, created_at, NULL::text AS qc_status
"""


async def get_lot(pool: DB, lot_code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(GET_LOT, lot_code)


@dataclass(frozen=True)
class LotFilter:
    """ListLots filters, validated; empty or None means any."""

    lot_code_prefix: str = ""
    product: str = ""  # a substring, any case
    kind: str = ""
    status: str = ""  # own QC status
    effective: str = ""  # effective status
    produced_after: datetime | None = None
    produced_before: datetime | None = None


# The lot's own status is {p}, from qc's read model (its index on status drives the scan).
_STATUS_IS = "l.id IN (SELECT s.lot_id FROM qc_lot_status s WHERE s.status = {p})"
_PENDING = "NOT EXISTS (SELECT 1 FROM qc_lot_status s WHERE s.lot_id = l.id)"
# Each lot blocked by its own or an ancestor's latest hold or reject (qc's read model
# qc_lot_blocks), and whether a reject is among the blocks (qc's rule: rejected wins over
# on_hold). UNION: each (lot, rejected) once.
_BLOCKED = """blocked(id, rejected) AS (
    SELECT b.lot_id, b.status = 'rejected' FROM qc_lot_blocks b
    UNION
    SELECT e.child_lot_id, b.rejected FROM blocked b JOIN lot_genealogy e ON e.parent_lot_id = b.id
)"""


_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def produced_key(row: asyncpg.Record) -> tuple[int, int]:
    """(produced_at in microseconds since year 1, id): the page key of a produced-between list."""
    return (row["produced_at"] - _EPOCH) // timedelta(microseconds=1), row["id"]


def list_lots_query(f: LotFilter, after: int | tuple[int, int] | None, limit: int) -> tuple[str, list[Any]]:
    """The ListLots statement with only the filters in use (each combination its own prepared
    statement, so the planner picks the index that fits: no `$1 = '' OR ...` that defeats them).

    Lots come in id order, past `after` (an id). With a produced_at range they come in
    (produced_at, id) order instead, past `after` (a produced_key): lot ids follow production
    time, so an id-ordered scan would read every lot produced before the range first, where
    lots_produced_at_idx reads the range in order and the LIMIT stops it."""
    by_produced = f.produced_after is not None or f.produced_before is not None
    args: list[Any] = [limit]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = []
    if not by_produced:
        where.append(f"l.id > {arg(after or 0)}")
    elif isinstance(after, tuple):
        micros, after_id = after
        where.append(
            f"(l.produced_at, l.id) > ({arg(_EPOCH + timedelta(microseconds=micros))}, {arg(after_id)})"
        )
    if f.lot_code_prefix:  # [prefix, prefix + "~") in byte order: "~" sorts after every code character
        where.append(
            f'l.lot_code COLLATE "C" >= {arg(f.lot_code_prefix)} '
            f'AND l.lot_code COLLATE "C" < {arg(f.lot_code_prefix + "~")}'
        )
    if f.product:
        escaped = f.product.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(f"l.product ILIKE {arg(f'%{escaped}%')}")
    if f.kind:
        where.append(f"l.kind = {arg(f.kind)}")
    if f.status == "pending":
        where.append(_PENDING)
    elif f.status:
        where.append(_STATUS_IS.format(p=arg(f.status)))
    if f.produced_after is not None:
        where.append(f"l.produced_at >= {arg(f.produced_after)}")
    if f.produced_before is not None:
        where.append(f"l.produced_at < {arg(f.produced_before)}")
    blocked = ""
    if f.effective:
        blocked = f"WITH RECURSIVE {_BLOCKED} "
        # The blocked lots are few next to all lots: an array of their ids drives the scan (in
        # id order, so the page's LIMIT stops it), where a join would scan lots from the start.
        if f.effective == "rejected":
            where.append("l.id = ANY (ARRAY (SELECT id FROM blocked WHERE rejected))")
        elif f.effective == "on_hold":
            where.append(
                "l.id = ANY (ARRAY (SELECT id FROM blocked GROUP BY id HAVING NOT bool_or(rejected)))"
            )
        else:  # not blocked: the own status decides
            where.append("l.id NOT IN (SELECT id FROM blocked)")
            if f.effective == "pending":
                where.append(_PENDING)
            else:
                where.append(_STATUS_IS.format(p=arg(f.effective)))
    order = "l.produced_at, l.id" if by_produced else "l.id"
    sql = (
        f"{blocked}SELECT l.id, {LOT_COLUMNS}, {VOIDED_RUN} FROM lots l {LOT_STATUS_JOIN} "
        f"WHERE {' AND '.join(where) or 'true'} ORDER BY {order} LIMIT $1"
    )
    return sql, args


async def list_lots(
    pool: DB, f: LotFilter, *, after: int | tuple[int, int] | None, limit: int
) -> list[asyncpg.Record]:
    sql, args = list_lots_query(f, after, limit)
    return await pool.fetch(sql, *args)


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


async def user_for_update(conn: Conn, username: str) -> asyncpg.Record | None:
    """The user's role and state, locked until the transaction ends (what an update changes)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT role, disabled FROM users WHERE username = $1 FOR UPDATE", username
    )
    return row


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
