"""Bulk import of lots and their genealogy from CSV: every row validated, all or nothing.

Each row is checked on its own (shape, codes, kind, quantity, unit, timestamp) as it
streams from the file into a temporary staging table with COPY. The rules that span rows
(duplicates, lots already in the database, edges to unknown lots, edges that already
exist) then run as a few set-based queries over the staging tables, and so do the rules a
production run obeys (services/genealogy/runs.py, with its rule names and messages): every
input exists, its unit converts, nothing gives more than it still holds, and no input is
on hold or rejected (itself or through an ancestor in the database). Only when nothing is
wrong do INSERT ... SELECT statements move the rows into production_runs, lots and
lot_genealogy. It all happens in one transaction: a failed import leaves nothing behind.

Historical mode (admin only: migrating years of ERP records) loads the production-run rules'
violations as they were: each is a warning in the report, an audit_log row, and an
import_overrides row for both lots of the edge (their mass balance shows HISTORICAL_IMPORT).
Malformed rows and unknown lots are errors in either mode. After a commit the cache is
invalidated like after any write (the caller passes its Cache), so no stale answer is served.

Files (a header row is required, columns in this order):
  lots       lot_code,kind,product,quantity,uom,produced_at  (produced_at may be empty)
  genealogy  parent_lot_code,child_lot_code,quantity,uom,run_code  (run_code may be empty)

Error rows are 1-based data rows: the header is not counted, so data row N is on line
N + 1 of the file when no field spans lines. Row 0 means the file as a whole (its header).
"""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import asyncpg

from flowviz.core import audit, units, validation
from flowviz.core.cache import Cache
from flowviz.core.identity import caller_name
from flowviz.core.importformat import GENEALOGY_COLUMNS, LOTS_COLUMNS
from services.genealogy import import_events, runs

FILES = ("lots", "genealogy")
IMPORT_OPERATOR = "import"
CLI_ACTOR = "cli"  # the audit log's actor for `flowviz import` (as for `flowviz user`)
PROGRESS_EVERY = 50_000  # rows between progress calls while reading

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class RowError:
    file: str  # "lots" or "genealogy"
    row: int  # 1-based data row (header not counted); 0 for the file as a whole
    field: str
    reason: str
    value: str = ""  # what the field holds
    rule: str = ""  # the rule broken (LOT_CODE_INVALID, LOT_NOT_FOUND, INSUFFICIENT_QUANTITY, ...)


@dataclass
class ImportResult:
    lots_imported: int = 0
    edges_imported: int = 0
    runs_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    errors_truncated: bool = False
    seconds: float = 0.0
    # Historical mode: the production-run rules let through (first max_errors of them).
    warnings: list[RowError] = field(default_factory=list)
    warnings_truncated: bool = False
    # Rows written from the partners, locations, receipts and shipments files (services.genealogy.import_events).
    events_imported: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


# Rule names of the checks of the importer's own (the production-run rules are runs.*).
_RULE_OF_FIELD = {
    "lot_code": "LOT_CODE_INVALID",
    "parent_lot_code": "LOT_CODE_INVALID",
    "child_lot_code": "LOT_CODE_INVALID",
    "kind": "KIND_INVALID",
    "product": "FIELD_INVALID",
    "quantity": "QUANTITY_INVALID",
    "uom": "UOM_INVALID",
    "produced_at": "TIMESTAMP_INVALID",
    "run_code": "CODE_INVALID",
    "row": "ROW_INVALID",
    "header": "HEADER_INVALID",
}
VALUE_MAX = 200  # characters of a bad value repeated in the report


