"""The importer's partners, locations, receipts and shipments files (services.genealogy.importer).

Like the lots and genealogy files: each row checked on its own while it streams into a staging
table with COPY, then the rules that span rows as set-based queries, then INSERT ... SELECT in
the importer's one transaction. The rules are those of the API (services/lots/partners.py,
services/genealogy/receiving.py and shipping.py, with their rule names): codes are new and
unique, a location's partner exists, a receipt's lot exists (in the lots file or the database)
and has no receipt yet, its supplier is a supplier and ships from one of its own sites to one
of ours, a shipment's customer is a customer and receives at one of its sites, its carrier is a
carrier, it leaves from one of our locations, and it never takes more than the lot still holds
after every edge (the database's and the file's) and earlier shipment (in row order), nor
a lot on hold or rejected (itself or through an ancestor in the database). These rules are
errors in historical mode too. Columns: see flowviz.tools.partners_gen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import BinaryIO

import asyncpg

from flowviz.core import units, validation
from flowviz.core.importformat import LOCATIONS_HEADER, PARTNERS_HEADER, RECEIPTS_HEADER, SHIPMENTS_HEADER
from services.genealogy import importer, runs

FILES = ("partners", "locations", "receipts", "shipments")
HEADERS = dict(
    zip(FILES, (PARTNERS_HEADER, LOCATIONS_HEADER, RECEIPTS_HEADER, SHIPMENTS_HEADER), strict=True)
)

STAGING = """
DROP TABLE IF EXISTS pg_temp.import_partners, pg_temp.import_locations, pg_temp.import_receipts,
    pg_temp.import_shipments, pg_temp.import_all_partners, pg_temp.import_all_locations;
