"""The FSMA 204 electronic sortable spreadsheet (21 CFR 1.1455(c)(3)(ii)): for the foods and the
time range the FDA names, every receiving, transformation and shipping event with its key data
elements, one row per event (a transformation: one row per input lot).

Columns. The FDA publishes an electronic sortable spreadsheet template (an xlsx,
https://www.fda.gov/media/179617/download, announced with the rule's resources, e.g.
https://albawheelsup.com/trade_news/fda-updates-food-traceability-resources/; the FDA calls it
illustrative, not mandatory). Its column names could not be read from the references at hand,
so the names below follow the wording of the key data elements in the rule itself, in its order:
receiving 21 CFR 1.1345(a), transformation 1.1350(a), shipping 1.1340(a) (text as quoted in
https://regulations.justia.com/regulations/fedreg/2022/11/21/2022-24417.html). One CSV holds
every CTE (the CTE in the first column), where the template is said to give each CTE a tab; a
column a CTE does not have is empty in its rows; the last, Internal Lot Code, is flowviz's own.

The traceability lot code of a lot we received is the supplier's (it keeps its TLC until a
transformation gives it a new one, 1.1320), with the supplier's ship-from site as its source; a
lot we made has our lot code, assigned on the line (stream) that made it.

Streamed from one query in a read-only snapshot (COPY, see render) in pieces of about 64 KiB:
memory stays flat whatever the row count. Every text cell passes the OWASP neutralisation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from flowviz.core import validation
from flowviz.core.csvcells import Sheet, neutralise_sql
from flowviz.core.errors import InvalidArgument

COLUMNS = [
    "Critical Tracking Event",
    "Traceability Lot Code",
    "Product Description",
    "Quantity",
    "Unit of Measure",
    "Event Date",
    "Event Time",
    "Location Description",
    "Location Identifier",
    "Immediate Previous Source Location Description",
    "Immediate Subsequent Recipient Location Description",
    "Traceability Lot Code Source Location Description",
    "Traceability Lot Code Source Reference",
    "Input Traceability Lot Code",
    "Input Product Description",
    "Input Quantity",
    "Input Unit of Measure",
    "Reference Document Type",
    "Reference Document Number",
    "Internal Lot Code",
    # A lot's QC decisions with their electronic signatures (21 CFR Part 11: signer's name, time,
    # meaning), in per-lot exports: rows of their own, after the FDA's columns.
    "QC Decision",
    "QC Reason",
    "Signed By",
    "Signer Name",
    "Signature Time",
    "Signature Meaning",
]
DOCUMENT_NAMES = {
    "PO": "Purchase Order",
    "BOL": "Bill of Lading",
    "INVOICE": "Invoice",
    "ASN": "Advance Ship Notice",
}
MAX_PRODUCTS = 100
PIECE = 64 * 1024
QUEUED = 16
SORT_MEMORY = "64MB"


def _place(alias: str, business: str = "") -> str:
    """A location description (business name, phone, address, city, postal code, country)."""
    name = f"{business}.name, NULLIF({business}.contact_phone, '')," if business else ""
    return (
        f"concat_ws(', ', {name} {alias}.name, NULLIF({alias}.address, ''), NULLIF({alias}.city, ''), "
        f"NULLIF({alias}.postal_code, ''), NULLIF({alias}.country, ''))"
    )


def _gln(alias: str) -> str:
    return f"COALESCE('GLN ' || {alias}.gln, '')"


def _doc(column: str) -> str:
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in DOCUMENT_NAMES.items())
    return f"(CASE {column} {cases} ELSE {column} END)"


def _n(column: str) -> str:
    return neutralise_sql(column)


def _date(at: str) -> str:
    return f"to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _time(at: str) -> str:
    return f"to_char({at} AT TIME ZONE 'UTC', 'HH24:MI:SS') || 'Z'"


# Where a lot's traceability lot code was assigned: the supplier's site for a received lot,
# else our line. `l` is the lot, `rc`/`rf`/`rs` its receipt, the receipt's site and supplier,
# `ls` the lot's stream.
_TLC = "COALESCE(rc.supplier_lot_code, l.lot_code)"
_TLC_SOURCE = (
    f"COALESCE(NULLIF({_place('rf', 'rs')}, ''), 'flowviz line ' || ls.name || ' (' || ls.code || ')', '')"
)
_TLC_REFERENCE = "COALESCE('GLN ' || COALESCE(rf.gln, rs.gln), '')"
_RECEIPT_OF = """
LEFT JOIN receipts rc ON rc.lot_id = l.id
LEFT JOIN locations rf ON rf.id = rc.ship_from_location_id
LEFT JOIN trading_partners rs ON rs.id = rc.supplier_id
LEFT JOIN streams ls ON ls.id = l.stream_id
"""
# $1 products (NULL: any), $2/$3 lot code range (NULL: open), $4/$5 [since, until), $6 lot ids
# (NULL: any). A lot matches the range by its TLC or by our lot code.
_IN_RANGE = f"""
((($2::text IS NULL OR {_TLC} >= $2) AND ($3::text IS NULL OR {_TLC} <= $3))
 OR (($2::text IS NULL OR l.lot_code >= $2) AND ($3::text IS NULL OR l.lot_code <= $3)))