class _Errors:
    """Errors found so far, all counted; while reading the first `limit` are kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[RowError] = []
        self.total = 0

    def add(
        self,
        file: str,
        row: int,
        field: str,
        reason: str,
        value: str = "",
        rule: str = "",
        *,
        keep: bool = False,
    ) -> None:
        self.total += 1
        if keep or len(self.items) < self.limit:
            self.items.append(
                RowError(file, row, field, reason, value[:VALUE_MAX], rule or _RULE_OF_FIELD[field])
            )


# --- Reading and per-row checks ---------------------------------------------------------

_CODE = validation.LOT_CODE_PATTERN.fullmatch
_KIND = validation.KIND_PATTERN.fullmatch
_UNITS = frozenset(units.UNITS)
_UOM_RULE = "must be one of " + ", ".join(sorted(units.UNITS))
# numeric(18, 3): up to 15 digits before the point, 3 after it (trailing zeros aside).
_QUANTITY = re.compile(r"[0-9]{1,15}(?:\.[0-9]{0,3}0*)?|\.[0-9]{1,3}0*").fullmatch
_NONZERO = re.compile(r"[1-9]").search
_NEGATIVE = re.compile(r"-[0-9]*\.?[0-9]+").fullmatch
_DECIMAL = re.compile(r"([0-9]*)\.?([0-9]*)").fullmatch
# ISO 8601 as PostgreSQL and datetime.fromisoformat both read it; no offset means UTC.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
).fullmatch
_CONTROL = re.compile("[\x00-\x1f\ufffd]").search
_GARBLED = re.compile("[\x1a\ufffd]").search
_KIND_RULE = "must be 1-16 upper-case letters, digits or _ (RAW, MIX, FG)"
_TIMESTAMP_RULE = "must be empty or an ISO 8601 timestamp like 2026-01-15T06:00:00Z"


def _code_reason(value: str) -> str | None:
    if _CODE(value):
        return None
    if not value:
        return "must not be empty"
    if len(value) > validation.LOT_CODE_MAX:
        return f"is {len(value)} characters; the maximum is {validation.LOT_CODE_MAX}"
    return f"must be {validation.LOT_CODE_RULE}"


def _quantity_reason(value: str, *, positive: bool) -> str | None:
    if _QUANTITY(value):
        return "must be greater than 0" if positive and not _NONZERO(value) else None
    if not value:
        return "is required"
    if _NEGATIVE(value):
        return "must be greater than 0" if positive else "must be 0 or more"
    decimal = _DECIMAL(value)
    if decimal and len(decimal.group(1)) > 15:
        return "is too large (at most 15 digits before the decimal point)"
    if decimal and len(decimal.group(2).rstrip("0")) > 3:
        return "has more than 3 decimal places"
    return f"must be a decimal number like 12.5, not {value[:40]!r}"


def _timestamp(value: str) -> datetime | None:
    """The timestamp, or None when it is not a valid one (callers check for "")."""
    if not _TIMESTAMP(value):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _report(
    errors: _Errors,
    file: str,
    rn: int,
    checks: Sequence[tuple[str, str, str | None]],
    rules: Mapping[str, str] | None = None,
) -> None:
    """Each failed check of a row, in column order; garbled bytes are named as such. The rule
    is the field's (_RULE_OF_FIELD) unless `rules` names another."""
    for name, value, reason in checks:
        if reason:
            if _GARBLED(value):
                reason = "holds bytes that are not UTF-8 text (or a NUL byte)"
            errors.add(file, rn, name, reason, value, (rules or {}).get(name, ""))


def _product_reason(value: str) -> str | None:
    if not value:
        return "is required"
    if len(value) > validation.TEXT_MAX or _CONTROL(value):
        return f"must be at most {validation.TEXT_MAX} printable characters"
    return None