CREATE TEMP TABLE import_partners (
    rn int, code text, name text, roles text[], gln text, contact_name text, contact_email text, contact_phone text
) ON COMMIT DROP;
CREATE TEMP TABLE import_locations (
    rn int, code text, name text, partner_code text, gln text, address text, city text, postal_code text,
    country text
) ON COMMIT DROP;
CREATE TEMP TABLE import_receipts (
    rn int, lot_code text, supplier_code text, ship_from text, receiving text, received_at timestamptz,
    supplier_lot_code text, document_type text, document_number text, expires_on date
) ON COMMIT DROP;
CREATE TEMP TABLE import_shipments (
    rn int, lot_code text, quantity text, uom text, customer_code text, ship_to text, ship_from text,
    carrier_code text, shipped_at timestamptz, document_type text, document_number text
) ON COMMIT DROP;
"""

# Every partner (roles) and location (owner's code, '' for ours) a row may name: the file's and
# the database's.
DIRECTORY = """
CREATE TEMP TABLE import_all_partners ON COMMIT DROP AS
SELECT code, roles FROM import_partners WHERE code IS NOT NULL
UNION ALL SELECT code, roles FROM trading_partners;
CREATE TEMP TABLE import_all_locations ON COMMIT DROP AS
SELECT code, COALESCE(partner_code, '') AS owner FROM import_locations WHERE code IS NOT NULL
UNION ALL SELECT l.code, COALESCE(p.code, '') FROM locations l LEFT JOIN trading_partners p ON p.id = l.partner_id;
ANALYZE import_partners; ANALYZE import_locations; ANALYZE import_receipts; ANALYZE import_shipments;
ANALYZE import_all_partners; ANALYZE import_all_locations;
"""

_SPAN_RULE = {"code": "CODE_INVALID", "gln": "GLN_INVALID"}


def _partner_check(file: str, table: str, column: str, field: str, role: str) -> str:
    return f"""
    SELECT '{file}', s.rn, '{field}',
           CASE WHEN p.code IS NULL THEN format('unknown partner %s: neither in the partners file nor in the database', s.{column})
                ELSE format('%s is not a {role} (its roles: %s)', s.{column}, array_to_string(p.roles, ', ')) END,
           s.{column}, CASE WHEN p.code IS NULL THEN 'PARTNER_NOT_FOUND' ELSE 'PARTNER_ROLE_MISSING' END
    FROM {table} s LEFT JOIN import_all_partners p ON p.code = s.{column}
    WHERE s.{column} IS NOT NULL AND (p.code IS NULL OR NOT '{role}' = ANY(p.roles))
    """


def _location_check(file: str, table: str, column: str, field: str, owner: str | None) -> str:
    want = f"s.{owner}" if owner else "''"
    whose = f"format('a site of %s', s.{owner})" if owner else "'one of our own locations'"
    return f"""
    SELECT '{file}', s.rn, '{field}',
           CASE WHEN l.code IS NULL THEN format('unknown location %s: neither in the locations file nor in the database', s.{column})
                ELSE format('%s is not %s', s.{column}, {whose}) END,
           s.{column}, CASE WHEN l.code IS NULL THEN 'LOCATION_NOT_FOUND' ELSE 'LOCATION_NOT_OF_PARTNER' END
    FROM {table} s LEFT JOIN import_all_locations l ON l.code = s.{column}
    WHERE s.{column} IS NOT NULL AND (l.code IS NULL OR l.owner <> {want})
    """


def _duplicates(file: str, table: str, column: str, field: str, what: str) -> str:
    return f"""
    WITH d AS (SELECT {column} AS code, min(rn) AS first FROM {table} WHERE {column} IS NOT NULL
               GROUP BY 1 HAVING count(*) > 1)
    SELECT '{file}', s.rn, '{field}', format('duplicate {what} %s: first on row %s', s.{column}, d.first),
           s.{column}, 'DUPLICATE_{what.upper().replace(" ", "_")}'
    FROM {table} s JOIN d ON d.code = s.{column} WHERE s.rn <> d.first
    """


CHECKS = (
    _duplicates("partners", "import_partners", "code", "code", "partner"),
    """
    SELECT 'partners', s.rn, 'code', format('partner %s already exists in the database', s.code), s.code,
           'PARTNER_EXISTS'
    FROM import_partners s JOIN trading_partners p ON p.code = s.code
    """,
    """
    SELECT 'partners', s.rn, 'gln', format('GLN %s is already %s''s', s.gln, p.code), s.gln, 'GLN_TAKEN'
    FROM import_partners s JOIN trading_partners p ON p.gln = s.gln WHERE s.gln <> ''
    """,
    _duplicates("locations", "import_locations", "code", "code", "location"),
    """
    SELECT 'locations', s.rn, 'code', format('location %s already exists in the database', s.code), s.code,
           'LOCATION_EXISTS'
    FROM import_locations s JOIN locations l ON l.code = s.code
    """,
    """
    SELECT 'locations', s.rn, 'gln', format('GLN %s is already %s''s', s.gln, l.code), s.gln, 'GLN_TAKEN'
    FROM import_locations s JOIN locations l ON l.gln = s.gln WHERE s.gln <> ''
    """,
    """
    SELECT 'locations', s.rn, 'partner_code',
           format('unknown partner %s: neither in the partners file nor in the database', s.partner_code),
           s.partner_code, 'PARTNER_NOT_FOUND'
    FROM import_locations s LEFT JOIN import_all_partners p ON p.code = s.partner_code
    WHERE s.partner_code IS NOT NULL AND p.code IS NULL
    """,
    _duplicates("receipts", "import_receipts", "lot_code", "lot_code", "receipt of lot"),
    f"""
    SELECT 'receipts', s.rn, 'lot_code', format('unknown lot %s: neither in the lots file nor in the database', s.lot_code),
           s.lot_code, '{runs.LOT_NOT_FOUND}'
    FROM import_receipts s
    WHERE s.lot_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM import_lots n WHERE n.lot_code = s.lot_code)
      AND NOT EXISTS (SELECT 1 FROM lots l WHERE l.lot_code = s.lot_code)
    """,
    """
    SELECT 'receipts', s.rn, 'lot_code', format('lot %s already has a receipt', s.lot_code), s.lot_code,
           'RECEIPT_EXISTS'
    FROM import_receipts s JOIN lots l ON l.lot_code = s.lot_code JOIN receipts r ON r.lot_id = l.id
    """,
    _partner_check("receipts", "import_receipts", "supplier_code", "supplier_code", "supplier"),
    _location_check("receipts", "import_receipts", "ship_from", "ship_from_location_code", "supplier_code"),
    _location_check("receipts", "import_receipts", "receiving", "receiving_location_code", None),
    f"""
    SELECT 'shipments', s.rn, 'lot_code', format('unknown lot %s: neither in the lots file nor in the database', s.lot_code),
           s.lot_code, '{runs.LOT_NOT_FOUND}'
    FROM import_shipments s
    WHERE s.lot_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM import_lots n WHERE n.lot_code = s.lot_code)
      AND NOT EXISTS (SELECT 1 FROM lots l WHERE l.lot_code = s.lot_code)
    """,
    _partner_check("shipments", "import_shipments", "customer_code", "customer_code", "customer"),
    _partner_check("shipments", "import_shipments", "carrier_code", "carrier_code", "carrier"),
    _location_check("shipments", "import_shipments", "ship_to", "ship_to_location_code", "customer_code"),
    _location_check("shipments", "import_shipments", "ship_from", "ship_from_location_code", None),
)

# The shipped lots with what they hold and what every edge (the file's and the database's) and
# the database's shipments took (converted; a unit that does not convert counts nothing, as in
# a run), then the file's shipments of each added up in row order: the first row past what the
# lot holds, and every row whose unit does not convert.
QUANTITIES = f"""
WITH held AS (
    SELECT n.lot_code AS code, NULL::bigint AS id, n.quantity::float8 AS held, n.uom FROM import_lots n
    WHERE n.lot_code IN (SELECT lot_code FROM import_shipments) AND n.quantity IS NOT NULL AND n.uom IS NOT NULL
    UNION ALL
    SELECT l.lot_code, l.id, l.quantity::float8, l.uom FROM lots l WHERE l.lot_code IN (SELECT lot_code FROM import_shipments)
), fe AS (
    SELECT parent AS code, uom, sum(quantity::float8) AS q FROM import_edges
    WHERE parent IN (SELECT lot_code FROM import_shipments) AND quantity IS NOT NULL AND uom IS NOT NULL GROUP BY 1, 2
), de AS (
    SELECT parent_lot_id AS id, uom, sum(quantity)::float8 AS q FROM lot_genealogy
    WHERE parent_lot_id IN (SELECT id FROM held WHERE id IS NOT NULL) GROUP BY 1, 2
), ds AS (
    SELECT lot_id AS id, uom, sum(quantity)::float8 AS q FROM shipments
    WHERE lot_id IN (SELECT id FROM held WHERE id IS NOT NULL) GROUP BY 1, 2
), given AS (
    SELECT h.code, {units.to_unit_sql("fe.q", "fe.uom", "h.uom")} AS q FROM held h JOIN fe ON fe.code = h.code
    UNION ALL SELECT h.code, {units.to_unit_sql("de.q", "de.uom", "h.uom")} FROM held h JOIN de ON de.id = h.id
    UNION ALL SELECT h.code, {units.to_unit_sql("ds.q", "ds.uom", "h.uom")} FROM held h JOIN ds ON ds.id = h.id
), used AS (
    SELECT code, sum(q) AS used FROM given GROUP BY code
), x AS (
    SELECT s.rn, s.lot_code, s.quantity, s.uom AS shipped_uom, h.held, h.uom, COALESCE(u.used, 0) AS used,
           {units.to_unit_sql("s.quantity", "s.uom", "h.uom")} AS wanted
    FROM import_shipments s JOIN held h ON h.code = s.lot_code LEFT JOIN used u ON u.code = h.code
    WHERE s.quantity IS NOT NULL AND s.uom IS NOT NULL
), r AS (
    SELECT x.*, sum(x.wanted) OVER (PARTITION BY x.lot_code ORDER BY x.rn) AS upto FROM x
)
SELECT * FROM (
    SELECT DISTINCT ON (lot_code) * FROM r WHERE used + COALESCE(upto, 0) > held + {runs.EPSILON}
    ORDER BY lot_code, rn
) over_held
UNION ALL SELECT * FROM r WHERE wanted IS NULL
"""

# Shipments of lots of the database on hold or rejected, themselves or through an ancestor (qc's
# read model qc_lot_blocks); the lot's own block first, else the earliest decision.
BLOCKED = """
WITH RECURSIVE up(root, id) AS (
    SELECT id, id FROM lots WHERE lot_code IN (SELECT lot_code FROM import_shipments)
    UNION
    SELECT up.root, e.parent_lot_id FROM lot_genealogy e JOIN up ON e.child_lot_id = up.id
), b AS (
    SELECT DISTINCT ON (up.root) up.root, up.id, d.decision_id, d.status, d.reason
    FROM up JOIN qc_lot_blocks d ON d.lot_id = up.id
    ORDER BY up.root, up.id <> up.root, d.decision_id
)
SELECT s.rn, s.lot_code, (SELECT l.lot_code FROM lots l WHERE l.id = b.id) AS blocking_lot,
       b.decision_id, b.status, b.reason
