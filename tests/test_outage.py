"""Honest outages on the running system, with faults the test injects itself: PostgreSQL
killed (kill -9 of its whole process group) answers cached reads and fails everything else
fast with 503 DATABASE_UNAVAILABLE and Retry-After, never a half-done write; Valkey killed or
frozen is never a reason for an error. The system here has its own PostgreSQL and Valkey so
the faults touch no other test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from flowviz.core import db
from flowviz.core.errors import Unavailable
from flowviz.tools import migrate, seed
from flowviz.tools.embedded import Postgres, Valkey, free_port
from tests.conftest import Servers, System, add_users, bearer, running_system
from tests.test_production import lot, run

# Far below the gateway's 5 s deadline: an outage must not make a caller wait for it.
FAST = 2.5


@dataclass
class Own:
    servers: Servers
    system: System
    client: httpx.Client

    @property
    def pg(self) -> Postgres:
        return self.servers.pg

    @property
    def valkey(self) -> Valkey:
        return self.servers.valkey

    def kill_pg(self) -> None:
        """kill -9 the postmaster and every backend (they share its process group)."""
        assert self.pg.proc is not None
        os.killpg(self.pg.proc.pid, signal.SIGKILL)
        self.pg.proc.wait(10)

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.pg.url, autocommit=True)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    tmp = tmp_path_factory.mktemp("outage")
    (tmp / "logs").mkdir()
    pg = Postgres(tmp / "pg", free_port())
    pg.init(fast=True)
    pg.start()  # durable: a kill -9 must not lose an acknowledged commit
    vk = Valkey(tmp / "valkey", free_port())
    vk.start()
    migrate.upgrade(pg.url)
    pg.enable_service_roles()  # as make run: each service connects as its own role
    seed.load(pg.url)
    add_users(pg.url)
    servers = Servers(pg, vk, tmp)
    try:
        with (
            running_system(servers, pg.url, suffix="-outage") as system,
            httpx.Client(base_url=system.base, headers=bearer("omar"), timeout=30) as client,
        ):
            yield Own(servers, system, client)
    finally:
        vk.stop()
        pg.stop()


def timed(call: httpx.Client, method: str, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call.request(method, url, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - start


def until_ok(client: httpx.Client, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (r := client.get(url)).status_code != 200:
        assert r.status_code == 503, r.text
        assert time.monotonic() < deadline, f"{url} still {r.status_code} after {timeout}s"
        time.sleep(0.05)


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["reason"] == "DATABASE_UNAVAILABLE", response.text
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < FAST, f"took {elapsed:.2f}s"


def test_a_dead_database_answers_cached_reads_and_fails_the_rest_fast(own: Own) -> None:
    c = own.client
    t = uuid.uuid4().hex[:6].upper()
    lot(c, f"RAW-OUT-{t}", "RAW", 10)
    cached = c.get("/api/traceability/FG-DONER-X1")
    assert cached.status_code == 200
    try:
        own.kill_pg()
        # Cached: still answered, the same answer.
        for _ in range(3):
            again = c.get("/api/traceability/FG-DONER-X1")
            assert again.status_code == 200 and again.json() == cached.json()
        # Not cached, a write, a lookup, a list: each 503 DATABASE_UNAVAILABLE, fast, every time.
        for _ in range(3):
            assert_unavailable(*timed(c, "GET", "/api/traceability/RAW-BEEF-001"))
            assert_unavailable(*timed(c, "GET", f"/api/lots/RAW-OUT-{t}"))
            assert_unavailable(*timed(c, "GET", "/api/lots"))
            assert_unavailable(*timed(c, "POST", "/api/production-runs", json=_run_body(t)))
        assert "database unreachable, failing fast" in own.system.log("genealogy-outage")
    finally:
        own.pg.start()  # durable: a kill -9 must not lose an acknowledged commit
    # Back: the pools reconnect on their own; the refused write was not recorded, and its retry is.
    until_ok(c, "/api/traceability/RAW-BEEF-001")
    until_ok(c, f"/api/lots/RAW-OUT-{t}")
    assert c.get(f"/api/production-runs/RUN-OUT-{t}").status_code == 404
    r = c.post("/api/production-runs", json=_run_body(t), headers={"idempotency-key": f"k-{t}"})
    assert r.status_code == 201, r.text
    assert "database reachable again" in own.system.log("genealogy-outage")


def _run_body(t: str) -> dict[str, object]:
    return {
        "run_code": f"RUN-OUT-{t}",
        "stream_code": "DONER",
        "phase_code": "MIXING",
        "operator": "Ayse",
        "inputs": [{"lot_code": f"RAW-OUT-{t}", "quantity": 1, "uom": "kg"}],
        "outputs": [
            {"lot_code": f"MIX-OUT-{t}", "kind": "MIX", "product": "mix", "quantity": 1, "uom": "kg"}
        ],
    }


def test_a_database_killed_mid_write_leaves_nothing_and_the_retry_records_once(own: Own) -> None:
    c = own.client
    t = uuid.uuid4().hex[:6].upper()
    lot(c, f"RAW-OUT-{t}", "RAW", 10)
    with own.db() as db:
        # Edge inserts wait here, after the run and its output lot are written, until we kill.
        db.execute("""CREATE OR REPLACE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$""")
        db.execute(
            "CREATE TRIGGER stall BEFORE INSERT ON lot_genealogy FOR EACH ROW EXECUTE FUNCTION stall()"
        )
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                c.post, "/api/production-runs", json=_run_body(t), headers={"idempotency-key": f"k-{t}"}
            )
            deadline = time.monotonic() + 20
            while not db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%lot_genealogy%'"
            ).fetchone():
                assert time.monotonic() < deadline, "the run never reached its edges"
                time.sleep(0.05)
            try:
                own.kill_pg()
                answer = pending.result()
            finally:
                own.pg.start()  # durable: a kill -9 must not lose an acknowledged commit
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["reason"] == "DATABASE_UNAVAILABLE"
    with own.db() as db:
        db.execute("DROP TRIGGER stall ON lot_genealogy")
        assert db.execute(
            "SELECT count(*) FROM production_runs WHERE run_code = %s", (f"RUN-OUT-{t}",)
        ).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM lots WHERE lot_code = %s", (f"MIX-OUT-{t}",)).fetchone() == (
            0,
        )
    until_ok(c, f"/api/lots/RAW-OUT-{t}")
    # The client's retry with the same key records it; another retry replays it.
    for status in (201, 200):
        r = c.post("/api/production-runs", json=_run_body(t), headers={"idempotency-key": f"k-{t}"})
        assert r.status_code == status, r.text
    with own.db() as db:
        assert db.execute(
            "SELECT count(*) FROM production_runs WHERE run_code = %s", (f"RUN-OUT-{t}",)
        ).fetchone() == (1,)


def test_valkey_killed_or_frozen_is_never_an_error(own: Own) -> None:
    c = own.client
    t = uuid.uuid4().hex[:6].upper()
    lot(c, f"RAW-VK-{t}", "RAW", 10)
    assert c.get(f"/api/traceability/RAW-VK-{t}").status_code == 200  # cached now
    assert own.valkey.proc is not None
    own.valkey.proc.send_signal(signal.SIGSTOP)  # frozen: every cache call times out
    try:
        for i in range(3):
            assert c.get(f"/api/traceability/RAW-VK-{t}").status_code == 200
            assert c.get("/api/lots", params={"lot_code_prefix": f"RAW-VK-{t}"}).status_code == 200
            lot(c, f"RAW-VK-{t}-F{i}", "RAW", 1)
    finally:
        own.valkey.proc.send_signal(signal.SIGCONT)
    own.valkey.proc.kill()
    own.valkey.proc.wait(10)
    try:
        r = run(c, f"RUN-VK-{t}", [(f"RAW-VK-{t}", 1, "kg")], [(f"MIX-VK-{t}", "MIX", 1)])
        assert r.status_code == 201, r.text
        trace = c.get(f"/api/traceability/RAW-VK-{t}")
        assert trace.status_code == 200
        assert f"MIX-VK-{t}" in trace.text  # the write shows, the cache being gone
    finally:
        own.valkey.start()
    # Back: the answer after the write is never the one cached before it.
    trace = c.get(f"/api/traceability/RAW-VK-{t}")
    assert trace.status_code == 200 and f"MIX-VK-{t}" in trace.text


# --- a slow server is not a dead one (flowviz/core/db.py, Gate) --------------------------------


class SlowProxy:
    """A TCP proxy to PostgreSQL that holds each new connection for `delay` seconds before
    passing anything on: a server slow to hand out a new connection (a busy machine's scram
    exchange, a backend fork), while the connections it already has keep answering."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SlowProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(self.delay)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))