class _NulChecked(io.RawIOBase):
    """The source file with NUL bytes (which PostgreSQL text cannot hold) turned into SUB."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.source.read(len(buffer)).replace(b"\x00", b"\x1a")
        buffer[: len(data)] = data
        return len(data)


def _reader(source: BinaryIO) -> Iterator[list[str]]:
    # Undecodable bytes become U+FFFD and NULs SUB: no field rule accepts either, so such a
    # row is reported at its own row and field. utf-8-sig: spreadsheets start with a BOM.
    raw = io.BufferedReader(_NulChecked(source), 1 << 20)
    return csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline=""))


def _header_error(reader: Iterator[list[str]], columns: Sequence[str]) -> str | None:
    want = ",".join(columns)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return f"cannot be read ({exc}); expected {want}"
    if not header:
        return f"is missing: the first row must be {want}"
    for i, (got, expected) in enumerate(zip(header, columns, strict=False), 1):
        if got.strip().lower() != expected:
            return f"column {i} is {got!r}, expected {expected!r} (the header must be {want})"
    if len(header) != len(columns):
        return f"has {len(header)} columns, expected {len(columns)}: {want}"
    return None


def _read(
    reader: Iterator[list[str]], name: str, width: int, errors: _Errors, progress: Progress | None
) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of each row with the right number of fields."""
    rn = 0
    try:
        for rn, row in enumerate(reader, 1):
            if len(row) == width:
                yield rn, row
            elif row:  # a blank line is skipped, not an error
                errors.add(name, rn, "row", f"has {len(row)} fields, expected {width}", ",".join(row))
            if progress and rn % PROGRESS_EVERY == 0:
                progress(name, rn)
    except csv.Error as exc:
        # Past this point the file cannot be split into rows reliably: stop reading it.
        errors.add(name, rn + 1, "row", f"cannot be read ({exc}); the rest of the file was not read")
    if progress:
        progress(name, rn)


def _lot_records(
    reader: Iterator[list[str]], errors: _Errors, progress: Progress | None
) -> Iterator[tuple[object, ...]]:
    """Staging records of the lots file; a code that is itself wrong is staged as NULL."""
    for rn, (code, kind, product, quantity, uom, produced) in _read(
        reader, "lots", len(LOTS_COLUMNS), errors, progress
    ):
        product = product.strip()
        at = _timestamp(produced) if produced else None
        if (
            _CODE(code)
            and _KIND(kind)
            and _QUANTITY(quantity)
            and uom in _UNITS
            and (at or not produced)
            and product
            and len(product) <= validation.TEXT_MAX
            and not _CONTROL(product)
        ):
            yield rn, code, kind, product, quantity, uom, at
            continue
        _report(
            errors,
            "lots",
            rn,
            (
                ("lot_code", code, _code_reason(code)),
                ("kind", kind, None if _KIND(kind) else _KIND_RULE),
                ("product", product, _product_reason(product)),
                ("quantity", quantity, _quantity_reason(quantity, positive=False)),
                ("uom", uom, None if uom in _UNITS else _UOM_RULE),
                ("produced_at", produced, _TIMESTAMP_RULE if produced and not at else None),
            ),
        )
        yield rn, code if _CODE(code) else None, kind, product, _valid_quantity(quantity), _valid_uom(uom), at


def _edge_records(
    reader: Iterator[list[str]], errors: _Errors, progress: Progress | None
) -> Iterator[tuple[object, ...]]:
    """Staging records of the genealogy file; a code that is itself wrong is staged as NULL."""
    for rn, (parent, child, quantity, uom, run) in _read(
        reader, "genealogy", len(GENEALOGY_COLUMNS), errors, progress
    ):
        if (
            _CODE(parent)
            and _CODE(child)
            and parent != child
            and _QUANTITY(quantity)
            and _NONZERO(quantity)
            and uom in _UNITS
            and (not run or _CODE(run))
        ):
            yield rn, parent, child, quantity, uom, run
            continue
        self_edge = "is the parent itself: a lot cannot consume itself" if child == parent else None
        quantity_ok = _QUANTITY(quantity) and _NONZERO(quantity)
        _report(
            errors,
            "genealogy",
            rn,
            (
                ("parent_lot_code", parent, _code_reason(parent)),
                ("child_lot_code", child, _code_reason(child) or self_edge),
                ("quantity", quantity, _quantity_reason(quantity, positive=True)),
                ("uom", uom, None if uom in _UNITS else _UOM_RULE),
                ("run_code", run, _code_reason(run) if run else None),
            ),
            {"child_lot_code": "SELF_EDGE"} if self_edge and _CODE(child) else None,
        )
        yield (
            rn,
            parent if _CODE(parent) else None,
            child if _CODE(child) else None,
            quantity if quantity_ok else None,
            _valid_uom(uom),
            run,
        )


