"""Bulk import of lots and their genealogy from CSV: every row validated, all or nothing.

The csv module checks only each row's shape while the rows stream into temporary staging
tables with COPY; every other rule runs afterwards as a few set-based queries over the
staging tables, and only when nothing is wrong do INSERT ... SELECT statements move the
rows into lots, production_runs and lot_genealogy. It all happens in one transaction, so
a failed import leaves nothing behind.

Files (a header row is required, columns in this order):
  lots.csv       lot_code,kind,product,quantity,uom,produced_at  (produced_at may be empty)
  genealogy.csv  parent_lot_code,child_lot_code,quantity,uom,run_code  (run_code may be empty)

Error rows are 1-based data rows: the header is not counted, so data row N is on line
N + 1 of the file when no field spans lines. Row 0 means the file as a whole (its header,
or an encoding problem). Needs PostgreSQL 16 or later (pg_input_is_valid).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import asyncpg

from flowviz.core import validation

LOTS_COLUMNS = ("lot_code", "kind", "product", "quantity", "uom", "produced_at")
GENEALOGY_COLUMNS = ("parent_lot_code", "child_lot_code", "quantity", "uom", "run_code")
IMPORT_OPERATOR = "import"
PROGRESS_EVERY = 100_000  # rows between progress calls while reading

Progress = Callable[[str, int], None]


@dataclass(frozen=True, order=True)
class RowError:
    file: str  # "lots" or "genealogy"
    row: int  # 1-based data row (header not counted); 0 for the file as a whole
    field: str
    reason: str


@dataclass
class ImportResult:
    lots_imported: int = 0
    edges_imported: int = 0
    runs_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    errors_truncated: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


class _Errors:
    """Row errors found while reading, capped at `limit` (the count goes on)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[RowError] = []
        self.total = 0

    def add(self, error: RowError) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            self.items.append(error)


class _BadInput(Exception):
    pass


