"""The audit log as a hash chain sealed after commit (migrations 0010, 0013) and `flowviz audit
verify`: writers stamp rows without waiting for each other, one sealer at a time links committed
rows into one linear chain; a row edited, deleted or inserted behind the database's rules (as the
superuser, with the triggers off) is named by the walk, sealed or not yet."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import threading
import time

import asyncpg
import httpx
import psycopg
import pytest

from flowviz.core import audit
from flowviz.tools import auditchain, migrate
from tests.conftest import ROOT, Servers, System

INSERT = "INSERT INTO audit_log (actor, action, entity, entity_key, reason, details) VALUES (%s, %s, %s, %s, %s, %s)"
SEAL = "SELECT flowviz_audit_seal(10000, false)"


def write(url: str, n: int, who: str = "t") -> None:
    with psycopg.connect(url) as conn:
        for i in range(n):
            with conn.transaction():
                conn.execute(INSERT, (who, "create", "lot", f"L{i}", "", f'{{"i": {i}}}'))


def ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY seq NULLS LAST, id")]


def unsealed(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log WHERE seq IS NULL").fetchone()
    assert row is not None
    return int(row[0])


def behind_the_rules(url: str, sql: str, *args: object) -> None:
    """As the database superuser, with every trigger off (session_replication_role = replica)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql, args or None)


@pytest.fixture
def chained(empty_db_url: str) -> str:
    """A log of 30 sealed rows: single inserts, one multi-row statement, and six writers at once
    while two sealers run beside them."""
    write(empty_db_url, 5)
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_key) "
            "SELECT 'bulk', 'create', 'lot', 'B' || g FROM generate_series(1, 7) g"
        )
    writing = threading.Event()

    def sealer() -> None:
        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            while writing.is_set():
                conn.execute(SEAL)

    writing.set()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sealers = [pool.submit(sealer) for _ in range(2)]
        list(pool.map(lambda w: write(empty_db_url, 3, f"w{w}"), range(6)))
        writing.clear()
        for s in sealers:
            s.result()
    auditchain.seal(empty_db_url)
    assert unsealed(empty_db_url) == 0
    return empty_db_url


def test_concurrent_writers_make_one_linear_chain(chained: str) -> None:
    result = auditchain.verify(chained)
    assert result.ok, result.message
    assert result.rows == 30 and result.unsealed == 0
    with psycopg.connect(chained) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_log ORDER BY seq")]
        head = conn.execute("SELECT encode(hash, 'hex') FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert seqs == list(range(1, 31))
    assert head is not None and result.head == head[0]


def test_a_writer_never_waits_for_another_and_a_late_commit_is_sealed_later(empty_db_url: str) -> None:
    """An open transaction holding an audit row does not hold up another writer's commit (under
    0010 it did: one lock to COMMIT); its row, with the smaller id, is sealed once it commits."""
    with psycopg.connect(empty_db_url) as slow, psycopg.connect(empty_db_url) as fast:
        slow.execute(INSERT + " RETURNING id", ("slow", "create", "lot", "S", "", "{}"))
        fast.execute("SET lock_timeout = '5s'")  # a wait would fail here rather than hang
        fast.execute(INSERT, ("fast", "create", "lot", "F", "", "{}"))
        fast.commit()
        assert auditchain.seal(empty_db_url) == 1  # the fast row; the slow one is not visible yet
        slow.commit()
    assert auditchain.seal(empty_db_url) == 1
    with psycopg.connect(empty_db_url) as conn:
        order = [r[0] for r in conn.execute("SELECT actor FROM audit_log ORDER BY seq")]
    assert order == ["fast", "slow"]
    assert auditchain.verify(empty_db_url).rows == 2


def test_one_sealer_at_a_time_the_others_skip(empty_db_url: str) -> None:
    write(empty_db_url, 2)
    with psycopg.connect(empty_db_url, autocommit=True) as holder, psycopg.connect(empty_db_url) as other:
        holder.execute("SELECT pg_advisory_lock(hashtext('flowviz_audit_seal'))")
        assert other.execute(SEAL).fetchone() == (None,)
        other.rollback()
        holder.execute("SELECT pg_advisory_unlock(hashtext('flowviz_audit_seal'))")
    assert auditchain.seal(empty_db_url) == 2


def test_the_sealer_refuses_a_fixed_snapshot(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.RaiseException, match="READ COMMITTED"):
            conn.execute(SEAL)


def test_the_rules_still_refuse_a_plain_update(chained: str) -> None:
    with psycopg.connect(chained) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE audit_log SET reason = 'x'")


def test_only_sealing_an_unsealed_row_is_allowed(chained: str) -> None:
    """Even the superuser, triggers on, may not forge a link, edit while sealing or reseal; DELETE
    stays refused."""
    write(chained, 1)
    fresh, first = ids(chained)[-1], ids(chained)[0]
    prev = "(SELECT hash FROM audit_log WHERE seq = 30)"
    attempts = [
        f"UPDATE audit_log SET seq = 31, prev_hash = {prev}, hash = '\\x00' WHERE id = {fresh}",
        f"UPDATE audit_log SET seq = 31, prev_hash = {prev}, actor = 'x', hash = flowviz_audit_digest("
        f"31, {prev}, at, 'x', action, entity, entity_key, reason, details) WHERE id = {fresh}",
        f"UPDATE audit_log SET seq = seq WHERE id = {first}",
        "DELETE FROM audit_log WHERE seq = 1",
    ]
    for sql in attempts:
        with psycopg.connect(chained) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)
    assert auditchain.seal(chained) == 1  # the rule lets the real seal through
    assert auditchain.verify(chained).rows == 31