FROM b JOIN lots r ON r.id = b.root JOIN import_shipments s ON s.lot_code = r.lot_code
"""

INSERTS = {
    "partners": """
    INSERT INTO trading_partners (code, name, roles, gln, contact_name, contact_email, contact_phone)
    SELECT code, name, roles, nullif(gln, ''), contact_name, contact_email, contact_phone
    FROM import_partners ORDER BY rn
    """,
    "locations": """
    INSERT INTO locations (code, name, partner_id, gln, address, city, postal_code, country)
    SELECT s.code, s.name, p.id, nullif(s.gln, ''), s.address, s.city, s.postal_code, s.country
    FROM import_locations s LEFT JOIN trading_partners p ON p.code = s.partner_code ORDER BY s.rn
    """,
    "receipts": """
    INSERT INTO receipts (lot_id, supplier_id, ship_from_location_id, location_id, received_at, supplier_lot_code,
                          document_type, document_number, expires_on, recorded_by)
    SELECT l.id, p.id, f.id, t.id, s.received_at, s.supplier_lot_code, s.document_type, s.document_number,
           s.expires_on, $1
    FROM import_receipts s JOIN lots l ON l.lot_code = s.lot_code JOIN trading_partners p ON p.code = s.supplier_code
    JOIN locations f ON f.code = s.ship_from JOIN locations t ON t.code = s.receiving ORDER BY s.rn
    """,
    "shipments": """
    INSERT INTO shipments (lot_id, quantity, uom, customer_id, ship_to_location_id, ship_from_location_id,
                           carrier_id, shipped_at, document_type, document_number, recorded_by)
    SELECT l.id, s.quantity::numeric(18, 3), s.uom, c.id, t.id, f.id, k.id, s.shipped_at, s.document_type,
           s.document_number, $1
    FROM import_shipments s JOIN lots l ON l.lot_code = s.lot_code JOIN trading_partners c ON c.code = s.customer_code
    JOIN locations t ON t.code = s.ship_to JOIN locations f ON f.code = s.ship_from
    LEFT JOIN trading_partners k ON k.code = s.carrier_code ORDER BY s.rn
    """,
}

# --- per-row checks ----------------------------------------------------------------------

_CODE = validation.CODE_PATTERN.fullmatch
_COUNTRY = re.compile(r"([A-Z]{2})?").fullmatch
_DOC_RULE = "must be one of " + ", ".join(validation.DOCUMENT_TYPES)


def _code(value: str, *, optional: bool = False) -> str | None:
    if optional and not value:
        return None
    return None if _CODE(value) else "must be 1-64 upper-case letters, digits, _ . - (e.g. SUP-001)"


def _gln(value: str) -> str | None:
    if not value:
        return None
    if not validation.GLN_PATTERN.fullmatch(value):
        return "must be empty or 13 digits (a GS1 GLN)"
    expected = validation.gs1_check_digit(value[:12])
    return None if int(value[12]) == expected else f"ends in {value[12]}; its GS1 check digit is {expected}"


def _text(value: str, *, required: bool = True, max_len: int = validation.TEXT_MAX) -> str | None:
    if required and not value.strip():
        return "is required"
    if len(value) > max_len or re.search("[\x00-\x1f\ufffd]", value):
        return f"must be at most {max_len} printable characters"
    return None


def _roles(value: str) -> tuple[list[str] | None, str | None]:
    roles = value.split("|") if value else []
    if not roles or any(r not in validation.PARTNER_ROLES for r in roles) or len(set(roles)) != len(roles):
        return None, "must be one or more of supplier, customer, carrier separated by |"
    return roles, None


def _when(value: str) -> tuple[object, str | None]:
    at = importer._timestamp(value)
    return at, None if at else importer._TIMESTAMP_RULE.replace("empty or ", "")


def _day(value: str) -> tuple[date | None, str | None]:
    if not value:
        return None, None
    try:
        return date.fromisoformat(value), None
    except ValueError:
        return None, "must be empty or a date, YYYY-MM-DD"


_RULES = {
    "code": "CODE_INVALID", "partner_code": "CODE_INVALID", "supplier_code": "CODE_INVALID",
    "customer_code": "CODE_INVALID", "carrier_code": "CODE_INVALID", "ship_from_location_code": "CODE_INVALID",
    "receiving_location_code": "CODE_INVALID", "ship_to_location_code": "CODE_INVALID",
    "lot_code": "LOT_CODE_INVALID", "gln": "GLN_INVALID", "roles": "ROLES_INVALID",
    "received_at": "TIMESTAMP_INVALID", "shipped_at": "TIMESTAMP_INVALID", "expires_on": "DATE_INVALID",
    "document_type": "DOCUMENT_TYPE_INVALID", "quantity": "QUANTITY_INVALID", "uom": "UOM_INVALID",
    "country": "COUNTRY_INVALID",
}  # fmt: skip


class _Row:
    """One row's checks (field, value, reason) and its staging record as they are taken."""

    def __init__(self, values: dict[str, str], rn: int) -> None:
        self.values = values
        self.checks: list[tuple[str, str, str | None]] = []
        self.staged: list[object] = [rn]

    def take(self, field: str, reason: str | None, value: object | None = None) -> None:
        self.checks.append((field, self.values[field], reason))
        self.staged.append(None if reason else (self.values[field] if value is None else value))


