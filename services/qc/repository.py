"""SQL of the qc service (the only writer of qc_gates and qc_decisions)."""

from __future__ import annotations

import asyncpg

from flowviz.core.db import DB, Conn

LOT = """
SELECT l.id, l.lot_code, q.id AS decision_id, q.decision FROM lots l
LEFT JOIN LATERAL (
    SELECT d.id, d.decision FROM qc_decisions d WHERE d.lot_id = l.id ORDER BY d.id DESC LIMIT 1
) q ON true
WHERE l.lot_code = $1
"""

DECISION_COLUMNS = """
d.id, l.lot_code, COALESCE(g.code, '') AS gate_code, d.decision, d.reason, u.username AS decided_by,
d.decided_at, COALESCE(d.supersedes_id, 0) AS supersedes_id, d.signer_name, d.signed_at, d.signature_meaning
"""

LIST_DECISIONS = f"""
SELECT {DECISION_COLUMNS}
FROM qc_decisions d
JOIN lots l ON l.id = d.lot_id
JOIN users u ON u.id = d.decided_by
LEFT JOIN qc_gates g ON g.id = d.gate_id
WHERE d.lot_id = $1 AND d.id > $2
ORDER BY d.id LIMIT $3
"""

# The decision and its qc.decision.recorded event (the outbox, issue 16) in one statement: the
# event costs the write path no round trip. $9, $10: the lot's status before and after.
INSERT_DECISION = f"""
WITH new AS (
    INSERT INTO qc_decisions (lot_id, gate_id, decision, reason, decided_by, supersedes_id,
                              signer_name, signed_at, signature_meaning)
    VALUES ($1, $2, $3, $4, (SELECT id FROM users WHERE username = $5), $6,
            $7, CASE WHEN $7::text IS NULL THEN NULL ELSE now() END, $8)
    RETURNING *
), event AS (
    INSERT INTO event_outbox (type, actor, lot_code, product, kind, stream_code, data)
    SELECT 'qc.decision.recorded', $5, l.lot_code, l.product, l.kind, coalesce(s.code, ''),
           jsonb_build_object(
               'decision', jsonb_build_object(
                   'id', d.id, 'lot_code', l.lot_code, 'gate_code', coalesce(g.code, ''),
                   'decision', d.decision, 'reason', d.reason, 'decided_by', $5::text,
                   'decided_at', d.decided_at, 'supersedes_id', d.supersedes_id)
               || CASE WHEN d.signed_at IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object(
                   'signature', jsonb_build_object('signer', $5::text, 'signer_name', d.signer_name,
                                                   'signed_at', d.signed_at, 'meaning', d.signature_meaning))
                  END,
               'previous_status', $9::text, 'status', $10::text)
    FROM new d JOIN lots l ON l.id = d.lot_id
    LEFT JOIN streams s ON s.id = l.stream_id LEFT JOIN qc_gates g ON g.id = d.gate_id
)
SELECT {DECISION_COLUMNS}
FROM new d JOIN lots l ON l.id = d.lot_id JOIN users u ON u.id = d.decided_by
LEFT JOIN qc_gates g ON g.id = d.gate_id
"""

GATE_COLUMNS = """
g.id, g.code, g.name, g.description, s.code AS stream_code, p.code AS phase_code
"""
GATE_FROM = "qc_gates g JOIN phases p ON p.id = g.phase_id JOIN streams s ON s.id = p.stream_id"


async def lot(conn: DB, lot_code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(LOT, lot_code)


async def list_decisions(pool: asyncpg.Pool, lot_id: int, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_DECISIONS, lot_id, after_id, limit)


async def decision_lot(conn: Conn, decision_id: int) -> int | None:
    value = await conn.fetchval("SELECT lot_id FROM qc_decisions WHERE id = $1", decision_id)
    return int(value) if value is not None else None


async def decision_ids(conn: Conn, lot_id: int, limit: int = 20) -> list[int]:
    """The latest `limit` decision ids of a lot, oldest first."""
    rows = await conn.fetch(
        "SELECT id FROM (SELECT id FROM qc_decisions WHERE lot_id = $1 ORDER BY id DESC LIMIT $2) d ORDER BY id",
        lot_id,
        limit,
    )
    return [int(r["id"]) for r in rows]


async def insert_decision(
    conn: Conn,
    *,
    lot_id: int,
    gate_id: int | None,
    decision: str,
    reason: str,
    username: str,
    supersedes_id: int | None,
    signer_name: str | None = None,
    meaning: str | None = None,
    previous_status: str,
    status: str,
) -> asyncpg.Record:
    """The new decision, and its event; signed (name, now, meaning) when `signer_name` is given."""
    row = await conn.fetchrow(
        INSERT_DECISION,
        lot_id,
        gate_id,
        decision,
        reason,
        username,
        supersedes_id,
        signer_name,
        meaning,
        previous_status,
        status,
    )
    assert row is not None
    return row


async def gate_id(conn: DB, code: str) -> int | None:
    value = await conn.fetchval("SELECT id FROM qc_gates WHERE code = $1", code)
    return int(value) if value is not None else None


async def get_gate(pool: asyncpg.Pool, code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(f"SELECT {GATE_COLUMNS} FROM {GATE_FROM} WHERE g.code = $1", code)


async def list_gates(pool: asyncpg.Pool, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT {GATE_COLUMNS} FROM {GATE_FROM} WHERE g.id > $1 ORDER BY g.id LIMIT $2", after_id, limit
    )


async def phase_id(pool: asyncpg.Pool, stream_code: str, phase_code: str) -> int | None:
    value = await pool.fetchval(
        "SELECT p.id FROM phases p JOIN streams s ON s.id = p.stream_id WHERE s.code = $1 AND p.code = $2",
        stream_code,
        phase_code,
    )
    return int(value) if value is not None else None


async def insert_gate(pool: asyncpg.Pool, code: str, name: str, phase: int, description: str) -> None:
    await pool.execute(
        "INSERT INTO qc_gates (code, name, phase_id, description) VALUES ($1, $2, $3, $4)",
        code,
        name,
        phase,
        description,
    )


async def update_gate(pool: asyncpg.Pool, code: str, name: str, description: str) -> bool:
    status = await pool.execute(
        "UPDATE qc_gates SET name = COALESCE(NULLIF($2, ''), name), "
        "description = COALESCE(NULLIF($3, ''), description) WHERE code = $1",
        code,
        name,
        description,
    )
    return bool(status != "UPDATE 0")


async def signer(db: DB, username: str) -> asyncpg.Record | None:
    """What a signature is checked against. Read from the lots service's users table, as the
    decisions already are (decided_by): a signature is the caller's own password."""
    return await db.fetchrow(
        "SELECT password_hash, display_name, disabled FROM users WHERE username = $1", username
    )
