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

With --runs, the same A/B through the whole system instead: bench/run.py's launcher starts
flowviz (`flowviz.tools.cli run` on the seed data, its own ports and data folder) and its k6
script writes.js posts production runs (3 inputs, 1 output) at 50 connections, the chain by
trigger and sealed after commit interleaved (the database switched between them in place; the
services' sealers find nothing to seal under the trigger). Ends with `flowviz audit verify`.

    .venv/bin/python bench/audit_chain_bench.py --runs --seconds 10 --rounds 2
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
        started = time.perf_counter()
        stop.set()
        await sealer  # its last pass
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


def switch(url: str, mode: str) -> None:
    """The system's database to `mode` ("trigger" or "sealed"), between two k6 runs."""
    import psycopg

    from flowviz.tools import auditchain

    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regproc('bench_audit_chain')").fetchone() == (None,):
            conn.execute(CHAIN_0010)
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_stamp")
        auditchain.seal(url)  # the trigger must start from a sealed head
        for name, trigger in TRIGGERS.items():
            conn.execute(f"ALTER TABLE audit_log {'ENABLE' if name == mode else 'DISABLE'} TRIGGER {trigger}")


def in_database(url: str, tag: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM production_runs WHERE run_code LIKE %s", (f"{tag}-R-%",)
        ).fetchone()
    return int(row[0]) if row else 0


def production_runs(args: argparse.Namespace) -> None:
    import importlib.util
    import sys

    from flowviz.tools import auditchain

    spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).with_name("run.py"))
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = harness
    spec.loader.exec_module(harness)
    harness.ensure_tools()
    ports = {k: v + args.port_offset for k, v in harness.BASE_PORTS.items()}
    with tempfile.TemporaryDirectory(prefix="audit-runs-") as tmp:
        out = Path(__file__).with_name("out") / "audit-runs"  # k6's logs and summaries, kept
        out.mkdir(parents=True, exist_ok=True)
        sampler = harness.Sampler()
        system = harness.System(ports, Path(tmp) / "data", out, sampler)
        base_env = system.env
        # The events service is newer than bench/run.py's port table: give it ports of its own too.
        events = {
            "FLOWVIZ_EVENTS_PORT": str(ports["qc"] + 10),
            "FLOWVIZ_EVENTS_METRICS_PORT": str(ports["qc_metrics"] + 10),
        }
        system.env = lambda: {**base_env(), **events}
        try:
            system.start()
            token = system.token()
            for rnd in range(args.rounds):
                for mode in ("trigger", "sealed"):
                    switch(system.database_url, mode)
                    env = {"BASE": system.base, "TOKEN": token, "TAG": f"AC{rnd}{mode[0].upper()}{int(time.time()) % 10**6}",
                           "DURATION": f"{args.seconds:g}s", "MODE": "vus", "VUS": str(args.connections)}  # fmt: skip
                    snap, busy, kids = (
                        sampler.snapshot(),
                        harness.busy_cpu_seconds(),
                        harness.children_cpu_seconds(),
                    )
                    res = harness.run_k6("writes.js", env, int(args.seconds), out, f"{mode}{rnd}")
                    cpu = harness.Sampler.cpu_delta(snap, sampler.snapshot())
                    cpu["k6"] = harness.children_cpu_seconds() - kids
                    cpu["other"] = max(0.0, harness.busy_cpu_seconds() - busy - sum(cpu.values()))  # not ours
                    used = ", ".join(
                        f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5
                    )
                    created = res["metrics"].get("created", {}).get("values", {}).get("count", 0)
                    stored = in_database(system.database_url, env["TAG"])
                    print(f"round {rnd + 1}, chain {mode:<7}: {created / args.seconds:,.0f} production runs/s "
                          f"(201s) at {args.connections} connections, P50 {res['p50_ms']:.0f} ms, "
                          f"P99 {res['p99_ms']:.0f} ms, {res['errors']} errors; {created} = {stored} in PostgreSQL; CPU s: {used}", flush=True)  # fmt: skip
            result = auditchain.verify(system.database_url)
            print(f"flowviz audit verify: {'intact' if result.ok else result.message}, {result.rows} rows")
        finally:
            system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", action="store_true", help="production runs through the whole system")
    parser.add_argument("--port-offset", type=int, default=300, help="added to bench/run.py's ports")
    args = parser.parse_args()
    if args.runs:
        production_runs(args)
        return
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