class _NulChecked(io.RawIOBase):
    """The source file, refusing NUL bytes (PostgreSQL text cannot hold them)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer))
        if b"\x00" in data:
            raise _BadInput("contains a NUL byte")
        buffer[: len(data)] = data
        return len(data)


def _reader(source: BinaryIO) -> Iterator[list[str]]:
    # utf-8-sig: spreadsheets often start a CSV with a byte-order mark.
    text = io.TextIOWrapper(io.BufferedReader(_NulChecked(source), 1 << 20), encoding="utf-8-sig", newline="")
    return csv.reader(text)


def _check_header(reader: Iterator[list[str]], name: str, expected: Sequence[str]) -> RowError | None:
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError, _BadInput) as exc:
        return RowError(name, 0, "header", f"cannot be read: {exc}")
    want = ",".join(expected)
    if not header:
        return RowError(name, 0, "header", f"missing: the first row must be {want}")
    got = [h.strip().lower() for h in header]
    for i, (g, w) in enumerate(zip(got, expected, strict=False), 1):
        if g != w:
            return RowError(name, 0, "header", f"column {i} is {header[i - 1]!r}, expected {w!r} ({want})")
    if len(got) != len(expected):
        return RowError(name, 0, "header", f"has {len(got)} columns, expected {len(expected)} ({want})")
    return None


def _records(
    reader: Iterator[list[str]],
    name: str,
    width: int,
    errors: _Errors,
    counts: dict[str, int],
    progress: Progress | None,
) -> Iterator[tuple[object, ...]]:
    """(row number, *fields) for each well-formed row; malformed rows become errors."""
    rn = 0
    try:
        for rn, row in enumerate(reader, 1):  # noqa: B007 - rn is read after the loop
            if len(row) == width:
                yield (rn, *row)
            elif row:  # a blank line is skipped, not an error
                errors.add(RowError(name, rn, "row", f"has {len(row)} fields, expected {width}"))
            if progress and rn % PROGRESS_EVERY == 0:
                progress(name, rn)
    except (csv.Error, UnicodeDecodeError, _BadInput) as exc:
        # The rest of the file cannot be split into rows reliably: stop reading it.
        what = "is not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        errors.add(RowError(name, rn + 1, "row", f"unreadable, file not read further: {what}"))
    counts[name] = rn
    if progress:
        progress(name, rn)


STAGING = """
CREATE TEMP TABLE import_lots (
    rn int, lot_code text, kind text, product text, quantity text, uom text, produced_at text
) ON COMMIT DROP;
CREATE TEMP TABLE import_edges (
    rn int, parent text, child text, quantity text, uom text, run_code text
) ON COMMIT DROP;
"""

# Everything below is validation: each query yields (file, row, field, reason).
# Parameters: $1 lot code pattern, $2 its rule, $3 units, $4 kind pattern.
_CODE_CHECK = """CASE WHEN {c} = '' THEN 'must not be empty'
    WHEN length({c}) > 64 THEN format('is %s characters; the maximum is 64', length({c}))
    WHEN {c} !~ $1 THEN 'must be ' || $2 END"""
_UOM_CHECK = (
    "CASE WHEN {c} <> ALL($3::text[]) THEN 'must be one of ' || array_to_string($3::text[], ', ') END"
)
# Up to 15 digits before the point and 3 after it (trailing zeros aside): numeric(18, 3).
_QUANTITY_CHECK = """CASE WHEN {c} ~ '^[0-9]{{1,15}}(\\.[0-9]{{0,3}}0*)?$' THEN
        CASE WHEN {positive} AND {c}::numeric = 0 THEN 'must be greater than 0' END
    WHEN {c} = '' THEN 'is required'
    WHEN {c} ~ '^-[0-9]*\\.?[0-9]+$' THEN {negative}
    WHEN {c} ~ '^[0-9]+\\.?[0-9]*$' AND {c} ~ '^[0-9]{{16}}' THEN 'is too large (at most 15 digits before the point)'
    WHEN {c} ~ '^[0-9]*\\.[0-9]+$' THEN 'has more than 3 decimal places'
    ELSE format('is not a decimal number: %s', left({c}, 40)) END"""
_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$"

CHECK_LOT_FIELDS = f"""
SELECT 'lots', s.rn, e.field, e.reason
FROM import_lots s
CROSS JOIN LATERAL (VALUES
    ('lot_code', {_CODE_CHECK.format(c="s.lot_code")}),
    ('kind', CASE WHEN s.kind !~ $4 THEN 'must be 1-16 upper-case letters, digits or _ (RAW, MIX, FG)' END),
    ('product', CASE WHEN btrim(s.product) = '' THEN 'is required'
        WHEN length(btrim(s.product)) > {validation.TEXT_MAX} OR s.product ~ '[\\x01-\\x1f]'
        THEN 'must be at most {validation.TEXT_MAX} printable characters' END),
    ('quantity', {_QUANTITY_CHECK.format(c="s.quantity", positive="false", negative="'must be 0 or more'")}),
    ('uom', {_UOM_CHECK.format(c="s.uom")}),
    ('produced_at', CASE WHEN s.produced_at <> '' AND (s.produced_at !~ '{_TIMESTAMP}'
        OR NOT pg_input_is_valid(s.produced_at, 'timestamptz'))
        THEN 'must be empty or an ISO 8601 timestamp like 2026-01-15T06:00:00Z' END)
) AS e (field, reason)
WHERE e.reason IS NOT NULL
"""

CHECK_LOT_DUPLICATES = """
SELECT 'lots', d.rn, 'lot_code', format('duplicate lot code %s: first on row %s', d.lot_code, d.first)
FROM (SELECT rn, lot_code, min(rn) OVER (PARTITION BY lot_code) AS first FROM import_lots) d
WHERE d.rn <> d.first
"""

CHECK_LOT_EXISTS = """
SELECT 'lots', s.rn, 'lot_code', format('lot %s already exists in the database', s.lot_code)
FROM import_lots s JOIN lots l ON l.lot_code = s.lot_code
"""

CHECK_EDGE_FIELDS = f"""
SELECT 'genealogy', s.rn, e.field, e.reason
FROM import_edges s
CROSS JOIN LATERAL (VALUES
    ('parent_lot_code', {_CODE_CHECK.format(c="s.parent")}),
    ('child_lot_code', CASE WHEN s.child = s.parent AND s.child <> ''
        THEN 'is the same lot as parent_lot_code (an edge cannot join a lot to itself)'
        ELSE {_CODE_CHECK.format(c="s.child")} END),
    ('quantity', {_QUANTITY_CHECK.format(c="s.quantity", positive="true", negative="'must be greater than 0'")}),
    ('uom', {_UOM_CHECK.format(c="s.uom")}),
    ('run_code', CASE WHEN s.run_code <> '' THEN {_CODE_CHECK.format(c="s.run_code")} END)
) AS e (field, reason)
WHERE e.reason IS NOT NULL
"""

# A well-formed code found neither among the staged lots nor in the database.
CHECK_EDGE_UNKNOWN = """
SELECT 'genealogy', s.rn, x.field,
       format('unknown lot %s: neither in the lots file nor in the database', x.code)