def _valid_quantity(value: str) -> str | None:
    return value if _QUANTITY(value) else None


def _valid_uom(value: str) -> str | None:
    return value if value in _UNITS else None


# --- Set-based checks and the inserts ---------------------------------------------------

# Dropped first in case a caller's outer transaction still holds them from an earlier call.
# A value that failed its row's own check is staged as NULL (the row is an error already).
STAGING = """
DROP TABLE IF EXISTS pg_temp.import_lots, pg_temp.import_edges, pg_temp.import_refs,
    pg_temp.import_dup_lots, pg_temp.import_warnings;
CREATE TEMP TABLE import_lots (
    rn int, lot_code text, kind text, product text, quantity text, uom text, produced_at timestamptz
) ON COMMIT DROP;
CREATE TEMP TABLE import_edges (
    rn int, parent text, child text, quantity text, uom text, run_code text
) ON COMMIT DROP;
"""
LOT_FIELDS = ("rn", "lot_code", "kind", "product", "quantity", "uom", "produced_at")
EDGE_FIELDS = ("rn", "parent", "child", "quantity", "uom", "run_code")

# Codes the edges name that the lots file does not define, with their id when the database
# has them (NULL id = unknown lot) and whether an edge consumes them. Usually small, it serves
# the checks below.
REFERENCED = """
CREATE TEMP TABLE import_refs ON COMMIT DROP AS
SELECT c.code, c.parent, l.id
FROM (SELECT code, bool_or(parent) AS parent
      FROM (SELECT parent AS code, true AS parent FROM import_edges
            UNION ALL SELECT child, false FROM import_edges) u
      WHERE code IS NOT NULL GROUP BY code) c
LEFT JOIN lots l ON l.lot_code = c.code
WHERE NOT EXISTS (SELECT 1 FROM import_lots n WHERE n.lot_code = c.code)
"""

# Lot codes the lots file defines more than once (an error; the rule checks leave them out).
DUPLICATE_LOTS = """
CREATE TEMP TABLE import_dup_lots ON COMMIT DROP AS
SELECT lot_code, min(rn) AS first FROM import_lots WHERE lot_code IS NOT NULL GROUP BY lot_code HAVING count(*) > 1
"""

# The lots of the database the file consumes, locked as a production run locks its inputs (in
# id order), so that no run consumes them between the checks below and the commit.
LOCK_INPUTS = """
SELECT l.id FROM lots l WHERE l.id IN (SELECT id FROM import_refs WHERE parent AND id IS NOT NULL)
ORDER BY l.id FOR UPDATE
"""

# Each check yields (file, row, field, reason, value, rule).
CHECKS = (
    """
    SELECT 'lots', s.rn, 'lot_code', format('duplicate lot code %s: first on row %s', s.lot_code, d.first),
           s.lot_code, 'DUPLICATE_LOT'
    FROM import_lots s JOIN import_dup_lots d ON d.lot_code = s.lot_code WHERE s.rn <> d.first
    """,
    """
    SELECT 'lots', s.rn, 'lot_code', format('lot %s already exists in the database', s.lot_code),
           s.lot_code, 'LOT_EXISTS'
    FROM import_lots s JOIN lots l ON l.lot_code = s.lot_code
    """,
    f"""
    SELECT 'genealogy', s.rn, x.field,
           format('unknown lot %s: neither in the lots file nor in the database', x.code),
           x.code, '{runs.LOT_NOT_FOUND}'
    FROM import_edges s
    CROSS JOIN LATERAL (VALUES ('parent_lot_code', s.parent), ('child_lot_code', s.child)) AS x (field, code)
    JOIN import_refs r ON r.code = x.code AND r.id IS NULL
    """,
    """
    WITH d AS (SELECT parent, child, run_code, min(rn) AS first FROM import_edges
               WHERE parent IS NOT NULL AND child IS NOT NULL
               GROUP BY parent, child, run_code HAVING count(*) > 1)
    SELECT 'genealogy', s.rn, 'edge',
           format('duplicate edge %s -> %s (run %s): first on row %s',
                  s.parent, s.child, coalesce(nullif(s.run_code, ''), 'none'), d.first),
           format('%s -> %s', s.parent, s.child), 'DUPLICATE_EDGE'
    FROM import_edges s JOIN d USING (parent, child, run_code) WHERE s.rn <> d.first
    """,
    # Only an edge between two lots already in the database can already be there.
    """
    SELECT 'genealogy', s.rn, 'edge',
           format('edge %s -> %s (run %s) already exists in the database',
                  s.parent, s.child, coalesce(nullif(s.run_code, ''), 'none')),
           format('%s -> %s', s.parent, s.child), 'EDGE_EXISTS'
    FROM import_edges s
    JOIN import_refs p ON p.code = s.parent
    JOIN import_refs c ON c.code = s.child
    JOIN lot_genealogy g ON g.parent_lot_id = p.id AND g.child_lot_id = c.id
    LEFT JOIN production_runs r ON r.run_code = s.run_code
    WHERE (s.run_code = '' AND g.run_id IS NULL) OR g.run_id = r.id
    """,
)