async def _slow_connect(pg_url: str, pg_port: int, *, others_answer: bool) -> tuple[bool, str]:
    """A new connection that takes 3x the gate's connect timeout, while the pool's existing
    connection keeps answering queries (or sits idle): (gate open afterwards, what connect did)."""
    async with SlowProxy(pg_port) as proxy:
        url = _through(pg_url, proxy.port)
        gate = db.Gate("slow", connect_timeout=0.3, retry_after=0)
        pool = await db.create_pool(url, name="slow", min_size=1, max_size=2, gate=gate)
        stop = asyncio.Event()

        async def chatter() -> None:
            while not stop.is_set():
                assert await pool.fetchval("SELECT 1") == 1
                await asyncio.sleep(0.02)

        talking = asyncio.create_task(chatter()) if others_answer else None
        proxy.delay = 0.9
        try:
            conn = await gate.connect(url)  # as the pool does when it grows
            await conn.close()
            outcome = "connected"
        except Unavailable as exc:
            outcome = exc.reason
        finally:
            stop.set()
            if talking is not None:
                await talking
            await pool.close()
        return gate.is_open, outcome


def test_a_slow_new_connection_does_not_close_the_gate_while_the_server_answers(own: Own) -> None:
    is_open, outcome = asyncio.run(_slow_connect(own.pg.url, own.pg.port, others_answer=True))
    assert (is_open, outcome) == (True, "connected")


def test_a_new_connection_that_hangs_with_no_sign_of_life_closes_the_gate(own: Own) -> None:
    # Nothing else answered meanwhile: as for a frozen server, fail fast and close the gate.
    is_open, outcome = asyncio.run(_slow_connect(own.pg.url, own.pg.port, others_answer=False))
    assert (is_open, outcome) == (False, "DATABASE_UNAVAILABLE")
