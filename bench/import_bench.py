"""How long services.genealogy.importer takes to validate and import a large generated genealogy.

Generates --lots lots with flowviz.tools.generate into a temporary folder (in a child process, so
the peak RSS below is the importer's alone), then imports them with import_csv into
--database-url, or into an embedded PostgreSQL started and migrated in a temporary folder.
Prints the generate and import times, rows per second, the importing process's peak RSS
and, when the server runs on this machine, the CPU time its backend spent. Not a test.

    .venv/bin/python bench/import_bench.py --lots 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from flowviz.tools.embedded import Postgres, free_port
from services.genealogy.importer import ImportResult, import_csv


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs {model}, Python {platform.python_version()}, {platform.system()}"


def sched(pid: int | str) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of a local process, or None."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            on_cpu, waiting = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def delta(
    after: tuple[float, float] | None, before: tuple[float, float] | None
) -> tuple[float, float] | None:
    if after is None or before is None:
        return None
    return after[0] - before[0], after[1] - before[1]


class Stages:
    """Wall time of each import stage, from the progress callback."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int) -> None:
        now = time.monotonic() - self.started
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def report(self) -> str:
        # A stage runs from the end of the one before it to its own last call.
        parts, previous = [], 0.0
        for stage in self.last:
            parts.append(f"{stage} {self.last[stage] - previous:.1f}s")
            previous = self.last[stage]
        return ", ".join(parts)


Sched = tuple[float, float] | None


async def run_import(url: str, folder: Path) -> tuple[ImportResult, Stages, Sched, Sched, dict[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        settings = {
            name: str(await conn.fetchval(f"SHOW {name}"))
            for name in ("server_version", "shared_buffers", "max_wal_size", "fsync", "synchronous_commit")
        }
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        backend_before, own_before = sched(backend), sched("self")
        stages = Stages()
        with open(folder / "lots.csv", "rb") as lots, open(folder / "genealogy.csv", "rb") as edges:  # noqa: ASYNC230 - the import reads them synchronously anyway
            result = await import_csv(conn, lots, edges, cache=None, progress=stages)  # nothing caches it
        return (
            result,
            stages,
            delta(sched(backend), backend_before),
            delta(sched("self"), own_before),
            settings,
        )
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="a migrated database to import into (it gets the rows)")
    parser.add_argument(
        "--fast", action="store_true", help="embedded server without fsync (as the tests run it)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flowviz-import-bench-"))
    pg: Postgres | None = None
    try:
        data = tmp / "data"
        log(f"generating {args.lots:,} lots (seed {args.seed}) into {data}")
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "flowviz.tools.generate", "--lots", str(args.lots), "--seed", str(args.seed),
             "--out", str(data)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        generate_seconds = time.monotonic() - started
        url = args.database_url
        if not url:
            pg = Postgres(tmp / "pg", free_port())
            log(f"starting embedded PostgreSQL on port {pg.port}")
            pg.init(fast=args.fast)
            pg.start(fast=args.fast)
            url = pg.url
            # In a child process too: alembic's memory is not the importer's.
            subprocess.run(
                [sys.executable, "-m", "flowviz.tools.migrate"],
                check=True,
                env={**os.environ, "DATABASE_URL": url},
            )
        log("importing")
        load_before = os.getloadavg()[0]
        result, stages, backend, own, settings = asyncio.run(run_import(url, data))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    finally:
        if pg:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if not result.ok:
        for e in result.errors[:20]:
            log(f"{e.file} row {e.row} {e.field}: {e.reason}")
        log("import refused the generated data")
        return 1
    rows = result.lots_imported + result.edges_imported
    print(
        f"machine           {machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(f"server            PostgreSQL {settings['server_version']}, shared_buffers {settings['shared_buffers']}, "
          f"max_wal_size {settings['max_wal_size']}, fsync {settings['fsync']}, "
          f"synchronous_commit {settings['synchronous_commit']}")  # fmt: skip
    print(f"generate          {generate_seconds:.1f}s for {args.lots:,} lots")
    print(
        f"import            {result.seconds:.1f}s: {result.lots_imported:,} lots, {result.edges_imported:,} edges, "
        f"{result.runs_created:,} runs"
    )
    print(f"rows/s            {rows / result.seconds:,.0f} (lots + edges)")
    print(f"stages            {stages.report()}")
    if backend and own:
        # The importer and its server backend mostly take turns, so the time either waited for
        # a CPU held by other processes is roughly what an idle machine would save.
        waited = backend[1] + own[1]
        print(f"CPU               importer {own[0]:.1f}s, server backend {backend[0]:.1f}s")
        print(
            f"waited for a CPU  {waited:.1f}s (other load); idle-machine estimate {result.seconds - waited:.1f}s"
        )
    else:
        print("CPU               n/a (the server is not on this machine)")
    print(f"peak RSS          {peak_mb:.0f} MB (the importing process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