# --- The production-run rules (runs.py), over the whole file at once.

# Each lot an edge may consume with what it holds (quantity, unit) and what the database's edges
# and shipments already took from it (in its unit; those in a unit that does not convert count
# nothing, as in a run).
_HOLDERS = f"""
    SELECT lot_code AS code, quantity::float8 AS held, uom, 0::float8 AS used
    FROM import_lots n WHERE lot_code IS NOT NULL AND quantity IS NOT NULL AND uom IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM import_dup_lots d WHERE d.lot_code = n.lot_code)
    UNION ALL
    SELECT r.code, l.quantity::float8, l.uom,
           COALESCE((SELECT sum({units.to_unit_sql("e.quantity", "e.uom", "l.uom")})
                     FROM lot_genealogy e WHERE e.parent_lot_id = l.id), 0)
           + COALESCE((SELECT sum({units.to_unit_sql("s.quantity", "s.uom", "l.uom")})
                       FROM shipments s WHERE s.lot_id = l.id), 0)
    FROM import_refs r JOIN lots l ON l.id = r.id WHERE r.parent
"""
# The file's edges of the parents in $1, each with `wanted`: its quantity in the parent's unit
# (NULL when the units do not convert).
_CONSUMPTION = f"""
WITH h AS ({_HOLDERS}), e AS (
    SELECT s.rn, s.parent, s.quantity, s.uom AS edge_uom, h.held, h.uom, h.used,
           {units.to_unit_sql("s.quantity", "s.uom", "h.uom")} AS wanted
    FROM import_edges s JOIN h ON h.code = s.parent
    WHERE s.parent = ANY($1::text[]) AND s.quantity IS NOT NULL AND s.uom IS NOT NULL
)
"""

# Parents whose units do not convert, or that give more than they hold. The edges are summed
# by parent and unit first (a hash aggregate over the file, no sort of it), then converted.
RULE_QUANTITIES = f"""
WITH g AS (
    SELECT parent, uom, sum(quantity::float8) AS quantity FROM import_edges
    WHERE parent IS NOT NULL AND quantity IS NOT NULL AND uom IS NOT NULL GROUP BY parent, uom
), h AS ({_HOLDERS})
SELECT g.parent, min(h.held) AS held, min(h.uom) AS uom, min(h.used) AS used,
       COALESCE(sum(w.wanted), 0) AS asked, bool_or(w.wanted IS NULL) AS mismatched
FROM g JOIN h ON h.code = g.parent  -- one h row a code: the file's lots and the database's differ
CROSS JOIN LATERAL (SELECT {units.to_unit_sql("g.quantity", "g.uom", "h.uom")} AS wanted) w
GROUP BY g.parent
HAVING bool_or(w.wanted IS NULL) OR min(h.used) + COALESCE(sum(w.wanted), 0) > min(h.held) + {runs.EPSILON}
"""

