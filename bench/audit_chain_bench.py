"""What the audit log's hash chain costs concurrent writers: --connections connections each
commit transactions of one audit row (as every write RPC does), on a throwaway embedded
PostgreSQL with durable commits, three ways interleaved in each round. Not a test: it prints
commits/s.

- trigger: migration 0010's chain trigger (re-created here): one transaction-scoped advisory
  lock from a writer's audit insert until its COMMIT (WAL flush included), so every other
  writer's audit insert waits and commits cannot share a WAL flush;
- sealed: migration 0013 as it ships: the insert only stamps its row's digest, and the services'
  background sealer (flowviz.core.audit.keep_sealed, every 0.2 s, on its own connection) links
  the committed rows meanwhile; printed with the rows still unsealed when the writers stop and
  the time the last pass took to catch up;
- none: no trigger, no sealer (the floor).

    .venv/bin/python bench/audit_chain_bench.py --connections 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg

from flowviz.core import audit
from flowviz.tools import migrate
from flowviz.tools.embedded import Postgres, free_port


async def burst(url: str, connections: int, seconds: float) -> float:
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    done = 0
    stop = time.perf_counter() + seconds

    async def writer(conn: asyncpg.Connection, n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            async with conn.transaction():
                await conn.execute(audit.INSERT, "bench", "record", "bench", f"{n}-{i}", "", "{}")
            i += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(c, n) for n, c in enumerate(conns)))
    rate = done / (time.perf_counter() - started)
    for c in conns:
        await c.close()
    return rate


# Migration 0010's trigger, as it was, under a name of the bench's own.
CHAIN_0010 = r"""
CREATE FUNCTION bench_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last record;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('flowviz_audit_chain'));
    SELECT a.seq, a.hash INTO last FROM audit_log a WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
    NEW.seq := COALESCE(last.seq, 0) + 1;
    NEW.prev_hash := COALESCE(last.hash, ''::bytea);
    NEW.hash := flowviz_audit_digest(NEW.seq, NEW.prev_hash, NEW.at, NEW.actor, NEW.action,
                                     NEW.entity, NEW.entity_key, NEW.reason, NEW.details);
    RETURN NEW;
END;
$$;
CREATE TRIGGER bench_audit_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION bench_audit_chain();
"""
REMOVE_UNCHAINED = """
ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
DELETE FROM audit_log WHERE seq IS NULL AND digest IS NULL;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;
"""
TRIGGERS = {"trigger": "bench_audit_chain", "sealed": "audit_log_stamp"}


async def sealed_burst(url: str, connections: int, seconds: float) -> tuple[float, int, float]:
    """A burst with the background sealer running beside it: commits/s, rows left unsealed when
    the writers stop, seconds the sealer then took to seal them."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    stop = asyncio.Event()
    sealer = asyncio.create_task(audit.keep_sealed(pool, stop))
    try:
        rate = await burst(url, connections, seconds)
        async with pool.acquire() as conn:
            left = int(
                await conn.fetchval("SELECT count(*) FROM audit_log WHERE seq IS NULL AND digest IS NOT NULL")
            )
        stop.set()
        await sealer
        started = time.perf_counter()
        async with pool.acquire() as conn:
            while (await audit.seal(conn)) != 0:
                pass
        return rate, left, time.perf_counter() - started
    finally:
        stop.set()
        await sealer
        await pool.close()


async def run(url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(CHAIN_0010)
        for rnd in range(args.rounds):
            for mode in ("trigger", "sealed", "none"):
                for name, trigger in TRIGGERS.items():
                    await admin.execute(
                        f"ALTER TABLE audit_log {'ENABLE' if name == mode else 'DISABLE'} TRIGGER {trigger}"
                    )
                extra = ""
                if mode == "sealed":
                    rate, left, catch_up = await sealed_burst(url, args.connections, args.seconds)
                    extra = f" ({left:,} rows unsealed at the end, sealed in {catch_up * 1000:.0f} ms)"
                else:
                    rate = await burst(url, args.connections, args.seconds)
                if mode == "none":  # its rows, never sealable, would sit in the sealer's index
                    await admin.execute(REMOVE_UNCHAINED)
                    await admin.execute("VACUUM audit_log")
                print(f"round {rnd + 1}, chain {mode:<7}: {rate:,.0f} commits/s "
                      f"at {args.connections} connections{extra}", flush=True)  # fmt: skip
    finally:
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        pg = Postgres(Path(tmp) / "pg", free_port())
        pg.init()
        pg.start()  # durable commits (fsync on), as in make run: the WAL flush is the point
        try:
            migrate.upgrade(pg.url)
            asyncio.run(run(pg.url, args))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