FROM import_edges s
CROSS JOIN LATERAL (VALUES ('parent_lot_code', s.parent), ('child_lot_code', s.child)) AS x (field, code)
WHERE x.code ~ $1
  AND NOT EXISTS (SELECT 1 FROM import_lots n WHERE n.lot_code = x.code)
  AND NOT EXISTS (SELECT 1 FROM lots l WHERE l.lot_code = x.code)
"""

CHECK_EDGE_DUPLICATES = """
SELECT 'genealogy', d.rn, 'child_lot_code',
       format('duplicate edge %s -> %s (run %s): first on row %s',
              d.parent, d.child, coalesce(nullif(d.run_code, ''), 'none'), d.first)
FROM (SELECT rn, parent, child, run_code, min(rn) OVER (PARTITION BY parent, child, run_code) AS first
      FROM import_edges) d
WHERE d.rn <> d.first
"""

# Only edges between two lots already in the database can already exist there.
CHECK_EDGE_EXISTS = """
SELECT 'genealogy', s.rn, 'child_lot_code',
       format('edge %s -> %s (run %s) already exists in the database',
              s.parent, s.child, coalesce(nullif(s.run_code, ''), 'none'))
FROM import_edges s
JOIN lots p ON p.lot_code = s.parent
JOIN lots c ON c.lot_code = s.child
LEFT JOIN production_runs r ON r.run_code = s.run_code
JOIN lot_genealogy g ON g.parent_lot_id = p.id AND g.child_lot_id = c.id
WHERE (s.run_code = '' AND g.run_id IS NULL) OR g.run_id = r.id
"""

INSERT_RUNS = f"""
INSERT INTO production_runs (run_code, operator)
SELECT run_code, '{IMPORT_OPERATOR}' FROM import_edges WHERE run_code <> ''
GROUP BY run_code ORDER BY min(rn)
ON CONFLICT (run_code) DO NOTHING
"""

INSERT_LOTS = """
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at)
SELECT lot_code, kind, btrim(product), quantity::numeric(18, 3), uom, nullif(produced_at, '')::timestamptz
FROM import_lots ORDER BY rn
"""

INSERT_EDGES = """
INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id)
SELECT p.id, c.id, s.quantity::numeric(18, 3), s.uom, r.id
FROM import_edges s
JOIN lots p ON p.lot_code = s.parent
JOIN lots c ON c.lot_code = s.child
LEFT JOIN production_runs r ON r.run_code = nullif(s.run_code, '')
ORDER BY s.rn
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _stage(
    conn: asyncpg.Connection,
    source: BinaryIO,
    name: str,
    table: str,
    columns: Sequence[str],
    errors: _Errors,
    counts: dict[str, int],
    progress: Progress | None,
) -> RowError | None:
    reader = _reader(source)
    bad_header = _check_header(reader, name, columns)
    if bad_header:
        return bad_header
    staged = (
        ("rn", "lot_code", "kind", "product", "quantity", "uom", "produced_at")
        if name == "lots"
        else ("rn", "parent", "child", "quantity", "uom", "run_code")
    )
    records = _records(reader, name, len(columns), errors, counts, progress)
    await conn.copy_records_to_table(table, records=records, columns=staged)
    return None


