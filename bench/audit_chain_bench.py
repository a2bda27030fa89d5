"""What the audit log's hash chain costs concurrent writers: --connections connections each
commit transactions of one audit row (as every write RPC does), with the chain trigger on and
off, interleaved, on a throwaway embedded PostgreSQL. Not a test: it prints commits/s.

The chain's trigger takes one transaction-scoped advisory lock, so from a writer's audit insert
until its COMMIT (WAL flush included) every other writer's audit insert waits: commits cannot
share a WAL flush any more.

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


async def run(url: str, args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(url)
    try:
        for rnd in range(args.rounds):
            for chained in (True, False):
                await admin.execute(
                    f"ALTER TABLE audit_log {'ENABLE' if chained else 'DISABLE'} TRIGGER audit_log_chain"
                )
                rate = await burst(url, args.connections, args.seconds)
                print(f"round {rnd + 1}, chain {'on ' if chained else 'off'}: {rate:,.0f} commits/s "
                      f"at {args.connections} connections", flush=True)  # fmt: skip
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
