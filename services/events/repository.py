"""SQL of the events service: the only writer of event_subscriptions, event_deliveries and
event_fanout_cursor; a reader of event_outbox (which producers only insert into)."""

from __future__ import annotations

import asyncpg

SUBSCRIPTION_COLUMNS = """
s.id, s.target_url, s.event_types, s.product, s.kind, s.stream_code, s.format, s.paused, s.created_by,
s.created_at,
(SELECT count(*) FROM event_deliveries d WHERE d.subscription_id = s.id AND d.status = 'pending') AS pending,
(SELECT count(*) FROM event_deliveries d WHERE d.subscription_id = s.id AND d.status = 'failed') AS failed
"""

DELIVERY_COLUMNS = """
d.id, o.event_id::text AS event_id, o.type AS event_type, coalesce(d.lot_code, '') AS lot_code, d.status,
d.attempts, d.last_status_code, d.last_error, d.last_latency_ms, d.next_attempt_at, d.last_attempt_at,
d.delivered_at, d.created_at, o.occurred_at
"""

INSERT_SUBSCRIPTION = """
INSERT INTO event_subscriptions (target_url, event_types, product, kind, stream_code, format, secret, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id
"""

# Fan-out: the outbox rows past the cursor from transactions older than every running one, one
# delivery per matching subscription, and the cursor moved past them, in one statement.
FANOUT = """
WITH batch AS (
    SELECT o.id, o.tx, o.type, o.lot_code, o.product, o.kind, o.stream_code, o.occurred_at
    FROM event_outbox o
    -- The cursor as a subquery, not a join: then the index seeks to it rather than reading
    -- every retained event and filtering.
    WHERE (o.tx, o.id) > (SELECT tx, id FROM event_fanout_cursor)
      AND o.tx < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY o.tx, o.id
    LIMIT $1
), added AS (
    INSERT INTO event_deliveries (subscription_id, outbox_id, lot_code, created_at)
    SELECT s.id, b.id, b.lot_code, now()
    FROM batch b JOIN event_subscriptions s
      ON b.type = ANY (s.event_types)
     AND (s.product = '' OR s.product = b.product)
     AND (s.kind = '' OR s.kind = b.kind)
     AND (s.stream_code = '' OR s.stream_code = b.stream_code)
     AND s.created_at <= b.occurred_at
    ORDER BY b.tx, b.id, s.id
    ON CONFLICT DO NOTHING
    RETURNING subscription_id
), moved AS (
    UPDATE event_fanout_cursor c SET tx = last.tx, id = last.id
    FROM (SELECT tx, id FROM batch ORDER BY tx DESC, id DESC LIMIT 1) last
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS events,
       (SELECT array_agg(DISTINCT subscription_id) FROM added) AS subscriptions,
       (SELECT count(*) FROM moved) AS moved
"""

# One delivery of subscription $1 to attempt now: the oldest pending of each lot (a lot's later
# events wait for its earlier ones), due and not claimed, claimed (leased for $2 seconds) in the
# same statement. The conditions on d are checked again on the row's latest version once it is
# locked, so two dispatchers never claim one delivery.
CLAIM = """
WITH heads AS (
    SELECT DISTINCT ON (coalesce(lot_code, '#' || id)) id
    FROM event_deliveries
    WHERE subscription_id = $1 AND status = 'pending'
    ORDER BY coalesce(lot_code, '#' || id), id
), pick AS (
    SELECT d.id FROM event_deliveries d JOIN heads h ON h.id = d.id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND (d.lease_until IS NULL OR d.lease_until < now())
    ORDER BY d.id
    LIMIT 1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE event_deliveries d
SET lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1, last_attempt_at = now()
FROM pick, event_outbox o
WHERE d.id = pick.id AND o.id = d.outbox_id
RETURNING d.id, d.attempts, o.id AS outbox_id, o.event_id::text AS event_id, o.type, o.occurred_at, o.actor,
          o.lot_code, o.data::text AS data
"""

# $1 id, $2 status, $3 next attempt, $4 HTTP status, $5 error, $6 latency.
RESULT = """
UPDATE event_deliveries
SET status = $2, lease_until = NULL, next_attempt_at = $3, last_status_code = $4, last_error = $5,
    last_latency_ms = $6, delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
WHERE id = $1 AND status = 'pending'
"""


async def subscription(db: asyncpg.Pool | asyncpg.Connection, sub_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions s WHERE s.id = $1", sub_id
    )


async def subscriptions(pool: asyncpg.Pool, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT {SUBSCRIPTION_COLUMNS} FROM event_subscriptions s WHERE s.id > $1 ORDER BY s.id LIMIT $2",
        after_id,
        limit,
    )


async def deliveries(
    pool: asyncpg.Pool, sub_id: int, status: str, after_id: int, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(
        f"SELECT {DELIVERY_COLUMNS} FROM event_deliveries d JOIN event_outbox o ON o.id = d.outbox_id "
        "WHERE d.subscription_id = $1 AND ($2 = '' OR d.status = $2) AND d.id > $3 ORDER BY d.id LIMIT $4",
        sub_id,
        status,
        after_id,
        limit,
    )


async def delivery(
    db: asyncpg.Pool | asyncpg.Connection, sub_id: int, delivery_id: int
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM event_deliveries d JOIN event_outbox o ON o.id = d.outbox_id "
        "WHERE d.subscription_id = $1 AND d.id = $2",
        sub_id,
        delivery_id,
    )


async def active(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """What the dispatcher needs of every subscription that is not paused."""
    return await pool.fetch("SELECT id, target_url, format, secret FROM event_subscriptions WHERE NOT paused")