def _rows(
    name: str, reader: Iterator[list[str]], errors: importer._Errors, progress: importer.Progress | None
) -> Iterator[tuple[object, ...]]:
    """Staging records; a field that fails its own check is staged as NULL and reported."""
    header = HEADERS[name]
    for rn, row in importer._read(reader, name, len(header), errors, progress):
        values = dict(zip(header, row, strict=True))
        row_ = _Row(values, rn)
        take, checks, staged = row_.take, row_.checks, row_.staged

        if name == "partners":
            roles, why = _roles(values["roles"])
            take("code", _code(values["code"]))
            take("name", _text(values["name"]))
            take("roles", why, roles)
            take("gln", _gln(values["gln"]))
            for f in ("contact_name", "contact_email", "contact_phone"):
                take(f, _text(values[f], required=False))
        elif name == "locations":
            take("code", _code(values["code"]))
            take("name", _text(values["name"]))
            take("partner_code", _code(values["partner_code"], optional=True))
            staged[-1] = staged[-1] or None  # '' is ours: NULL
            take("gln", _gln(values["gln"]))
            for f in ("address", "city", "postal_code"):
                take(f, _text(values[f], required=False))
            take("country", None if _COUNTRY(values["country"]) else "must be empty or ISO 3166 alpha-2 (DE)")
        elif name == "receipts":
            take("lot_code", importer._code_reason(values["lot_code"]))
            for f in ("supplier_code", "ship_from_location_code", "receiving_location_code"):
                take(f, _code(values[f]))
            at, why = _when(values["received_at"])
            take("received_at", why, at)
            take("supplier_lot_code", _text(values["supplier_lot_code"], max_len=64))
            take("document_type", None if values["document_type"] in validation.DOCUMENT_TYPES else _DOC_RULE)
            take("document_number", _text(values["document_number"], max_len=100))
            expires, why = _day(values["expires_on"])
            take("expires_on", why, expires)
            if not values["expires_on"]:
                staged[-1] = None
        else:
            take("lot_code", importer._code_reason(values["lot_code"]))
            take("quantity", importer._quantity_reason(values["quantity"], positive=True))
            take("uom", None if values["uom"] in importer._UNITS else importer._UOM_RULE)
            for f in ("customer_code", "ship_to_location_code", "ship_from_location_code"):
                take(f, _code(values[f]))
            take("carrier_code", _code(values["carrier_code"], optional=True))
            staged[-1] = staged[-1] or None
            at, why = _when(values["shipped_at"])
            take("shipped_at", why, at)
            take("document_type", None if values["document_type"] in validation.DOCUMENT_TYPES else _DOC_RULE)
            take("document_number", _text(values["document_number"], max_len=100))
        importer._report(errors, name, rn, checks, {f: _RULES.get(f, "FIELD_INVALID") for f in values})
        yield tuple(staged)


