"""Outbox retention (issue 16): events done with leave the outbox with their delivery log after
FLOWVIZ_EVENTS_RETENTION_DAYS; an event not yet delivered never does. Against real PostgreSQL:
rows written as the dispatcher leaves them, their times set back, one pass run as the events
service's own role (flowviz_prune_events, migration 0014)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest
from psycopg import errors

from flowviz.core.config import ConfigError, settings
from services.events import retention
from tests.conftest import PUBLIC_KEY_ENV, Servers

DAYS = 30


def _database(url: str) -> str:
    return url.rsplit("/", 1)[-1]


@pytest.fixture
def db(empty_db_url: str) -> Iterator[psycopg.Connection]:
    """The fresh database as its superuser, with two subscriptions."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for url in ("https://erp.example.com/hook", "https://wms.example.com/hook"):
            conn.execute(
                "INSERT INTO event_subscriptions (target_url, event_types, format, secret, created_by) "
                "VALUES (%s, %s, 'native', 'whsec_x', 'ada')",
                (url, ["qc.decision.recorded", "run.recorded"]),
            )
        yield conn


@pytest.fixture
async def events_pool(servers: Servers, empty_db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """What the events service connects as."""
    pool = await asyncpg.create_pool(
        servers.pg.service_url("events", _database(empty_db_url)), min_size=1, max_size=2
    )
    yield pool
    await pool.close()


def subs(db: psycopg.Connection) -> list[int]:
    return [r[0] for r in db.execute("SELECT id FROM event_subscriptions ORDER BY id")]


def event(db: psycopg.Connection, days_ago: float, type_: str = "run.recorded") -> int:
    row = db.execute(
        "INSERT INTO event_outbox (type, actor, lot_code, occurred_at, data) "
        "VALUES (%s, 'ada', 'RAW-1', now() - make_interval(days => %s), '{}') RETURNING id",
        (type_, days_ago),
    ).fetchone()
    assert row is not None
    return int(row[0])


def deliver(db: psycopg.Connection, sub: int, outbox_id: int, status: str, days_ago: float | None) -> None:
    """A delivery as the dispatcher leaves it: delivered (delivered_at), given up (its last
    attempt), or pending; then its times set back `days_ago` days."""
    db.execute(
        "INSERT INTO event_deliveries (subscription_id, outbox_id, lot_code, status, attempts, "
        "last_attempt_at, delivered_at) "
        "VALUES (%s, %s, 'RAW-1', %s, 1, now(), CASE WHEN %s = 'delivered' THEN now() END)",
        (sub, outbox_id, status, status),
    )
    if days_ago is not None:
        db.execute(
            "UPDATE event_deliveries SET delivered_at = delivered_at - make_interval(days => %s), "
            "last_attempt_at = last_attempt_at - make_interval(days => %s) "
            "WHERE subscription_id = %s AND outbox_id = %s",
            (days_ago, days_ago, sub, outbox_id),
        )


def fanned_out(db: psycopg.Connection, genealogy: bool = True) -> None:
    """The dispatcher (and genealogy) have read every event written so far."""
    last = "(SELECT tx, id FROM event_outbox ORDER BY tx DESC, id DESC LIMIT 1)"
    db.execute(f"UPDATE event_fanout_cursor c SET tx = l.tx, id = l.id FROM {last} l")
    if genealogy:
        db.execute(f"UPDATE genealogy_event_cursor c SET tx = l.tx, id = l.id FROM {last} l")


def outbox(db: psycopg.Connection) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM event_outbox")}


def log_of(db: psycopg.Connection) -> set[int]:
    """The outbox ids that still have delivery-log rows."""
    return {r[0] for r in db.execute("SELECT DISTINCT outbox_id FROM event_deliveries")}


async def test_one_pass_removes_what_is_done_with_and_keeps_every_undelivered_event(
    db: psycopg.Connection, events_pool: asyncpg.Pool
) -> None:
    a, b = subs(db)
    gone, kept, logged = set(), set(), set()
    # Delivered to both, 40 days ago: goes, with both log rows.
    e = event(db, 41)
    deliver(db, a, e, "delivered", 40)
    deliver(db, b, e, "delivered", 40)
    gone.add(e)
    # Given up (failed after 24 h of retries) 35 days ago at one, delivered at the other: goes.
    e = event(db, 36)
    deliver(db, a, e, "failed", 35)
    deliver(db, b, e, "delivered", 35)
    gone.add(e)
    # No subscription wanted it, 31 days ago: goes.
    gone.add(event(db, 31))
    # Delivered at one 40 days ago, still pending at the other (a paused subscriber): stays, whole.
    e = event(db, 41)
    deliver(db, a, e, "delivered", 40)
    deliver(db, b, e, "pending", 40)
    kept.add(e)
    logged.add(e)
    # Occurred long ago but delivered only 10 days ago (redelivered): stays.
    e = event(db, 45)
    deliver(db, a, e, "delivered", 10)
    kept.add(e)
    logged.add(e)
    # Recent, delivered: stays.
    e = event(db, 1)
    deliver(db, a, e, "delivered", 1)
    kept.add(e)
    logged.add(e)
    kept.add(event(db, 0))  # just written, no delivery yet
    fanned_out(db)
    # Written after the dispatcher last looked (past its cursor), however old: stays.
    kept.add(event(db, 60))

    done = await retention.prune(events_pool, DAYS)

    assert outbox(db) == kept
    assert (done.events, done.deliveries) == (len(gone), 4)
    assert log_of(db) == logged  # the kept events' log rows, all of them (4)
    assert db.execute("SELECT count(*) FROM event_deliveries").fetchone() == (4,)
    pending = db.execute("SELECT count(*) FROM event_deliveries WHERE status = 'pending'").fetchone()
    assert pending == (1,)
    # A second pass finds nothing more; 0 days keeps everything.
    assert (await retention.prune(events_pool, DAYS)).events == 0
    db.execute(
        "UPDATE event_deliveries SET delivered_at = now() - interval '400 days' WHERE status = 'delivered'"
    )
    assert (await retention.prune(events_pool, 0)) == retention.Pruned()
    assert outbox(db) == kept


async def test_a_decision_genealogy_has_not_read_yet_stays(
    db: psycopg.Connection, events_pool: asyncpg.Pool
) -> None:
    """genealogy derives lot.blocked/unblocked from qc.decision.recorded: it must read it first."""
    a, _ = subs(db)
    read = event(db, 40, "qc.decision.recorded")
    deliver(db, a, read, "delivered", 40)
    fanned_out(db)
    unread = event(db, 40, "qc.decision.recorded")
    other = event(db, 40)  # not a decision: genealogy's read position does not hold it
    deliver(db, a, unread, "delivered", 40)
    deliver(db, a, other, "delivered", 40)
    fanned_out(db, genealogy=False)

    await retention.prune(events_pool, DAYS)

    assert outbox(db) == {unread}
    assert log_of(db) == {unread}


async def test_a_pass_walks_the_whole_table_in_small_calls_and_stops_at_young_rows(
    db: psycopg.Connection, events_pool: asyncpg.Pool
) -> None:
    a, _ = subs(db)
    old = [event(db, 40) for _ in range(23)]
    for e in old[::2]:
        deliver(db, a, e, "delivered", 39)
    stuck = old[4]
    db.execute(
        "UPDATE event_deliveries SET status = 'pending', delivered_at = NULL WHERE outbox_id = %s", (stuck,)
    )
    young = [event(db, 2) for _ in range(15)]
    fanned_out(db)

    done = await retention.prune(events_pool, DAYS, scan=4)

    assert outbox(db) == {stuck, *young}
    assert done.events == len(old) - 1
    # 23 old rows in windows of 4 (the stuck one stays in its window), then the first window
    # with a young row ends the pass: it does not read on through the young part.
    assert done.calls == 6


async def test_only_the_events_role_prunes_and_no_one_deletes_by_hand(
    servers: Servers, empty_db_url: str, db: psycopg.Connection
) -> None:
    event(db, 40)
    fanned_out(db)
    name = _database(empty_db_url)
    for service in ("qc", "genealogy", "lots", "health"):
        url = servers.pg.service_url(service, name)
        with (
            psycopg.connect(url, autocommit=True) as conn,
            pytest.raises(errors.InsufficientPrivilege, match="permission denied for function"),
        ):
            conn.execute("SELECT * FROM flowviz_prune_events(now(), 0, 10)")
    with psycopg.connect(servers.pg.service_url("events", name), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table"):
            conn.execute("DELETE FROM event_outbox")
        # The setting the function runs with opens nothing to a role without DELETE.
        conn.execute("SET flowviz.outbox_prune = 'on'")
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table"):
            conn.execute("DELETE FROM event_outbox")
    # Even the superuser's plain DELETE or UPDATE is refused by the trigger.
    for statement in ("DELETE FROM event_outbox", "UPDATE event_outbox SET actor = 'x'"):
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            db.execute(statement)
    assert len(outbox(db)) == 1


@pytest.mark.parametrize(("value", "said"), [("-1", "outside 0..36500"), ("a month", "not an integer")])
def test_the_retention_setting_is_validated(monkeypatch: pytest.MonkeyPatch, value: str, said: str) -> None:
    for name, key in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, key)
    settings.cache_clear()
    try:
        assert settings().events_retention_days == 30
        settings.cache_clear()
        monkeypatch.setenv("FLOWVIZ_EVENTS_RETENTION_DAYS", "0")
        assert settings().events_retention_days == 0
        settings.cache_clear()
        monkeypatch.setenv("FLOWVIZ_EVENTS_RETENTION_DAYS", value)
        with pytest.raises(ConfigError, match=f"FLOWVIZ_EVENTS_RETENTION_DAYS.*{said}"):
            settings()
    finally:
        settings.cache_clear()