AND ($6::bigint[] IS NULL OR l.id = ANY($6::bigint[]))
"""
_LOT_MATCHES = f"($1::text[] IS NULL OR l.product = ANY($1::text[])) AND {_IN_RANGE}"
# The QC columns of an event row (empty), and the decisions (qc's published history, migration
# 0016) of the lots of a per-lot export ($6), one row each.
_NO_QC = "'' AS qc_decision, '' AS qc_reason, '' AS signer, '' AS signer_name, '' AS signed_at, '' AS meaning"
_RUN_AT = "COALESCE(pr.ended_at, pr.started_at, pr.created_at, l.produced_at, l.created_at)"
QUERY = f"""
SELECT cte, {_n("tlc")}, {_n("product")}, quantity, uom, {_date("at")}, {_time("at")}, {_n("location")},
       {_n("location_id")}, {_n("previous")}, {_n("recipient")}, {_n("tlc_source")}, {_n("tlc_reference")},
       {_n("input_tlc")}, {_n("input_product")}, NULLIF(input_quantity, ''), NULLIF(input_uom, ''),
       {_n("doc_type")}, {_n("doc_number")}, {_n("lot_code")}, {_n("qc_decision")}, {_n("qc_reason")},
       {_n("signer")}, {_n("signer_name")}, {_n("signed_at")}, {_n("meaning")}
FROM (
    SELECT 'Receiving' AS cte, 1 AS k, r.id AS ord, r.received_at AS at, {_TLC} AS tlc, l.product,
           trim_scale(l.quantity)::text AS quantity, l.uom, {_place("t")} AS location, {_gln("t")} AS location_id,
           {_place("rf", "rs")} AS previous, '' AS recipient, {_TLC_SOURCE} AS tlc_source,
           {_TLC_REFERENCE} AS tlc_reference, '' AS input_tlc, '' AS input_product, '' AS input_quantity,
           '' AS input_uom, {_doc("r.document_type")} AS doc_type, r.document_number AS doc_number, l.lot_code,
           {_NO_QC}
    FROM receipts r JOIN lots l ON l.id = r.lot_id JOIN locations t ON t.id = r.location_id
    {_RECEIPT_OF}
    WHERE r.received_at >= $4 AND r.received_at < $5 AND {_LOT_MATCHES}
  UNION ALL
    SELECT 'Transformation', 2, e.id, {_RUN_AT}, {_TLC}, l.product, trim_scale(l.quantity)::text, l.uom,
           COALESCE('flowviz line ' || s.name || ' (' || s.code || ')' || COALESCE(', phase ' || ph.code, ''), ''),
           '', '', '', {_TLC_SOURCE}, '', COALESCE(pc.supplier_lot_code, p.lot_code), p.product,
           trim_scale(e.quantity)::text, e.uom, CASE WHEN pr.id IS NULL THEN '' ELSE 'Production Run' END,
           COALESCE(pr.run_code, ''), l.lot_code, {_NO_QC}
    FROM lot_genealogy e JOIN lots l ON l.id = e.child_lot_id JOIN lots p ON p.id = e.parent_lot_id
    LEFT JOIN production_runs pr ON pr.id = e.run_id
    LEFT JOIN streams s ON s.id = COALESCE(pr.stream_id, l.stream_id) LEFT JOIN phases ph ON ph.id = pr.phase_id
    LEFT JOIN receipts pc ON pc.lot_id = p.id
    {_RECEIPT_OF}
    WHERE {_RUN_AT} >= $4 AND {_RUN_AT} < $5
      AND ($1::text[] IS NULL OR l.product = ANY($1::text[]) OR p.product = ANY($1::text[])) AND {_IN_RANGE}
  UNION ALL
    SELECT 'Shipping', 3, sh.id, sh.shipped_at, {_TLC}, l.product, trim_scale(sh.quantity)::text, sh.uom,
           {_place("f")}, {_gln("f")}, '', {_place("t", "c")} || COALESCE(' (GLN ' || t.gln || ')', ''),
           {_TLC_SOURCE}, {_TLC_REFERENCE}, '', '', '', '', {_doc("sh.document_type")}, sh.document_number,
           l.lot_code, {_NO_QC}
    FROM shipments sh JOIN lots l ON l.id = sh.lot_id JOIN locations f ON f.id = sh.ship_from_location_id
    JOIN locations t ON t.id = sh.ship_to_location_id JOIN trading_partners c ON c.id = sh.customer_id
    {_RECEIPT_OF}
    WHERE sh.shipped_at >= $4 AND sh.shipped_at < $5 AND {_LOT_MATCHES}
  UNION ALL
    SELECT 'QC Decision', 4, q.decision_id, q.decided_at, {_TLC}, l.product, NULL, '', '', '', '', '',
           {_TLC_SOURCE}, {_TLC_REFERENCE}, '', '', '', '', 'QC Decision', q.decision_id::text, l.lot_code,
           q.decision, q.reason, COALESCE(q.signer, ''), COALESCE(q.signer_name, ''),
           COALESCE(to_char(q.signed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), ''),
           COALESCE(q.signature_meaning, '')
    FROM qc_decision_history q JOIN lots l ON l.id = q.lot_id
    {_RECEIPT_OF}
    WHERE $6::bigint[] IS NOT NULL AND l.id = ANY($6::bigint[]) AND q.decided_at >= $4 AND q.decided_at < $5
) ev
ORDER BY at, k, lot_code, input_tlc, ord
"""


def time_bound(value: str, field: str, *, end: bool) -> datetime | None:
    """A date (the whole day: `until` inclusive) or an RFC 3339 time; None when empty."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end and day < date.max else start
        at = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            "TIME_INVALID", f"{field} must be a date (YYYY-MM-DD) or an RFC 3339 time", field=field
        ) from None
    if at.tzinfo is None:
        raise InvalidArgument("TIME_INVALID", f"{field} needs a time zone offset (or Z)", field=field)
    # Within what PostgreSQL and Python both hold (an offset can push year 1 below it).
    return max(WHOLE_TIME[0], min(at, WHOLE_TIME[1]))