async def import_csv(
    conn: asyncpg.Connection,
    lots: BinaryIO | None,
    edges: BinaryIO | None,
    *,
    progress: Progress | None = None,
    max_errors: int = 1000,
) -> ImportResult:
    """Validate both files completely and import them in one transaction, or import nothing.

    Either file may be None. Edges may name lots from the lots file or already in the
    database. On any error the transaction is rolled back and `errors` lists up to
    `max_errors` of them, ordered by file and row.
    """
    started = time.monotonic()
    result = ImportResult()
    errors = _Errors(max_errors)
    counts: dict[str, int] = {}
    tx = conn.transaction()
    await tx.start()
    try:
        # Timestamps without an offset are UTC; the staging queries want room to hash.
        await conn.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL work_mem = '256MB'")
        await conn.execute(STAGING)
        header_errors = []
        for source, name, table, columns in (
            (lots, "lots", "import_lots", LOTS_COLUMNS),
            (edges, "genealogy", "import_edges", GENEALOGY_COLUMNS),
        ):
            if source is not None:
                bad = await _stage(conn, source, name, table, columns, errors, counts, progress)
                if bad:
                    header_errors.append(bad)
        if header_errors:
            # Without the right columns the rows mean nothing: report just the headers.
            result.errors = header_errors
            await tx.rollback()
            result.seconds = time.monotonic() - started
            return result
        await conn.execute("ANALYZE import_lots; ANALYZE import_edges")
        found = list(errors.items)
        total = errors.total
        args = (validation.LOT_CODE_PATTERN.pattern, validation.LOT_CODE_RULE, sorted(validation.UNITS))
        checks = [
            (CHECK_LOT_FIELDS, (*args, validation.KIND_PATTERN.pattern)),
            (CHECK_LOT_DUPLICATES, ()),
            (CHECK_LOT_EXISTS, ()),
            (CHECK_EDGE_FIELDS, args),
            (CHECK_EDGE_UNKNOWN, (validation.LOT_CODE_PATTERN.pattern,)),
            (CHECK_EDGE_DUPLICATES, ()),
            (CHECK_EDGE_EXISTS, ()),
        ]
        for i, (sql, params) in enumerate(checks, 1):
            rows = await conn.fetch(f"{sql} ORDER BY 2 LIMIT {max_errors + 1}", *params)
            total += len(rows)
            found.extend(RowError(*r) for r in rows)
            if progress:
                progress("validate", i)
        if total:
            found.sort(key=lambda e: (e.file != "lots", e.row, e.field))
            result.errors = found[:max_errors]
            result.errors_truncated = total > max_errors
            await tx.rollback()
            result.seconds = time.monotonic() - started
            return result
        result.runs_created = _count(await conn.execute(INSERT_RUNS))
        result.lots_imported = _count(await conn.execute(INSERT_LOTS))
        if progress:
            progress("insert", result.lots_imported)
        result.edges_imported = _count(await conn.execute(INSERT_EDGES))
        if progress:
            progress("insert", result.lots_imported + result.edges_imported)
        await tx.commit()
    except BaseException:
        await tx.rollback()
        raise
    result.seconds = time.monotonic() - started
    return result