# For each parent in $1: the first row at which the file's edges from it, added up in row
# order, take more than it holds; with that running total.
RULE_CROSSING = (
    _CONSUMPTION
    + f"""
SELECT DISTINCT ON (x.parent) x.parent, x.rn, x.quantity, x.edge_uom, x.upto
FROM (SELECT e.*, sum(e.wanted) OVER (PARTITION BY e.parent ORDER BY e.rn) AS upto FROM e) x
WHERE x.used + COALESCE(x.upto, 0) > x.held + {runs.EPSILON}
ORDER BY x.parent, x.rn
"""
)

# The rows of the parents in $1 whose unit does not convert to the parent's.
RULE_MISMATCHED = _CONSUMPTION + "SELECT e.parent, e.rn, e.edge_uom, e.uom FROM e WHERE e.wanted IS NULL"

# Edges that consume a lot of the database that is on hold or rejected, itself or through an
# ancestor (qc's read model qc_lot_blocks: lots whose latest decision is hold or reject). One
# block per edge: the lot's own first, else the earliest decision.
RULE_BLOCKED = """
WITH RECURSIVE up(root, id) AS (
    SELECT id, id FROM import_refs WHERE parent AND id IS NOT NULL
    UNION
    SELECT up.root, e.parent_lot_id FROM lot_genealogy e JOIN up ON e.child_lot_id = up.id
), b AS (
    SELECT DISTINCT ON (up.root) up.root, up.id, d.decision_id, d.status, d.reason
    FROM up JOIN qc_lot_blocks d ON d.lot_id = up.id
    ORDER BY up.root, up.id <> up.root, d.decision_id
)
SELECT s.rn, s.parent, (SELECT l.lot_code FROM lots l WHERE l.id = b.id) AS blocking_lot,
       b.decision_id, b.status, b.reason
FROM b JOIN import_refs r ON r.id = b.root JOIN import_edges s ON s.parent = r.code
"""

# Historical mode: the rules let through, recorded for both lots of each edge (the mass-balance
# flag) and in the audit log, once per row. $1: who imports; $2: the import's key.
WARNINGS = """
CREATE TEMP TABLE import_warnings (rn int, field text, value text, rule text, reason text) ON COMMIT DROP
"""
RECORD_OVERRIDES = f"""
WITH o AS (
    INSERT INTO import_overrides (lot_id, rule, file, row_number, field, value, reason, imported_by, import_key)
    SELECT l.id, w.rule, 'genealogy', w.rn, w.field, w.value, w.reason, $1, $2
    FROM import_warnings w JOIN import_edges s ON s.rn = w.rn
    JOIN lots l ON l.lot_code = s.parent OR l.lot_code = s.child
)
INSERT INTO audit_log ({audit.COLUMNS})
SELECT $1, 'import_override', 'lot', s.parent, w.reason,
       jsonb_build_object('rule', w.rule, 'file', 'genealogy', 'row', w.rn, 'field', w.field,
                          'value', w.value, 'parent', s.parent, 'child', s.child, 'import', $2)
FROM import_warnings w JOIN import_edges s ON s.rn = w.rn
"""

INSERT_RUNS = f"""
INSERT INTO production_runs (run_code, operator)
SELECT run_code, '{IMPORT_OPERATOR}' FROM import_edges WHERE run_code <> ''
GROUP BY run_code ORDER BY min(rn)
ON CONFLICT (run_code) DO NOTHING
"""

