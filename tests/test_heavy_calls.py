"""Heavy queries cannot starve others (issue 15, item 6): every statement's timeout follows its
call's deadline (PostgreSQL cancels it: DEADLINE_EXCEEDED, HTTP 504, never 500), and a user's
concurrent heavy calls are bounded (past the bound: 429 with Retry-After), across replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import asyncpg
import grpc
import httpx
import psycopg
import pytest
import valkey

from flowviz.core import db, heavy
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.tools.embedded import free_port
from tests.conftest import Servers, System, bearer, grpc_channel


def test_the_statement_timeout_stays_below_the_deadline() -> None:
    assert db.statement_timeout_ms(None) is None
    assert db.statement_timeout_ms(5.0) == 4700  # 250 ms below, rounded down to 100 ms
    assert db.statement_timeout_ms(4.99) == 4700  # the same for calls a few ms apart: no SET
    assert db.statement_timeout_ms(0.5) == 450
    assert db.statement_timeout_ms(0.0) == 1  # never 0: that would mean no timeout at all
    assert db.statement_timeout_ms(-3.0) == 1


def test_a_connection_keeps_its_statement_timeout_while_it_is_within_the_band() -> None:
    # Set at 90% of the limit, it stays from 80% up to the limit: never above it.
    assert db.with_headroom(4700) == 4200
    assert db.with_headroom(450) == 405
    assert db.with_headroom(1) == 1
    assert db.with_headroom(None) is None
    assert db.may_stay(4200, 4700) and db.may_stay(4200, 4600) and db.may_stay(4200, 5200)
    assert not db.may_stay(4200, 4100)  # the call has less time than that: lower it
    assert not db.may_stay(4200, 5300)  # far below what the call may use: raise it
    assert db.may_stay(None, None) and not db.may_stay(None, 4700) and not db.may_stay(4200, None)


def test_a_pooled_statement_past_the_call_deadline_is_cancelled_by_postgresql(empty_db_url: str) -> None:
    async def scenario() -> None:
        pool = await db.create_pool(empty_db_url, name="deadline-test", min_size=1, max_size=1)
        try:
            token = db.call_deadline.set(time.monotonic() + 0.5)
            try:
                shown = await pool.fetchval("SHOW statement_timeout")
                assert shown.endswith("ms") and 0 < int(shown[:-2]) <= 450, shown
                with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
                    await pool.fetchval("SELECT pg_sleep(30)")
                async with pool.acquire() as conn, conn.transaction():  # transactions too
                    with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
                        await conn.execute("SELECT pg_sleep(30)")
            finally:
                db.call_deadline.reset(token)
            # Outside a call the same connection is back to the server's default.
            assert await pool.fetchval("SHOW statement_timeout") == "0"
            assert await pool.fetchval("SELECT pg_sleep(0.6)::text") == ""
        finally:
            await pool.close()

    asyncio.run(scenario())


@pytest.fixture
def lots_locked(servers: Servers, system: System) -> Iterator[psycopg.Connection]:
    """The lots table locked against reads: every trace waits inside PostgreSQL until released."""
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        conn.execute("LOCK TABLE lots IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


def _waiting(system: System) -> int:
    """Genealogy's backends waiting for the lock (its serving pool's and its heavy answers')."""
    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name LIKE 'flowviz-genealogy%' AND wait_event_type = 'Lock'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _until(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_trace_outliving_its_deadline_is_cancelled_not_a_500(
    system: System, lots_locked: psycopg.Connection
) -> None:
    code = f"NOPE-{uuid.uuid4().hex[:8].upper()}"
    stub = genealogy_pb2_grpc.GenealogyServiceStub(grpc_channel(system.addr("genealogy"), "ana"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetTraceGraph(genealogy_pb2.GetTraceGraphRequest(lot_code=code), timeout=2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The query did not go on waiting behind the lock after the caller gave up.
    _until(lambda: _waiting(system) == 0)
    with httpx.Client(base_url=system.base, headers=bearer("ana"), timeout=30) as client:
        r = client.get(f"/api/traceability/{code}-2/graph")
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "DEADLINE_EXCEEDED"
    _until(lambda: _waiting(system) == 0)
    assert "unhandled error" not in system.log("genealogy")


def _graph(system: System, user: str, code: str) -> httpx.Response:
    with httpx.Client(base_url=system.base, headers=bearer(user), timeout=30) as client:
        return client.get(f"/api/traceability/{code}/graph")


def test_a_heavy_call_past_the_users_bound_gets_429_with_retry_after(
    system: System, lots_locked: psycopg.Connection
) -> None:
    t = uuid.uuid4().hex[:6].upper()
    ana = genealogy_pb2_grpc.GenealogyServiceStub(grpc_channel(system.addr("genealogy"), "ana"))
    omar = genealogy_pb2_grpc.GenealogyServiceStub(grpc_channel(system.addr("genealogy"), "omar"))

    def trace(stub: genealogy_pb2_grpc.GenealogyServiceStub, code: str) -> grpc.Future:
        # A deadline far beyond the test: these stay inside PostgreSQL until the lock goes.
        return stub.GetTraceGraph.future(genealogy_pb2.GetTraceGraphRequest(lot_code=code), timeout=120)

    held = [trace(ana, f"HELD-{t}-{i}") for i in range(4)]
    _until(lambda: _waiting(system) == 4)  # four of ana's traces inside PostgreSQL
    refused = _graph(system, "ana", f"FIFTH-{t}")
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["reason"] == "HEAVY_CALLS_LIMITED"
    other = trace(omar, f"OTHER-{t}")  # another user is not bounded by ana's calls
    _until(lambda: _waiting(system) == 5)
    lots_locked.rollback()
    for call in [*held, other]:
        assert call.exception().code() == grpc.StatusCode.NOT_FOUND
    # The leases came back (released after the answers, in the background): ana may trace again.
    with valkey.Valkey.from_url(system.env["VALKEY_URL"]) as client:
        name = heavy.key(system.env["DATABASE_URL"], "ana")
        _until(lambda: client.zcount(name, int(time.time() * 1000), "+inf") == 0)
    assert _graph(system, "ana", "FG-DONER-X1").status_code == 200


def test_the_bound_is_shared_by_every_replica_through_valkey(system: System) -> None:
    """Leases another replica holds (written straight into Valkey here) count."""
    name = heavy.key(system.env["DATABASE_URL"], "ana")
    with valkey.Valkey.from_url(system.env["VALKEY_URL"]) as client:
        client.delete(name)  # ana's own leases of the tests before (held FLOWVIZ_HEAVY_MIN_MS)
        far = int(time.time() * 1000) + 60_000
        client.zadd(name, {f"elsewhere-{i}": far for i in range(4)})
        try:
            r = _graph(system, "ana", "FG-DONER-X1")
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "1"
            assert _graph(system, "omar", "FG-DONER-X1").status_code == 200
            client.zrem(name, "elsewhere-0")
            assert _graph(system, "ana", "FG-DONER-X1").status_code == 200
            # Its own lease released after the answer (held at most FLOWVIZ_HEAVY_MIN_MS longer).
            _until(lambda: client.zcount(name, int(time.time() * 1000), "+inf") == 3)
        finally:
            client.delete(name)
        # A lease whose holder died expires on its own.
        client.zadd(name, {f"dead-{i}": int(time.time() * 1000) - 1 for i in range(4)})
        try:
            assert _graph(system, "ana", "FG-DONER-X1").status_code == 200
        finally:
            client.delete(name)


def test_without_valkey_the_bound_holds_per_process() -> None:
    async def scenario() -> None:
        down = valkey.asyncio.Valkey(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
        calls = heavy.HeavyCalls(lambda: down, "postgresql:///x", limit=2, timeout=0.5)
        a = await calls.acquire("ana", 10)
        await calls.acquire("ana", 10)
        with pytest.raises(heavy.TooManyHeavyCalls):
            await calls.acquire("ana", 10)
        await calls.acquire("omar", 10)
        calls.release(a)
        await calls.acquire("ana", 10)
        assert calls.fallbacks == 1  # then Valkey is skipped for a second, not waited for each time
        await down.aclose()

    asyncio.run(scenario())


def test_a_heavy_call_holds_its_place_for_the_minimum_even_when_it_ends_sooner(system: System) -> None:
    """limit / min_hold bounds how many heavy calls a user starts a second, not only how many run."""

    async def scenario() -> None:
        client = valkey.asyncio.Valkey.from_url(system.env["VALKEY_URL"])
        url = system.env["DATABASE_URL"]
        subject = f"hold-{uuid.uuid4().hex}"
        try:
            held = heavy.HeavyCalls(lambda: client, url, limit=2, min_hold=60.0)
            for lease in [await held.acquire(subject, 10), await held.acquire(subject, 10)]:
                held.release(lease)  # ended at once, but each keeps its place for a minute
            await asyncio.gather(*held._releasing)
            with pytest.raises(heavy.TooManyHeavyCalls):
                await held.acquire(subject, 10)
            assert held.fallbacks == 0  # decided in Valkey
            # A short hold gives the places back once it has passed.
            brief = heavy.HeavyCalls(lambda: client, url, limit=2, min_hold=0.2)
            other = f"brief-{uuid.uuid4().hex}"
            for lease in [await brief.acquire(other, 10), await brief.acquire(other, 10)]:
                brief.release(lease)
            deadline = time.monotonic() + 20
            while True:
                try:
                    await brief.acquire(other, 10)
                    break
                except heavy.TooManyHeavyCalls:
                    assert time.monotonic() < deadline, "the places never came back"
                    await asyncio.sleep(0.05)
        finally:
            await client.delete(heavy.key(url, subject), heavy.key(url, f"brief-{subject}"))
            await client.aclose()

    asyncio.run(scenario())


def test_without_valkey_the_minimum_hold_holds_per_process() -> None:
    async def scenario() -> None:
        down = valkey.asyncio.Valkey(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
        held = heavy.HeavyCalls(lambda: down, "postgresql:///x", limit=1, min_hold=60.0)
        held.release(await held.acquire("ana", 10))
        with pytest.raises(heavy.TooManyHeavyCalls):
            await held.acquire("ana", 10)
        brief = heavy.HeavyCalls(lambda: down, "postgresql:///x", limit=1, min_hold=0.1)
        brief.release(await brief.acquire("ana", 10))
        deadline = time.monotonic() + 20
        while "ana" in brief._local:
            assert time.monotonic() < deadline, "the place never came back"
            await asyncio.sleep(0.05)
        await brief.acquire("ana", 10)
        await down.aclose()

    asyncio.run(scenario())
