"""Latency of the genealogy engine (trace, recall, composition) on a synthetic plant.

Starts an embedded PostgreSQL in a temporary folder (or uses --url), loads a genealogy of
--lots lots made by flowviz.tools.generate (loaded with services.genealogy.importer when it exists, else
with COPY), then times uncached calls one after another on one connection and prints
P50/P95/P99 per case. Not a test: nothing is asserted.

    .venv/bin/python bench/trace_bench.py --lots 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.tools import migrate
from flowviz.tools.embedded import Postgres, free_port
from services.genealogy import answers, notifications
from services.genealogy.recall import composition, recall
from services.genealogy.trace import HARD_MAX_DEPTH, HARD_MAX_NODES, trace

DEPTH, NODES = HARD_MAX_DEPTH, HARD_MAX_NODES  # "full": the walks stop only at the hard limits


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------


def write_csv(lots: int, seed: int, out: Path) -> None:
    from flowviz.tools.generate import generate

    stats = generate(lots, seed, out)
    log(f"generated {stats.lots:,} lots, {stats.edges:,} edges in {stats.seconds:.1f}s")


async def copy_csv(conn: asyncpg.Connection, folder: Path) -> None:
    """lots.csv + genealogy.csv (flowviz.tools.generate's format) into the tables, via COPY."""
    cols = ["lot_code", "kind", "product", "quantity", "uom", "produced_at"]
    await conn.copy_to_table("lots", source=folder / "lots.csv", columns=cols, format="csv", header=True)
    await conn.execute(
        "CREATE TEMP TABLE stage (parent text, child text, quantity numeric, uom text, run_code text)"
    )
    await conn.copy_to_table("stage", source=folder / "genealogy.csv", format="csv", header=True)
    await conn.execute(
        """
        INSERT INTO production_runs (run_code) SELECT DISTINCT run_code FROM stage WHERE run_code <> '';
        INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id)
        SELECT p.id, c.id, s.quantity, s.uom, r.id
        FROM stage s JOIN lots p ON p.lot_code = s.parent JOIN lots c ON c.lot_code = s.child
        LEFT JOIN production_runs r ON r.run_code = s.run_code;
        DROP TABLE stage;
        """
    )


async def add_qc(conn: asyncpg.Connection) -> None:
    """Decisions on ~40 % of lots (some corrected) so the status lookup does real work."""
    await conn.execute(
        """
        INSERT INTO users (username, role, password_hash) VALUES ('bench', 'qc', '!');
        INSERT INTO qc_decisions (lot_id, decision, reason, decided_by)
        SELECT l.id, CASE WHEN l.id % 10 = 0 THEN 'hold' ELSE 'pass' END, 'bench', u.id
        FROM lots l, users u WHERE l.id % 5 < 2 AND u.username = 'bench';
        INSERT INTO qc_decisions (lot_id, decision, reason, decided_by)
        SELECT l.id, 'release', 'bench', u.id FROM lots l, users u
        WHERE l.id % 20 = 0 AND u.username = 'bench';
        """
    )


async def import_or_copy(conn: asyncpg.Connection, folder: Path) -> None:
    """services.genealogy.importer (validates every row) when it is there, else plain COPY."""
    if importlib.util.find_spec("services.genealogy.importer") is None:
        log("loading with COPY (services.genealogy.importer not available)")
        await copy_csv(conn, folder)
        return
    from services.genealogy.importer import import_csv

    log("loading with services.genealogy.importer.import_csv")
    # A script doing nothing else meanwhile: blocking opens are fine.
    from services.genealogy import import_events

    # A script doing nothing else meanwhile: blocking opens are fine. cache=None: no system reads it yet.
    with contextlib.ExitStack() as stack:
        lots, edges = (stack.enter_context(open(folder / f"{n}.csv", "rb")) for n in ("lots", "genealogy"))  # noqa: ASYNC230
        events = {
            n: stack.enter_context(open(folder / f"{n}.csv", "rb"))  # noqa: ASYNC230
            for n in import_events.FILES
            if (folder / f"{n}.csv").exists()
        }
        result = await import_csv(conn, lots, edges, cache=None, events=events)
    if not result.ok:
        raise SystemExit(f"import failed: {result.errors[:5]}")


async def load(url: str, lots: int, seed: int, tmp: Path) -> None:
    started = time.monotonic()
    write_csv(lots, seed, tmp / "csv")
    conn = await asyncpg.connect(url)
    try:
        await import_or_copy(conn, tmp / "csv")
        await add_qc(conn)
        # Index-only scans need the visibility map; a VACUUM racing the end of the loading
        # transaction may leave it unset, so repeat until it is.
        for _ in range(10):
            await conn.execute("VACUUM (ANALYZE) lots, lot_genealogy, qc_decisions, production_runs")
            unset = await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relname IN ('lots', 'lot_genealogy') "
                "AND relallvisible < relpages * 0.9"
            )
            if not unset:
                break
            await asyncio.sleep(1)
        n_lots = await conn.fetchval("SELECT count(*) FROM lots")
        n_edges = await conn.fetchval("SELECT count(*) FROM lot_genealogy")
    finally:
        await conn.close()
    log(f"loaded {n_lots:,} lots, {n_edges:,} edges in {time.monotonic() - started:.1f}s")


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    ms: list[float]
    sizes: list[int]
    client_cpu_ms: float = 0.0  # per call: this process (asyncpg decoding + Python)
    server_cpu_ms: float | None = None  # per call: the PostgreSQL backend, when readable

    def row(self) -> str:
        q = statistics.quantiles(self.ms, n=100, method="inclusive") if len(self.ms) > 1 else self.ms * 99
        sizes = sorted(self.sizes)
        server = "n/a" if self.server_cpu_ms is None else f"{self.server_cpu_ms:.1f}"
        return (
            f"| {self.name:<40} | {len(self.ms):>5} | {sizes[len(sizes) // 2]:>7,} | {sizes[-1]:>7,} "
            f"| {q[49]:>7.1f} | {q[94]:>7.1f} | {q[98]:>7.1f} | {max(self.ms):>7.1f} "
            f"| {self.client_cpu_ms:>7.1f} | {server:>7} |"
        )


