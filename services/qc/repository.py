"""SQL of the qc service (the only writer of qc_gates and qc_decisions)."""

from __future__ import annotations

import asyncpg

LOT_STATUS = """
SELECT l.id, q.decision FROM lots l
LEFT JOIN LATERAL (
    SELECT d.decision FROM qc_decisions d WHERE d.lot_id = l.id ORDER BY d.id DESC LIMIT 1
) q ON true
WHERE l.lot_code = $1
"""

LIST_DECISIONS = """
SELECT d.id, l.lot_code, COALESCE(g.code, '') AS gate_code, d.decision, d.reason, u.username AS decided_by,
       d.decided_at, COALESCE(d.supersedes_id, 0) AS supersedes_id
FROM qc_decisions d
JOIN lots l ON l.id = d.lot_id
JOIN users u ON u.id = d.decided_by
LEFT JOIN qc_gates g ON g.id = d.gate_id
WHERE d.lot_id = $1 AND d.id > $2
ORDER BY d.id LIMIT $3
"""


async def lot_status(pool: asyncpg.Pool, lot_code: str) -> asyncpg.Record | None:
    return await pool.fetchrow(LOT_STATUS, lot_code)


async def list_decisions(pool: asyncpg.Pool, lot_id: int, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_DECISIONS, lot_id, after_id, limit)