_COLUMNS = {
    "partners": ("rn", "code", "name", "roles", "gln", "contact_name", "contact_email", "contact_phone"),
    "locations": ("rn", "code", "name", "partner_code", "gln", "address", "city", "postal_code", "country"),
    "receipts": ("rn", "lot_code", "supplier_code", "ship_from", "receiving", "received_at", "supplier_lot_code",
                 "document_type", "document_number", "expires_on"),
    "shipments": ("rn", "lot_code", "quantity", "uom", "customer_code", "ship_to", "ship_from", "carrier_code",
                  "shipped_at", "document_type", "document_number"),
}  # fmt: skip


def headers(sources: Mapping[str, BinaryIO], errors: importer._Errors) -> dict[str, Iterator[list[str]]]:
    """A reader per given file, its header checked (an error at row 0 when it is wrong)."""
    readers = {}
    for name in FILES:
        if (source := sources.get(name)) is not None:
            readers[name] = importer._reader(source)
            if reason := importer._header_error(readers[name], HEADERS[name]):
                errors.add(name, 0, "header", reason)
    return readers


async def stage(
    conn: asyncpg.Connection,
    readers: Mapping[str, Iterator[list[str]]],
    errors: importer._Errors,
    progress: importer.Progress | None,
) -> None:
    await conn.execute(STAGING)
    for name, reader in readers.items():
        await conn.copy_records_to_table(
            f"import_{name}", records=_rows(name, reader, errors, progress), columns=_COLUMNS[name]
        )
    await conn.execute(DIRECTORY)