HEADER = (
    "| case                                     | calls | nodes50 | nodesMx "
    "|  P50 ms |  P95 ms |  P99 ms |  max ms | cli cpu | srv cpu |\n"
    "|------------------------------------------|-------|---------|---------"
    "|---------|---------|---------|---------|---------|---------|"
)


class ServerCpu:
    """CPU time of one PostgreSQL backend from /proc (same machine; None when unreadable).

    With other work on the machine, wall-clock latency mostly measures waiting for a core;
    CPU per call is what the trace itself costs.
    """

    def __init__(self, pid: int) -> None:
        self.stat = Path(f"/proc/{pid}/stat")
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

    def ms(self) -> float | None:
        try:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) * self.tick_ms  # utime + stime


async def timed(
    name: str, codes: list[str], call: Callable[[str], Awaitable[int]], server: ServerCpu, warmup: int = 3
) -> Case:
    for code in codes[:warmup]:
        await call(code)
    case = Case(name, [], [])
    cpu0, srv0 = time.process_time(), server.ms()
    for code in codes:
        t0 = time.perf_counter()
        size = await call(code)
        case.ms.append((time.perf_counter() - t0) * 1000)
        case.sizes.append(size)
    srv1 = server.ms()
    case.client_cpu_ms = (time.process_time() - cpu0) * 1000 / len(codes)
    if srv0 is not None and srv1 is not None:
        case.server_cpu_ms = (srv1 - srv0) / len(codes)
    return case


async def measure(url: str, calls: int, hot_calls: int, seed: int) -> list[Case]:
    conn = await asyncpg.connect(url)
    server = ServerCpu(await conn.fetchval("SELECT pg_backend_pid()"))
    rng = random.Random(seed)
    try:

        async def trace_both(code: str) -> int:
            r = await trace(conn, code, direction="both", max_depth=DEPTH, max_nodes=NODES)
            assert r is not None
            return len(r.nodes)

        async def recall_size(code: str) -> int:
            r = await recall(conn, code, max_depth=DEPTH, max_nodes=NODES)
            assert r is not None
            return len(r.lots)

        async def recall_notify(code: str) -> int:
            # GetRecallNotifications' work uncached: the recall impact (serialized for the cache
            # and read back, as the servicer does), then its notification list, serialized.
            found = await answers.recall_impact(conn, code, max_depth=DEPTH, max_nodes=NODES)
            assert found is not None
            impact = genealogy_pb2.GetRecallImpactResponse.FromString(found[0].SerializeToString())
            answer = await notifications.notifications(conn, impact)
            answer.SerializeToString()
            return answer.shipments + len(answer.in_plant)

        async def composition_size(code: str) -> int:
            r = await composition(conn, code, max_depth=DEPTH, max_nodes=NODES)
            assert r is not None
            return len(r.lots)

        codes = [r[0] for r in await conn.fetch("SELECT lot_code FROM lots ORDER BY id")]
        raws = [c for c in codes if c.startswith("RAW-")]
        fgs = [c for c in codes if c.startswith("FG-")]
        # Trace sizes of the 200 raw lots with most children: the largest is the hot lot.
        top = await conn.fetch(
            "SELECT l.lot_code FROM lot_genealogy e JOIN lots l ON l.id = e.parent_lot_id "
            "WHERE l.kind = 'RAW' GROUP BY l.lot_code ORDER BY count(*) DESC, l.lot_code LIMIT 200"
        )
        sizes = {r[0]: await trace_both(r[0]) for r in top}
        hot = max(sizes, key=lambda c: sizes[c])
        log(f"most-connected raw lot {hot}: {sizes[hot] - 1:,} descendants")

        async def trace_1000(code: str) -> int:
            r = await trace(conn, code, direction="both", max_depth=DEPTH, max_nodes=1000)
            assert r is not None
            return len(r.nodes)

        cases = [await timed("trace both, random lots", rng.sample(codes, calls), trace_both, server)]
        # The "~1,000-lot genealogy" goal: the generated plants have few traces near that
        # size, so take the large ones nearest to it, and the hot lot cut at 1,000 lots.
        large = sorted((c for c in sizes if sizes[c] >= 500), key=lambda c: abs(sizes[c] - 1000))
        if large and large[0] != hot:
            name = f"trace both, {large[0]}"
            cases.append(await timed(name, [large[0]] * calls, trace_both, server))
        cases.append(await timed("trace both, hot lot, max_nodes=1000", [hot] * calls, trace_1000, server))
        cases.append(await timed(f"trace both, hot {hot}", [hot] * hot_calls, trace_both, server))
        some_raws = rng.sample(raws, min(calls, len(raws)))
        cases.append(await timed("recall, random raw lots", some_raws, recall_size, server))
        cases.append(await timed(f"recall, hot {hot}", [hot] * hot_calls, recall_size, server))
        cases.append(
            await timed("recall + notification list, random raw lots", some_raws, recall_notify, server)
        )
        cases.append(
            await timed(f"recall + notification list, hot {hot}", [hot] * hot_calls, recall_notify, server)
        )
        some_fgs = rng.sample(fgs, min(calls, len(fgs)))
        cases.append(await timed("composition, random FG lots", some_fgs, composition_size, server))
        # Last, so the cases above draw the same lots on branches without it: the one statement
        # that gives every lot of a graph or recall answer its effective status.
        if importlib.util.find_spec("services.genealogy.effective") is not None:
            cases += await status_cases(conn, server, rng.sample(codes, calls), some_raws, hot, hot_calls)
        return cases
    finally:
        await conn.close()