def test_an_edited_row_is_named(chained: str) -> None:
    target = ids(chained)[11]
    behind_the_rules(chained, "UPDATE audit_log SET details = '{\"i\": 99}' WHERE id = %s", target)
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem, result.rows) == (target, "edited", 11)


def test_an_edited_and_rehashed_row_is_named(chained: str) -> None:
    order = ids(chained)
    target = order[4]
    behind_the_rules(
        chained,
        "UPDATE audit_log SET actor = 'someone else', hash = flowviz_audit_digest(seq, prev_hash, at, "
        "'someone else', action, entity, entity_key, reason, details) WHERE id = %s",
        target,
    )
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem) == (target, "edited"), result.message


def test_a_deleted_row_is_found_at_the_gap(chained: str) -> None:
    order = ids(chained)
    behind_the_rules(chained, "DELETE FROM audit_log WHERE id = %s", order[20])
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem, result.rows) == (order[21], "deleted", 20)
    assert "seq 21..21" in result.message


def test_a_row_inserted_behind_the_rules_is_named_and_never_sealed(chained: str) -> None:
    with psycopg.connect(chained, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        row = conn.execute(INSERT + " RETURNING id", ("intruder", "create", "lot", "X", "", "{}")).fetchone()
    assert row is not None
    write(chained, 2)  # rows after it are sealed all the same
    result = auditchain.verify(chained)
    assert (result.broken_at, result.problem, result.rows) == (row[0], "inserted", 32), result.message
    assert unsealed(chained) == 1


def test_a_row_edited_before_it_was_sealed_is_named(chained: str) -> None:
    """The insert's own digest covers the window between commit and seal."""
    write(chained, 2)
    target = ids(chained)[-2]
    behind_the_rules(chained, "UPDATE audit_log SET reason = 'rewritten' WHERE id = %s", target)
    result = auditchain.verify(chained, sealing=False)
    assert (result.broken_at, result.problem) == (target, "edited"), result.message
    result = auditchain.verify(chained)  # sealed over the edit: still named, by its digest
    assert (result.broken_at, result.problem, result.rows) == (target, "edited", 30), result.message


def test_a_writer_cannot_supply_its_own_link(chained: str) -> None:
    with psycopg.connect(chained) as conn:
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_key, seq, prev_hash, hash, digest) "
            "VALUES ('t', 'create', 'lot', 'L', 99, '\\x01', '\\x02', '\\x03')"
        )
    assert auditchain.verify(chained).rows == 31


