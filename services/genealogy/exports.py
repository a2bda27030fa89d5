"""A trace as traceability events: one row per production run (or bare edge) and input lot,
with the FSMA 204 key data elements (lot code, product, quantity and unit, location, date,
reference document).

An event lists every input of the lot it made, whichever way the trace walked: a downstream
walk from one input reaches the mix but not the mix's other inputs, so those are read here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from flowviz.core.csvcells import Sheet
from flowviz.core.db import DB
from flowviz.core.protojson import timestamp
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import receiving, shipping
from services.genealogy import trace as engine

RUNS = """
SELECT r.run_code, COALESCE(s.code, '') AS stream_code, COALESCE(p.code, '') AS phase_code,
       COALESCE(r.ended_at, r.started_at, r.created_at) AS event_time
FROM production_runs r LEFT JOIN streams s ON s.id = r.stream_id LEFT JOIN phases p ON p.id = r.phase_id
WHERE r.run_code = ANY($1::text[])
"""
# Every input of the given lots (the lots they were made from), with what an export row shows.
INPUTS = """
SELECT p.lot_code AS parent_code, c.lot_code AS child_code, e.quantity::float8 AS quantity, e.uom,
       COALESCE(r.run_code, '') AS run_code, p.product, p.kind
FROM lots c
JOIN lot_genealogy e ON e.child_lot_id = c.id
JOIN lots p ON p.id = e.parent_lot_id
LEFT JOIN production_runs r ON r.id = e.run_id
WHERE c.lot_code = ANY($1::text[])
"""
CHUNK = 500


class Lot(NamedTuple):
    """An input lot the trace did not reach: what an export row says of it."""

    lot_code: str
    product: str
    kind: str


async def rows(
    db: DB, lot_code: str, direction: engine.Direction
) -> AsyncIterator[list[genealogy_pb2.ExportRow]]:
    """Chunks of rows in event order; nothing at all when the lot does not exist (the caller checks)."""
    result = await engine.trace(db, lot_code, direction=direction, max_nodes=engine.HARD_MAX_NODES)
    if result is None:
        return
    async for chunk in _rows(db, result, direction):
        yield chunk


async def _rows(
    db: DB, result: engine.TraceResult, direction: engine.Direction
) -> AsyncIterator[list[genealogy_pb2.ExportRow]]:
    lots = {n.lot_code: n for n in result.nodes}
    inputs: dict[str, engine.TraceNode | Lot] = dict(lots)
    edges = list(result.edges)
    if direction != "upstream":  # an upstream walk already reached every input of what it shows
        shown = {(e.parent_code, e.child_code, e.run_code) for e in edges}
        for r in await db.fetch(INPUTS, sorted({e.child_code for e in edges})):
            if (r["parent_code"], r["child_code"], r["run_code"]) not in shown:
                fields = ("parent_code", "child_code", "quantity", "uom", "run_code")
                edges.append(engine.TraceEdge(**{f: r[f] for f in fields}))
                inputs.setdefault(r["parent_code"], Lot(r["parent_code"], r["product"], r["kind"]))
    runs = {r["run_code"]: r for r in await db.fetch(RUNS, sorted({e.run_code for e in edges if e.run_code}))}

    def when(run_code: str, child: str) -> datetime:
        run = runs.get(run_code)
        return run["event_time"] if run else (lots[child].produced_at or lots[child].created_at)

    edges.sort(key=lambda e: (when(e.run_code, e.child_code), e.run_code, e.child_code, e.parent_code))
    chunk: list[genealogy_pb2.ExportRow] = []
    for e in edges:
        parent, child, run = inputs[e.parent_code], lots[e.child_code], runs.get(e.run_code)
        row = genealogy_pb2.ExportRow(
            run_code=e.run_code,
            stream_code=run["stream_code"] if run else "",
            phase_code=run["phase_code"] if run else "",
            input_lot_code=parent.lot_code,
            input_product=parent.product,
            input_quantity=e.quantity,
            input_uom=e.uom,
            input_kind=parent.kind,
            output_lot_code=child.lot_code,
            output_product=child.product,
            output_quantity=child.quantity,
            output_uom=child.uom,
            output_kind=child.kind,
        )
        row.event_time.FromDatetime(when(e.run_code, e.child_code))
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- the trace as flowviz's own spreadsheet (rendered here, relayed by the gateway as bytes) ----

CSV_COLUMNS = [
    "traceability_lot_code",
    "product",
    "quantity",
    "unit",
    "kind",
    "event",
    "reference_document",
    "event_time",
    "location",
    "step",
    "input_lot_code",
    "input_product",
    "input_quantity",
    "input_unit",
    "input_kind",
    # Receiving and shipping rows (the columns above keep their meaning for transformations).
    "partner_code",
    "from_location",
    "to_location",
    "traceability_lot_code_source",
    "document_type",
]
Line = tuple[datetime, int, list[object]]


async def trace_lot_ids(db: DB, lot_code: str, direction: engine.Direction) -> list[int] | None:
    """The ids of the lots in a lot's trace; None when the lot does not exist."""
    result = await engine.trace(db, lot_code, direction=direction, max_nodes=engine.HARD_MAX_NODES)
    return None if result is None else [n.lot_id for n in result.nodes]


