"""A trace as traceability events: one row per production run (or bare edge) and input lot,
with the FSMA 204 key data elements (lot code, product, quantity and unit, location, date,
reference document).

An event lists every input of the lot it made, whichever way the trace walked: a downstream
walk from one input reaches the mix but not the mix's other inputs, so those are read here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import NamedTuple

from flowviz.core.db import DB
from flowviz.genealogy.v1 import genealogy_pb2
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