async def check(conn: asyncpg.Connection, errors: importer._Errors) -> None:
    """The rules that span rows and files (after the lots and genealogy files are staged)."""
    for sql in CHECKS:
        for row in await conn.fetch(f"{sql} ORDER BY 2 LIMIT {errors.limit + 1}"):
            errors.add(*row, keep=True)
    for r in await conn.fetch(QUANTITIES):
        if r["wanted"] is None:
            reason = runs.uom_mismatch(r["lot_code"], r["uom"], r["shipped_uom"])
            errors.add("shipments", r["rn"], "uom", reason, r["shipped_uom"], runs.UOM_MISMATCH, keep=True)
        else:
            reason = runs.insufficient(
                r["lot_code"], r["held"], r["held"] - r["used"], r["upto"], r["uom"],
                "the file's shipments of it, up to this row, ask",
            )  # fmt: skip
            value = f"{r['quantity']} {r['shipped_uom']}"
            errors.add("shipments", r["rn"], "quantity", reason, value, runs.INSUFFICIENT_QUANTITY, keep=True)
    for b in await conn.fetch(BLOCKED):
        reason = runs.blocked(
            b["lot_code"], b["status"], b["blocking_lot"], b["decision_id"], b["reason"], "lot"
        )
        errors.add("shipments", b["rn"], "lot_code", reason, b["lot_code"], runs.LOT_BLOCKED, keep=True)


async def insert(conn: asyncpg.Connection, actor: str, given: Sequence[str]) -> dict[str, int]:
    """Rows written per file (only the files given)."""
    counts = {}
    for name in FILES:
        if name in given:
            sql = INSERTS[name]
            status = await (conn.execute(sql, actor) if "$1" in sql else conn.execute(sql))
            counts[name] = importer._count(status)
    return counts