async def trace_csv(pool: asyncpg.Pool, lot_code: str, direction: engine.Direction) -> AsyncIterator[bytes]:
    """One row per transformation and input lot (as ExportTrace streams them), and one per receipt
    and shipment of a lot in the trace, all in event order."""
    result = await engine.trace(pool, lot_code, direction=direction, max_nodes=engine.HARD_MAX_NODES)
    if result is None:
        return
    lines: list[Line] = []
    async for chunk in _rows(pool, result, direction):
        for r in chunk:
            at = r.event_time.ToDatetime(tzinfo=UTC)
            lines.append((at, 1, [
                r.output_lot_code, r.output_product, r.output_quantity, r.output_uom, r.output_kind,
                "transformation" if r.run_code else "link", r.run_code, timestamp(r.event_time),
                r.stream_code, r.phase_code, r.input_lot_code, r.input_product, r.input_quantity,
                r.input_uom, r.input_kind,
            ]))  # fmt: skip
    lot_ids = [n.lot_id for n in result.nodes]
    kinds = {n.lot_code: n.kind for n in result.nodes}
    async with pool.acquire() as conn:
        receipts = await receiving.of_lots(conn, lot_ids)
        shipments = await shipping.of_lots(conn, lot_ids)
    for rc in receipts:
        lines.append((rc.received_at.ToDatetime(tzinfo=UTC), 0, [
            rc.lot_code, rc.product, rc.quantity, rc.uom, rc.kind, "receiving", rc.document_number,
            timestamp(rc.received_at), rc.receiving_location_code, "", "", "", "", "", "", rc.supplier_code,
            rc.ship_from_location_code, rc.receiving_location_code, rc.supplier_lot_code, rc.document_type,
        ]))  # fmt: skip
    for s in shipments:
        lines.append((s.shipped_at.ToDatetime(tzinfo=UTC), 2, [
            s.lot_code, s.product, s.quantity, s.uom, kinds.get(s.lot_code, ""), "shipping", s.document_number,
            timestamp(s.shipped_at), s.ship_from_location_code, "", "", "", "", "", "", s.customer_code,
            s.ship_from_location_code, s.ship_to_location_code, "", s.document_type,
        ]))  # fmt: skip
    lines.sort(key=lambda line: (line[0], line[1]))
    sheet = Sheet()
    sheet.row(CSV_COLUMNS)
    for _, _, cells in lines:
        sheet.row(cells + [""] * (len(CSV_COLUMNS) - len(cells)))
        if sheet.full():
            yield sheet.take()
    yield sheet.take()