def test_unsealed_rows_are_reported_and_an_old_one_is_a_problem(chained: str) -> None:
    write(chained, 1)
    result = auditchain.verify(chained, sealing=False, max_unsealed_age=3600)
    assert result.ok and (result.rows, result.unsealed) == (30, 1), result.message
    with psycopg.connect(chained) as conn:  # written two hours ago, as far as the row says
        row = conn.execute(
            "INSERT INTO audit_log (at, actor, action, entity, entity_key) "
            "VALUES (now() - interval '2 hours', 't', 'create', 'lot', 'OLD') RETURNING id"
        ).fetchone()
    assert row is not None
    result = auditchain.verify(chained, sealing=False, max_unsealed_age=3600)
    assert (result.broken_at, result.problem) == (row[0], "unsealed"), result.message
    assert auditchain.verify(chained, max_unsealed_age=3600).rows == 32


def test_each_service_keeps_the_chain_sealed(empty_db_url: str) -> None:
    """The background sealer every audit-writing service runs (flowviz.core.server)."""

    async def main() -> None:
        pool = await asyncpg.create_pool(empty_db_url, min_size=1, max_size=2)
        try:
            assert audit.start_sealing("health", pool) is None
            stops = [audit.start_sealing(s, pool) for s in ("lots", "qc")]
            async with pool.acquire() as conn:
                for i in range(5):
                    await conn.execute(audit.INSERT, "t", "create", "lot", f"K{i}", "", "{}")
                async with asyncio.timeout(30):  # sealed by the background task, not by us
                    while True:
                        if not await conn.fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL"):
                            break
                        await asyncio.sleep(0.05)
            for stop in stops:
                assert stop is not None
                await stop()
        finally:
            await pool.close()

    asyncio.run(main())
    assert auditchain.verify(empty_db_url, sealing=False).rows == 5


def test_the_running_services_seal_what_they_write(system: System, http: httpx.Client) -> None:
    code = f"RAW-SEALED-{os.getpid()}"
    lot = {"lot_code": code, "kind": "RAW", "product": "sealing", "quantity": 1, "uom": "kg"}
    assert http.post("/api/lots", json=lot).status_code == 201
    deadline = time.monotonic() + 30
    with psycopg.connect(system.env["DATABASE_URL"], autocommit=True) as conn:
        while True:  # nobody but the services' own sealers seals here
            row = conn.execute(
                "SELECT seq FROM audit_log WHERE entity = 'lot' AND entity_key = %s", (code,)
            ).fetchone()
            assert row is not None
            if row[0] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert row[0] is not None, "not sealed within 30 s"


def test_the_migration_keeps_the_chain_of_0010_and_goes_back(servers: Servers) -> None:
    with servers.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS chain_up WITH (FORCE)")
        conn.execute("CREATE DATABASE chain_up")
    url = servers.url("chain_up")
    migrate.upgrade(url, "0012")
    write(url, 4)  # chained by 0010's trigger
    migrate.upgrade(url)
    assert auditchain.verify(url, sealing=False).rows == 4
    write(url, 3)
    assert auditchain.verify(url).rows == 7
    write(url, 2)  # left unsealed: the downgrade chains them
    migrate.downgrade(url, "0012")
    write(url, 1)  # 0010's trigger again
    with psycopg.connect(url) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_log ORDER BY id")]
    assert seqs == list(range(1, 11))
    migrate.upgrade(url)
    assert auditchain.verify(url).rows == 10
    with servers.admin() as conn:
        conn.execute("DROP DATABASE chain_up WITH (FORCE)")


def test_the_command_says_it(chained: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DATABASE_URL": chained, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "flowviz.tools.cli", "audit", "verify", *args],
            env=env,
            capture_output=True,
            text=True,
        )

    ok = run()
    assert ok.returncode == 0 and "audit chain intact: 30 rows" in ok.stdout, ok.stderr
    write(chained, 1)
    pending = run("--no-seal")
    assert pending.returncode == 0 and "1 rows written since, not yet sealed" in pending.stdout
    target = ids(chained)[2]
    behind_the_rules(chained, "UPDATE audit_log SET reason = 'changed' WHERE id = %s", target)
    broken = run()
    assert broken.returncode == 1
    assert f"row {target} (seq 3) was edited" in broken.stderr