INSERT_LOTS = """
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at)
SELECT lot_code, kind, product, quantity::numeric(18, 3), uom, produced_at FROM import_lots ORDER BY rn
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


async def import_csv(
    conn: asyncpg.Connection,
    lots: BinaryIO | None,
    edges: BinaryIO | None,
    *,
    cache: Cache | None,
    historical: bool = False,
    actor: str | None = None,
    progress: Progress | None = None,
    max_errors: int = 1000,
    events: Mapping[str, BinaryIO] | None = None,
) -> ImportResult:
    """Validate both files completely and import them in one transaction, or import nothing.

    Either file may be None. Edges may name lots of the lots file or of the database; a
    run code not in production_runs creates a run. On any error everything is rolled back
    and `errors` holds the first `max_errors` of them in file and row order. `historical`
    lets the production-run rules through as `warnings` (the caller checks that the caller
    may). After the commit `cache` is invalidated as after every write; pass None only when
    no system caches answers from this database. `actor` (default: the caller of the RPC)
    goes into the audit log. `events` maps "partners", "locations", "receipts" and "shipments"
    to their files (services.genealogy.import_events), checked and written in the same transaction.
    """
    if max_errors < 1:
        raise ValueError("max_errors must be at least 1")
    if cache is not None and conn.is_in_transaction():
        # A savepoint is not a commit: invalidating before the outer commit could let a read
        # store the old answer again. Such a caller invalidates after its own commit.
        raise ValueError("import_csv with a cache opens its own transaction")
    started = time.monotonic()
    result = ImportResult()
    errors = _Errors(max_errors)
    tx = conn.transaction()
    await tx.start()
    try:
        ok = await _import(
            conn, lots, edges, errors, result, progress, historical, actor or caller_name(), events or {}
        )
        if ok:
            await tx.commit()
        else:
            await tx.rollback()
            result.lots_imported = result.edges_imported = result.runs_created = 0
            result.events_imported = {}
            order = {name: i for i, name in enumerate((*FILES, *import_events.FILES))}
            # A stable sort: the errors of one row stay in column order.
            result.errors = sorted(errors.items, key=lambda e: (order[e.file], e.row))[:max_errors]
            result.errors_truncated = errors.total > max_errors
    except BaseException:
        await tx.rollback()
        raise
    if ok and cache is not None and (result.lots_imported or result.edges_imported or result.events_imported):
        await cache.invalidate_all()
    result.warnings_truncated = len(result.warnings) > max_errors
    result.warnings = result.warnings[:max_errors]
    result.seconds = time.monotonic() - started
    return result


async def _import(
    conn: asyncpg.Connection,
    lots: BinaryIO | None,
    edges: BinaryIO | None,
    errors: _Errors,
    result: ImportResult,
    progress: Progress | None,
    historical: bool,
    actor: str,
    events: Mapping[str, BinaryIO],
) -> bool:
    """Stage, check and insert inside the caller's transaction; False if there are errors."""
    # The staging joins want room to hash, and a big import may outlast a statement timeout
    # meant for requests. Both settings, and the staging tables, end with the transaction.
    await conn.execute("SET LOCAL work_mem = '256MB'; SET LOCAL statement_timeout = 0")
    await conn.execute(STAGING)
    readers = {}
    for name, source, columns in (("lots", lots, LOTS_COLUMNS), ("genealogy", edges, GENEALOGY_COLUMNS)):
        if source is not None:
            readers[name] = _reader(source)
            if reason := _header_error(readers[name], columns):
                errors.add(name, 0, "header", reason)
    event_readers = import_events.headers(events, errors)
    if errors.total:
        return False  # without the right columns the rows mean nothing: report the headers alone
    if "lots" in readers:
        records = _lot_records(readers["lots"], errors, progress)
        await conn.copy_records_to_table("import_lots", records=records, columns=LOT_FIELDS)
    if "genealogy" in readers:
        records = _edge_records(readers["genealogy"], errors, progress)
        await conn.copy_records_to_table("import_edges", records=records, columns=EDGE_FIELDS)
    await import_events.stage(conn, event_readers, errors, progress)
    await conn.execute("ANALYZE import_lots; ANALYZE import_edges")
    # The checks join and group the staging tables by lot code: hashing them is what we want, but
    # the planner often sorts them for a merge join instead, and text sorts under the database's
    # collation cost more CPU than the checks themselves (measured: 20-35% more). Until the inserts.
    await conn.execute("SET LOCAL enable_mergejoin = off")
    await conn.execute(REFERENCED)
    await conn.execute(DUPLICATE_LOTS)
    await conn.execute("ANALYZE import_refs; ANALYZE import_dup_lots")
    await conn.execute(LOCK_INPUTS)
    for i, check in enumerate(CHECKS, 1):
        # Each check's first limit + 1 rows in row order: enough to fill the report (sorted
        # with the rest later, so all are kept) and to see that it overflows.
        for row in await conn.fetch(f"{check} ORDER BY 2 LIMIT {errors.limit + 1}"):
            errors.add(*row, keep=True)
        if progress:
            progress("validate", i)
    await import_events.check(conn, errors)
    broken = await _rule_violations(conn)
    if progress:
        progress("rules", len(broken))
    if historical:
        result.warnings = broken
    else:
        for e in broken[: errors.limit + 1]:
            errors.add(e.file, e.row, e.field, e.reason, e.value, e.rule, keep=True)
        errors.total += max(len(broken) - errors.limit - 1, 0)
    if errors.total:
        return False
    await conn.execute("SET LOCAL enable_mergejoin TO DEFAULT")
    result.runs_created = _count(await conn.execute(INSERT_RUNS))
    try:
        result.lots_imported = _count(await conn.execute(INSERT_LOTS))
    except asyncpg.IntegrityConstraintViolationError as exc:
        # Checked a moment ago, so someone else wrote the same lot meanwhile.
        errors.add(
            "lots", 0, "lot_code", f"changed by someone else during the import: {exc}", rule="LOT_EXISTS"
        )
        return False
    if progress:
        progress("insert", result.lots_imported)
    try:
        result.edges_imported = _count(await conn.execute(INSERT_EDGES))
    except asyncpg.IntegrityConstraintViolationError as exc:
        errors.add(
            "genealogy", 0, "edge", f"changed by someone else during the import: {exc}", rule="EDGE_EXISTS"
        )
        return False
    result.events_imported = await import_events.insert(conn, actor, list(event_readers))
    key = uuid.uuid4().hex[:12]
    if broken:
        await conn.execute(WARNINGS)
        await conn.copy_records_to_table(
            "import_warnings", records=[(e.row, e.field, e.value, e.rule, e.reason) for e in broken]
        )
        await conn.execute(RECORD_OVERRIDES, actor, key)
    more: dict[str, Any] = {"events": result.events_imported} if result.events_imported else {}
    await conn.execute(
        audit.INSERT,
        actor,
        *audit.row(
            "import",
            "import",
            key,
            mode="historical" if historical else "strict",
            lots=result.lots_imported,
            edges=result.edges_imported,
            runs=result.runs_created,
            **more,
            rules_let_through=len(broken),
        )[1:],
    )
    if progress:
        progress("insert", result.lots_imported + result.edges_imported)
    return True


