"""How fast ListLots' filters are over a large generated plant (the lots service's own SQL).

Against --database-url (a migrated database holding, e.g., `flowviz generate --lots 1000000`
imported with `flowviz import`), or an embedded PostgreSQL started, migrated and loaded here
from --plant (a folder with lots.csv and genealogy.csv). Puts holds and rejects on a few
lots (so effective_status has blocked lots to find), then calls
services.lots.repository.list_lots through one asyncpg connection with prepared statements,
as the service does (a first page of 50, and a page deep into the result), each case --calls
times with varied arguments, and prints P50/P99 in ms. Not a test.

    .venv/bin/python bench/lot_search_bench.py --plant /tmp/plant --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from flowviz.tools.embedded import Postgres, free_port
from services.genealogy.importer import import_csv
from services.lots.repository import LotFilter, list_lots

PAGE = 50


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def load(url: str, plant: Path) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await conn.fetchval("SELECT count(*) FROM lots") == 0:
            started = time.perf_counter()
            with open(plant / "lots.csv", "rb") as lots, open(plant / "genealogy.csv", "rb") as edges:  # noqa: ASYNC230
                result = await import_csv(conn, lots, edges)
            assert result.ok, result.errors[:5]
            log(
                f"imported {result.lots_imported} lots, {result.edges_imported} edges in {time.perf_counter() - started:.0f}s"
            )
    finally:
        await conn.close()


async def block_some(conn: asyncpg.Connection, rng: random.Random) -> None:
    """A hold on the most-used spice lot and on a few random lots, a reject on a few more."""
    if await conn.fetchval("SELECT count(*) FROM qc_decisions WHERE reason = 'bench'"):
        return
    user = await conn.fetchval(
        "INSERT INTO users (username, role, password_hash) VALUES ('bench', 'qc', 'x') "
        "ON CONFLICT (username) DO UPDATE SET role = 'qc' RETURNING id"
    )
    popular = await conn.fetchval(
        "SELECT parent_lot_id FROM lot_genealogy GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    top = await conn.fetchval("SELECT max(id) FROM lots")
    picks = [popular, *(rng.randrange(1, top) for _ in range(40))]
    for i, lot_id in enumerate(picks):
        decision = "reject" if i % 4 == 3 else "hold"
        await conn.execute(
            "INSERT INTO qc_decisions (lot_id, decision, reason, decided_by) VALUES ($1, $2, 'bench', $3)",
            lot_id,
            decision,
            user,
        )
    await conn.execute("ANALYZE qc_decisions")


async def measure(url: str, calls: int, seed: int) -> list[tuple[str, float, float, int]]:
    rng = random.Random(seed)
    conn = await asyncpg.connect(url)
    try:
        await block_some(conn, rng)
        codes = [
            r[0] for r in await conn.fetch("SELECT lot_code FROM lots TABLESAMPLE SYSTEM (1) LIMIT 5000")
        ]
        products = [r[0] for r in await conn.fetch("SELECT DISTINCT product FROM lots")]
        words = sorted({w for p in products for w in p.replace("-", " ").split() if len(w) >= 4})
        first, last = await conn.fetchrow("SELECT min(produced_at), max(produced_at) FROM lots")
        span = (last - first).total_seconds()

        def day() -> datetime:
            return first + timedelta(seconds=rng.uniform(0, span))

        cases: dict[str, Callable[[], LotFilter]] = {
            "no filter": lambda: LotFilter(),
            "lot_code_prefix (a lot's code less 2 chars: ~100 lots)": lambda: LotFilter(
                lot_code_prefix=rng.choice(codes)[:-2]
            ),
            "lot_code_prefix (first 8 chars)": lambda: LotFilter(lot_code_prefix=rng.choice(codes)[:8]),
            "product substring (a word of a product, any case)": lambda: LotFilter(
                product=rng.choice(words).lower()
            ),
            "product substring, no match": lambda: LotFilter(product=f"zz{rng.randrange(10**6)}"),
            "kind": lambda: LotFilter(kind=rng.choice(["RAW", "MIX", "FG"])),
            "status=on_hold": lambda: LotFilter(decision="hold"),
            "status=pending": lambda: LotFilter(decision=""),
            "effective_status=on_hold": lambda: LotFilter(effective="on_hold"),
            "effective_status=rejected": lambda: LotFilter(effective="rejected"),
            "effective_status=pending": lambda: LotFilter(effective="pending"),
            "produced in one day": lambda: (
                lambda d: LotFilter(produced_after=d, produced_before=d + timedelta(days=1))
            )(day()),
            "produced after (open range)": lambda: LotFilter(produced_after=day()),
            "kind + product + produced in a week": lambda: (
                lambda d: LotFilter(
                    kind="FG",
                    product=rng.choice(words).lower(),
                    produced_after=d,
                    produced_before=d + timedelta(days=7),
                )
            )(day()),
        }
        top = await conn.fetchval("SELECT max(id) FROM lots")
        results = []

        def deep(f: LotFilter) -> int | tuple[int, int]:
            """A page deep into the result: past a random id of the upper half, or half a day
            into a produced_at range (those lists are in (produced_at, id) order)."""
            if f.produced_after is None:
                return rng.randrange(top // 2, top)
            return (f.produced_after + timedelta(hours=12) - datetime(1, 1, 1, tzinfo=UTC)) // timedelta(
                microseconds=1
            ), 0

        for name, make in cases.items():
            for page in ("first page", "deep page"):
                times, rows = [], 0
                for _ in range(calls):
                    f = make()
                    start_after = deep(f) if page == "deep page" else None
                    t0 = time.perf_counter()
                    found = await list_lots(conn, f, after=start_after, limit=PAGE + 1)
                    times.append((time.perf_counter() - t0) * 1000)
                    rows += len(found)
                times.sort()
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                results.append((f"{name}, {page}", statistics.median(times), p99, rows // calls))
                log(f"{name}, {page}: P50 {results[-1][1]:.2f} P99 {p99:.2f} ms, {rows // calls} rows")
        return results
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url")
    parser.add_argument(
        "--plant", type=Path, help="folder with lots.csv and genealogy.csv (flowviz generate)"
    )
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="data folder for the embedded PostgreSQL (kept for reruns)")
    args = parser.parse_args()
    pg = None
    url = args.database_url
    if url is None:
        if args.plant is None:
            parser.error("give --database-url or --plant")
        folder = args.keep or Path(tempfile.mkdtemp(prefix="lot-search-"))
        pg = Postgres(folder / "pg", free_port())
        pg.init(fast=True)
        pg.start(fast=True)  # no fsync: the import is faster, the reads are what is measured
        url = pg.url
        subprocess.run(
            [sys.executable, "-m", "flowviz.tools.migrate"],
            check=True,
            env={**os.environ, "DATABASE_URL": url},
        )
        asyncio.run(load(url, args.plant))
    try:
        results = asyncio.run(measure(url, args.calls, args.seed))
    finally:
        if pg is not None:
            pg.stop()
    print(f"\nListLots, page of {PAGE}, {args.calls} calls per row, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print("| filter | P50 ms | P99 ms | rows |\n|---|---|---|---|")
    for name, p50, p99, rows in results:
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {rows} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