def arguments(
    products: list[str], lot_code_from: str, lot_code_to: str, since: str, until: str
) -> tuple[Any, ...]:
    """The query's first five parameters from a request, checked (a 400 names the field)."""
    if len(products) > MAX_PRODUCTS:
        raise InvalidArgument(
            "PRODUCTS_TOO_MANY", f"product: at most {MAX_PRODUCTS} per request", field="product"
        )
    names = [validation.text(p, "product").strip() for p in products]
    low = validation.text(lot_code_from, "lot_code_from", max_len=64) if lot_code_from else None
    high = validation.text(lot_code_to, "lot_code_to", max_len=64) if lot_code_to else None
    if low is not None and high is not None and low > high:
        raise InvalidArgument(
            "LOT_CODE_RANGE_INVALID", "lot_code_from must not be after lot_code_to", field="lot_code_from"
        )
    # Named as the HTTP request names them (from, to): the fields a caller typed.
    start = time_bound(since, "from", end=False)
    stop = time_bound(until, "to", end=True)
    if start is None or stop is None:
        field = "from" if start is None else "to"
        raise InvalidArgument(
            "FIELD_REQUIRED", f"{field} is required (the request's time range)", field=field
        )
    if start >= stop:
        raise InvalidArgument("TIME_RANGE_INVALID", "from must be before to", field="from")
    return names or None, low, high, start, stop


WHOLE_TIME = (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))


async def render(
    pool: asyncpg.Pool, args: tuple[Any, ...], lot_ids: list[int] | None = None
) -> AsyncIterator[bytes]:
    """The spreadsheet in pieces: the header, then the rows in event order (time, then receiving
    before transformation before shipping). PostgreSQL writes the CSV rows itself (COPY of the
    query, its cells neutralised in the query by the same rule): several times faster than a
    cursor and Python's csv module, and as flat in memory, since COPY streams and a bounded queue
    holds the connection back while the client reads."""
    sheet = Sheet(lineterminator="\n")
    sheet.row(COLUMNS)
    yield sheet.take()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUED)
    failed: list[Exception] = []

    async def copy() -> None:
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                # The rows are sorted by time in the database: room for 100,000 rows in memory
                # rather than a sort on disk (for this transaction only).
                await conn.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
                await conn.copy_from_query(QUERY, *args, lot_ids, output=queue.put, format="csv")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, which raises it
            failed.append(exc)
        await queue.put(None)

    task = asyncio.create_task(copy())
    try:
        piece = bytearray()
        while (data := await queue.get()) is not None:
            piece += data
            if len(piece) >= PIECE:
                yield bytes(piece)
                piece.clear()
        if failed:
            raise failed[0]
        yield bytes(piece)
    finally:
        if not task.done():
            task.cancel()