# "<lot> holds 10 kg not yet consumed or shipped (of 10); <this> asks for 30 kg"
_FILE_ASKS = "the file's edges from it, up to this row, ask"


async def _rule_violations(conn: asyncpg.Connection) -> list[RowError]:
    """The file's edges that break a production-run rule, in row order."""
    found: list[RowError] = []
    rows = await conn.fetch(RULE_QUANTITIES)
    if mismatched := [r["parent"] for r in rows if r["mismatched"]]:
        for m in await conn.fetch(RULE_MISMATCHED, mismatched):
            reason = runs.uom_mismatch(m["parent"], m["uom"], m["edge_uom"])
            found.append(RowError("genealogy", m["rn"], "uom", reason, m["edge_uom"], runs.UOM_MISMATCH))
    over = {r["parent"]: r for r in rows if r["used"] + r["asked"] > r["held"] + runs.EPSILON}
    if over:
        for c in await conn.fetch(RULE_CROSSING, list(over)):
            h = over[c["parent"]]
            reason = runs.insufficient(
                c["parent"], h["held"], h["held"] - h["used"], c["upto"], h["uom"], _FILE_ASKS
            )
            value = f"{c['quantity']} {c['edge_uom']}"
            found.append(
                RowError("genealogy", c["rn"], "quantity", reason, value, runs.INSUFFICIENT_QUANTITY)
            )
    for b in await conn.fetch(RULE_BLOCKED):
        reason = runs.blocked(b["parent"], b["status"], b["blocking_lot"], b["decision_id"], b["reason"])
        found.append(RowError("genealogy", b["rn"], "parent_lot_code", reason, b["parent"], runs.LOT_BLOCKED))
    return sorted(found, key=lambda e: e.row)