async def status_cases(
    conn: asyncpg.Connection, server: ServerCpu, codes: list[str], raws: list[str], hot: str, hot_calls: int
) -> list[Case]:
    from services.genealogy.effective import blocks

    ids: dict[str, dict[int, str]] = {}
    for code in [*codes, hot]:
        t = await trace(conn, code, direction="both", max_depth=DEPTH, max_nodes=NODES)
        assert t is not None
        ids[code] = {n.lot_id: n.lot_code for n in t.nodes}
    for code in [*raws, hot]:
        down = await recall(conn, code, max_depth=DEPTH, max_nodes=NODES)
        up = await composition(conn, code, max_depth=DEPTH, max_nodes=NODES)
        assert down is not None and up is not None
        nodes = [r.lot for r in down.lots] + [c.lot for c in up.lots]
        ids["recall:" + code] = {n.lot_id: n.lot_code for n in nodes}

    async def statuses(key: str) -> int:
        await blocks(conn, ids[key])
        return len(ids[key])

    blocked = await conn.fetchval("SELECT count(*) FROM qc_lot_blocks")
    log(f"{blocked:,} lots blocked (qc_lot_blocks)")
    return [
        await timed("effective status of graph answers", codes, statuses, server),
        await timed("effective status of recall answers", ["recall:" + c for c in raws], statuses, server),
        await timed(f"effective status, graph of hot {hot}", [hot] * hot_calls, statuses, server),
        await timed(
            f"effective status, recall of hot {hot}", ["recall:" + hot] * hot_calls, statuses, server
        ),
    ]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


async def run(args: argparse.Namespace, url: str, tmp: Path) -> None:
    if not args.url:
        migrate.upgrade(url)
        await load(url, args.lots, args.seed, tmp)
    load_before = os.getloadavg()[0]
    cases = await measure(url, args.calls, args.hot_calls, args.seed)
    load_after = os.getloadavg()[0]
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        n_lots = await conn.fetchval("SELECT count(*) FROM lots")
    finally:
        await conn.close()
    print(f"\n{n_lots:,} lots; {machine()}; PostgreSQL {version}; one connection, calls in sequence")
    print(
        f"load average {load_before:.1f} before, {load_after:.1f} after (other work competes for the cores)"
    )
    print("cli cpu / srv cpu: mean CPU ms per call in this process / in the PostgreSQL backend")
    print(HEADER)
    for case in cases:
        print(case.row())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lots", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300, help="calls per random-lot case")
    parser.add_argument("--hot-calls", type=int, default=100, help="calls for the most-connected lot")
    parser.add_argument("--url", help="benchmark this already loaded database instead")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args, args.url, Path(".")))
        return
    with tempfile.TemporaryDirectory(prefix="trace-bench-") as tmp:
        pg = Postgres(Path(tmp) / "pg", free_port())
        pg.init(fast=True)
        pg.start(fast=True)
        try:
            asyncio.run(run(args, pg.url, Path(tmp)))
        finally:
            pg.stop()


if __name__ == "__main__":
    main()
