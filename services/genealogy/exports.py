"""A trace as traceability events: one row per production run (or bare edge) and input lot,
with the FSMA 204 key data elements (lot code, product, quantity and unit, location, date,
reference document)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from flowviz.core.db import DB
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import trace as engine

RUNS = """
SELECT r.run_code, COALESCE(s.code, '') AS stream_code, COALESCE(p.code, '') AS phase_code,
       COALESCE(r.ended_at, r.started_at, r.created_at) AS event_time
FROM production_runs r LEFT JOIN streams s ON s.id = r.stream_id LEFT JOIN phases p ON p.id = r.phase_id
WHERE r.run_code = ANY($1::text[])
"""
CHUNK = 500


async def rows(
    db: DB, lot_code: str, direction: engine.Direction
) -> AsyncIterator[list[genealogy_pb2.ExportRow]]:
    """Chunks of rows in event order; nothing at all when the lot does not exist (the caller checks)."""
    result = await engine.trace(db, lot_code, direction=direction, max_nodes=engine.HARD_MAX_NODES)
    if result is None:
        return
    lots = {n.lot_code: n for n in result.nodes}
    runs = {
        r["run_code"]: r
        for r in await db.fetch(RUNS, sorted({e.run_code for e in result.edges if e.run_code}))
    }

    def when(run_code: str, child: str) -> datetime:
        run = runs.get(run_code)
        return run["event_time"] if run else (lots[child].produced_at or lots[child].created_at)

    edges = sorted(
        result.edges, key=lambda e: (when(e.run_code, e.child_code), e.run_code, e.child_code, e.parent_code)
    )
    chunk: list[genealogy_pb2.ExportRow] = []
    for e in edges:
        parent, child, run = lots[e.parent_code], lots[e.child_code], runs.get(e.run_code)
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
