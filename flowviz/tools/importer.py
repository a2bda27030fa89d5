"""`flowviz import`: the command line of the bulk importer (services/genealogy/importer.py),
with a progress bar; it imports straight into the database, as the service would."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import asyncpg

from flowviz.core.cache import Cache
from flowviz.core.importformat import GENEALOGY_COLUMNS
from flowviz.tools import local
from services.genealogy import import_events
from services.genealogy.importer import (
    CHECKS,
    CLI_ACTOR,
    FILES,
    ImportResult,
    RowError,
    import_csv,
)


def _lines(path: Path) -> int:
    """Lines in the file (a quick upper bound of its rows, for the progress bar)."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


class _Bar:
    """Progress on stderr: one line redrawn in place on a terminal, else a line per stage."""

    def __init__(self, totals: dict[str, int]) -> None:
        self.totals = totals
        self.started = time.monotonic()
        self.drawn = 0.0
        self.width = 0
        self.stage = ""
        self.tty = sys.stderr.isatty()

    def __call__(self, stage: str, done: int) -> None:
        now = time.monotonic()
        if not self.tty:
            if stage != self.stage:
                print(f"{stage}...", file=sys.stderr, flush=True)
            self.stage = stage
            return
        if now - self.drawn < 0.1 and stage in FILES:
            return
        self.drawn = now
        total = self.totals.get(stage, 0)
        if stage == "validate":
            text = f"validating ({done}/{len(CHECKS)} checks)"
        elif stage == "rules":
            text = f"production-run rules checked: {done:,} broken"
        elif stage == "insert":
            text = f"inserting: {done:,} rows written"
        elif total:
            filled = min(20, 20 * done // total)
            text = f"reading {stage} [{'#' * filled}{'.' * (20 - filled)}] {done:,}/{total:,} rows"
        else:
            text = f"reading {stage}: {done:,} rows"
        text = f"{text}  {now - self.started:.0f}s"
        print("\r" + text.ljust(self.width), end="", file=sys.stderr, flush=True)
        self.width = len(text)

    def close(self) -> None:
        if self.width:
            print(file=sys.stderr)


def _assign(paths: Sequence[Path]) -> dict[str, Path]:
    """Which positional file is which: two are lots then genealogy; one goes by its header."""
    if len(paths) == 2:
        return {"lots": paths[0], "genealogy": paths[1]}
    if len(paths) == 1:
        with open(paths[0], "rb") as f:
            first = f.readline().decode("utf-8-sig", errors="replace").strip().lower()
        return {"genealogy" if first.startswith(GENEALOGY_COLUMNS[0]) else "lots": paths[0]}
    return {}


async def _run(
    sources: Mapping[str, BinaryIO],
    url: str,
    cache_url: str | None,
    args: argparse.Namespace,
    bar: _Bar | None,
) -> ImportResult:
    cache = None
    if cache_url:
        cache = Cache(cache_url, key=secrets.token_bytes(32), timeout=2.0, ttl=1)  # only invalidates: any key
        if not await cache.ping():
            await cache.close()
            raise local.UserError(
                f"the cache at {local.redact(cache_url)} does not answer, so the import could leave stale "
                "answers behind: start it, or unset VALKEY_URL if no system caches from this database"
            )
    try:
        with local.reaching(url):
            conn = await asyncpg.connect(url, server_settings={"application_name": "flowviz-import"})
        try:
            return await import_csv(
                conn,
                sources.get("lots"),
                sources.get("genealogy"),
                cache=cache,
                historical=args.historical,
                actor=CLI_ACTOR,
                progress=bar,
                max_errors=args.max_errors,
                events={name: sources[name] for name in import_events.FILES if name in sources},
            )
        finally:
            await conn.close()
    finally:
        if cache:
            await cache.close()


def _print_rows(rows: Sequence[RowError], truncated: bool, what: str) -> str:
    for e in rows:
        print(f"{e.file} row {e.row} {e.field} = {e.value!r}: {e.reason} [{e.rule}]")
    count = f"more than {len(rows)}" if truncated else str(len(rows))
    return f"{count} {what}" + (f" (the first {len(rows)} are listed)" if truncated else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowviz import",
        description="Import lots and genealogy edges from CSV files (all rows valid, or nothing is written). "
        "Lots: lot_code,kind,product,quantity,uom,produced_at. "
        "Genealogy: parent_lot_code,child_lot_code,quantity,uom,run_code. "
        "Edges obey the production-run rules (inputs exist, units convert, nothing consumes more than "
        "remains, no input on hold or rejected) unless --historical. The cache (VALKEY_URL, else that of "
        "the running `make run`) is cleared after the import.",
    )
    parser.add_argument(
        "files", nargs="*", type=Path, help="LOTS.csv GENEALOGY.csv (one alone goes by its header)"
    )
    parser.add_argument("--lots", type=Path, help="the lots file")
    parser.add_argument("--genealogy", type=Path, help="the genealogy (edges) file")
    for name in import_events.FILES:
        parser.add_argument(
            f"--{name}", type=Path, help=f"the {name} file (services.genealogy.import_events)"
        )
    parser.add_argument(
        "--database-url", help="default: $DATABASE_URL, else the database of the running `make run`"
    )
    parser.add_argument(
        "--historical",
        action="store_true",
        help="load the data as it was: each production-run rule it breaks is a warning, an audit row and "
        "the mass-balance flag HISTORICAL_IMPORT (malformed rows still refuse the import)",
    )
    parser.add_argument(
        "--max-errors", type=int, default=1000, help="errors to report at most (default 1000)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error("at most two files: LOTS.csv GENEALOGY.csv")
    for path in [*args.files, args.lots, args.genealogy, *(getattr(args, n) for n in import_events.FILES)]:
        if path is not None and not os.access(path, os.R_OK):
            parser.error(f"no such file: {path}" if not path.exists() else f"cannot read {path}")
        if path is not None and not path.is_file():
            parser.error(f"not a file: {path}")
    files = _assign(args.files)
    for name in FILES:
        given = getattr(args, name)
        if given and name in files:
            parser.error(f"the {name} file is given twice")
        if given:
            files[name] = given
    for name in import_events.FILES:
        if getattr(args, name):
            files[name] = getattr(args, name)
    if not files:
        parser.error("no file given")
    if args.max_errors < 1:
        parser.error("--max-errors must be at least 1")
    url = local.database_url(args.database_url)
    cache_url = local.valkey_url()
    if not cache_url:
        print("note: no VALKEY_URL and no running `make run`: no cache to clear", file=sys.stderr)
    bar = None if args.quiet else _Bar({name: max(_lines(path) - 1, 0) for name, path in files.items()})
    with contextlib.ExitStack() as stack:
        sources = {name: stack.enter_context(open(path, "rb")) for name, path in files.items()}
        try:
            result = asyncio.run(_run(sources, url, cache_url, args, bar))
        finally:
            if bar:
                bar.close()
    if not result.ok:
        listed = _print_rows(result.errors, result.errors_truncated, "errors")
        print(f"import refused, nothing was written: {listed}", file=sys.stderr)
        return 1
    if result.warnings:
        listed = _print_rows(result.warnings, result.warnings_truncated, "rules let through")
        print(f"historical import: {listed}, each in the audit log; the lots are flagged", file=sys.stderr)
    print(
        f"imported {result.lots_imported:,} lots, {result.edges_imported:,} edges and "
        f"{result.runs_created:,} new production runs"
        + "".join(f", {n:,} {name}" for name, n in result.events_imported.items())
        + f" in {result.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
