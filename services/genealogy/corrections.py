"""Corrections with a trail: void a production run, void an edge recorded without a run,
correct a lot's quantity, unit or product.

Nothing is rewritten in place without a record of what it was. A voided edge moves from
lot_genealogy to voided_edges (same id, the row as it was, plus who, when and why), so every
trace, recall, balance and export query leaves it out without knowing voids exist; a voided
run keeps its production_runs row and gains a run_voids row; a corrected lot gets a
lot_corrections row with its values before and after. Those three tables are append-only
(the database refuses UPDATE and DELETE). Each correction is one transaction with its audit
row, and returns the lots whose cached answers it changed (looked up before the edges move,
while the genealogy still joins them) for the caller to invalidate after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from flowviz.core import audit, validation
from flowviz.core.db import DB, Conn
from flowviz.core.errors import Conflict, NotFound
from flowviz.core.identity import caller_name
from flowviz.core.units import to_unit
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy.lineage import related
from services.genealogy.runs import EPSILON

REASON_MAX = 1000


def reason(value: str) -> str:
    return validation.text(value, "reason", max_len=REASON_MAX).strip()


def _void(by: str, at: object, why: str) -> genealogy_pb2.Void:
    void = genealogy_pb2.Void(voided_by=by, reason=why)
    void.voided_at.FromDatetime(at)  # type: ignore[arg-type]
    return void


async def _affected(conn: Conn, lot_codes: list[str]) -> list[str]:
    """Every lot whose cached answer can show these lots or their incoming edges: the lots,
    their ancestors, their descendants and the other parents of those (whose one-level
    answers show a descendant's effective status)."""
    return await related(conn, lot_codes)


# --- runs -------------------------------------------------------------------------------

_RUN_EDGES = """
SELECT e.id, e.parent_lot_id, e.child_lot_id, p.lot_code AS parent, c.lot_code AS child
FROM lot_genealogy e JOIN lots p ON p.id = e.parent_lot_id JOIN lots c ON c.id = e.child_lot_id
WHERE e.run_id = $1
"""

# What consumes any of the lots $1: the runs (or edges recorded without a run) taking from them.
_CONSUMERS = """
SELECT p.lot_code AS lot, c.lot_code AS child, r.run_code, e.id AS edge_id
FROM lot_genealogy e JOIN lots p ON p.id = e.parent_lot_id JOIN lots c ON c.id = e.child_lot_id
LEFT JOIN production_runs r ON r.id = e.run_id
WHERE e.parent_lot_id = ANY($1::bigint[])
ORDER BY r.run_code NULLS LAST, e.id
"""

# The void record, and the run's edges moved out of the genealogy, in one statement.
_VOID_RUN = """
WITH v AS (
    INSERT INTO run_voids (run_id, voided_by, reason) VALUES ($1, $2, $3) RETURNING id, voided_at
), d AS (
    DELETE FROM lot_genealogy WHERE run_id = $1 RETURNING *
), m AS (
    INSERT INTO voided_edges
        (id, parent_lot_id, child_lot_id, quantity, uom, run_id, created_at, run_void_id, voided_by, voided_at, reason)
    SELECT d.id, d.parent_lot_id, d.child_lot_id, d.quantity, d.uom, d.run_id, d.created_at, v.id, $2, v.voided_at, $3
    FROM d CROSS JOIN v
    RETURNING id
)
SELECT (SELECT count(*) FROM m) AS edges FROM v
"""


# Shipments of these lots (a shipped lot keeps what it held: the customer has it).
_SHIPPED = """SELECT s.id, l.lot_code FROM shipments s JOIN lots l ON l.id = s.lot_id
WHERE s.lot_id = ANY($1::bigint[]) ORDER BY s.id"""
# What a lot has given, by unit: to its children and to shipments.
_USED = """SELECT uom, sum(quantity)::float8 AS quantity FROM (
    SELECT uom, quantity FROM lot_genealogy WHERE parent_lot_id = $1
    UNION ALL SELECT uom, quantity FROM shipments WHERE lot_id = $1) given GROUP BY uom"""


def _consumer_names(rows: list[asyncpg.Record]) -> list[str]:
    return list(dict.fromkeys(r["run_code"] or f"edge {r['edge_id']} (into {r['child']})" for r in rows))


async def void_run(pool: asyncpg.Pool, run_code: str, why: str) -> list[str]:
    """Void the run; the lots whose cached answers changed. Refused (409) when voided already
    or while another run (or an imported edge) consumes one of its outputs."""
    async with pool.acquire() as conn, conn.transaction():
        run = await conn.fetchrow(
            "SELECT r.id, v.voided_by, v.voided_at, v.reason FROM production_runs r "
            "LEFT JOIN run_voids v ON v.run_id = r.id WHERE r.run_code = $1 FOR UPDATE OF r",
            run_code,
        )
        if run is None:
            raise NotFound("RUN_NOT_FOUND", f"production run {run_code} does not exist", run_code=run_code)
        if run["voided_by"] is not None:
            raise Conflict(
                "RUN_ALREADY_VOIDED",
                f"run {run_code} was voided by {run['voided_by']} at {run['voided_at']:%Y-%m-%d %H:%M:%S} UTC: "
                f"{run['reason']}",
                run_code=run_code,
                voided_by=run["voided_by"],
            )
        edges = await conn.fetch(_RUN_EDGES, run["id"])
        outputs = sorted({e["child_lot_id"] for e in edges})
        # Locked as a run locks its inputs: no run can start consuming an output meanwhile.
        await conn.execute("SELECT 1 FROM lots WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", outputs)
        consumers = await conn.fetch(_CONSUMERS, outputs)
        if consumers:
            names = _consumer_names(consumers)
            lots = sorted({r["lot"] for r in consumers})
            raise Conflict(
                "RUN_OUTPUT_CONSUMED",
                f"run {run_code} cannot be voided: its output {', '.join(lots)} is consumed by "
                f"{', '.join(names)}; void those first",
                run_code=run_code,
                consumed_by=",".join(names),
                lot_code=lots[0],
            )
        shipped = await conn.fetch(_SHIPPED, outputs)
        if shipped:
            # What a customer received came from these inputs: that record must stand.
            lots = sorted({r["lot_code"] for r in shipped})
            raise Conflict(
                "RUN_OUTPUT_SHIPPED",
                f"run {run_code} cannot be voided: its output {', '.join(lots)} has been shipped "
                f"(shipment {', '.join(str(r['id']) for r in shipped)})",
                run_code=run_code,
                lot_code=lots[0],
                shipment_id=shipped[0]["id"],
            )
        affected = await _affected(conn, sorted({e["child"] for e in edges}))
        await conn.fetchrow(_VOID_RUN, run["id"], caller_name(), why)
        await audit.record(
            conn,
            "void",
            "production_run",
            run_code,
            reason=why,
            edges=[[e["id"], e["parent"], e["child"]] for e in edges],
        )
    return affected


# --- edges ------------------------------------------------------------------------------

_EDGE_COLUMNS = """
e.id, p.lot_code AS parent, c.lot_code AS child, e.quantity::float8 AS quantity, e.uom,
COALESCE(r.run_code, '') AS run_code, e.created_at"""

_LIVE_EDGE = f"""
SELECT {_EDGE_COLUMNS}, NULL::text AS voided_by, NULL::timestamptz AS voided_at, NULL::text AS reason
FROM lot_genealogy e JOIN lots p ON p.id = e.parent_lot_id JOIN lots c ON c.id = e.child_lot_id
LEFT JOIN production_runs r ON r.id = e.run_id
WHERE e.id = $1
"""

_VOIDED_EDGE = f"""
SELECT {_EDGE_COLUMNS}, COALESCE(rv.voided_by, e.voided_by) AS voided_by,
       COALESCE(rv.voided_at, e.voided_at) AS voided_at, COALESCE(rv.reason, e.reason) AS reason
FROM voided_edges e JOIN lots p ON p.id = e.parent_lot_id JOIN lots c ON c.id = e.child_lot_id
LEFT JOIN production_runs r ON r.id = e.run_id LEFT JOIN run_voids rv ON rv.id = e.run_void_id
WHERE e.id = $1
"""

_VOID_EDGE = """
WITH d AS (DELETE FROM lot_genealogy WHERE id = $1 RETURNING *)
INSERT INTO voided_edges (id, parent_lot_id, child_lot_id, quantity, uom, run_id, created_at, voided_by, reason)
SELECT id, parent_lot_id, child_lot_id, quantity, uom, run_id, created_at, $2, $3 FROM d
"""


def edge_message(row: asyncpg.Record) -> genealogy_pb2.Edge:
    edge = genealogy_pb2.Edge(
        edge_id=row["id"],
        parent=row["parent"],
        child=row["child"],
        quantity=row["quantity"],
        uom=row["uom"],
        run_code=row["run_code"],
    )
    edge.created_at.FromDatetime(row["created_at"])
    if row["voided_by"] is not None:
        edge.voided.CopyFrom(_void(row["voided_by"], row["voided_at"], row["reason"]))
    return edge


async def get_edge(db: DB, edge_id: int) -> asyncpg.Record:
    row = await db.fetchrow(_LIVE_EDGE, edge_id) or await db.fetchrow(_VOIDED_EDGE, edge_id)
    if row is None:
        raise NotFound("EDGE_NOT_FOUND", f"edge {edge_id} does not exist", edge_id=edge_id)
    return row


async def void_edge(pool: asyncpg.Pool, edge_id: int, why: str) -> list[str]:
    """Void an edge recorded without a run; the lots whose cached answers changed."""
    async with pool.acquire() as conn, conn.transaction():
        edge = await conn.fetchrow(_LIVE_EDGE + " FOR UPDATE OF e", edge_id)
        if edge is None:
            voided = await get_edge(conn, edge_id)  # 404 when it never existed
            raise Conflict(
                "EDGE_ALREADY_VOIDED",
                f"edge {edge_id} was voided by {voided['voided_by']} at "
                f"{voided['voided_at']:%Y-%m-%d %H:%M:%S} UTC: {voided['reason']}",
                edge_id=edge_id,
                voided_by=voided["voided_by"],
            )
        if edge["run_code"]:
            raise Conflict(
                "EDGE_OF_RUN",
                f"edge {edge_id} was recorded by run {edge['run_code']}; void the run instead "
                f"(POST /api/production-runs/{edge['run_code']}/void)",
                edge_id=edge_id,
                run_code=edge["run_code"],
            )
        affected = await _affected(conn, [edge["child"]])
        await conn.execute(_VOID_EDGE, edge_id, caller_name(), why)
        await audit.record(
            conn,
            "void",
            "edge",
            str(edge_id),
            reason=why,
            parent=edge["parent"],
            child=edge["child"],
            quantity=edge["quantity"],
            uom=edge["uom"],
        )
    return affected


# --- lots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LotChange:
    quantity: float | None
    uom: str
    product: str


def lot_change(request: genealogy_pb2.CorrectLotRequest) -> LotChange:
    quantity = validation.quantity(request.quantity) if request.HasField("quantity") else None
    uom = validation.uom(request.uom) if request.uom else ""
    product = validation.text(request.product, "product").strip() if request.product else ""
    return LotChange(quantity, uom, product)


_LOT_FOR_UPDATE = """
SELECT id, lot_code, product, quantity::float8 AS quantity, uom FROM lots WHERE lot_code = $1 FOR UPDATE
"""
# Asked after the lock (a new snapshot), so a void that committed while we waited is seen.
_PRODUCED_BY_VOIDED_RUN = """
SELECT EXISTS (SELECT 1 FROM voided_edges WHERE child_lot_id = $1 AND run_void_id IS NOT NULL)
   AND NOT EXISTS (SELECT 1 FROM lot_genealogy WHERE child_lot_id = $1)
"""

_CORRECT = """
WITH u AS (UPDATE lots SET quantity = $2, uom = $3, product = $4 WHERE id = $1)
INSERT INTO lot_corrections
    (lot_id, quantity_before, quantity_after, uom_before, uom_after, product_before, product_after,
     corrected_by, reason)
VALUES ($1, $5, $2, $6, $3, $7, $4, $8, $9)
RETURNING id
"""

CORRECTIONS = """
SELECT k.id, l.lot_code, k.quantity_before::float8 AS quantity_before, k.quantity_after::float8 AS quantity_after,
       k.uom_before, k.uom_after, k.product_before, k.product_after, k.corrected_by, k.corrected_at, k.reason
FROM lot_corrections k JOIN lots l ON l.id = k.lot_id
"""


def correction_message(row: asyncpg.Record) -> genealogy_pb2.LotCorrection:
    message = genealogy_pb2.LotCorrection(
        **{k: row[k] for k in genealogy_pb2.LotCorrection.DESCRIPTOR.fields_by_name if k != "corrected_at"}
    )
    message.corrected_at.FromDatetime(row["corrected_at"])
    return message


async def correct_lot(
    pool: asyncpg.Pool, lot_code: str, change: LotChange, why: str
) -> tuple[genealogy_pb2.LotCorrection, list[str]]:
    """Correct the lot (locked as a run locks its inputs, so no run consumes it meanwhile);
    refused (409) below what its children consumed or in a unit their quantities do not
    convert to. Returns the correction and the lots whose cached answers changed."""
    async with pool.acquire() as conn, conn.transaction():
        lot = await conn.fetchrow(_LOT_FOR_UPDATE, lot_code)
        if lot is None:
            raise NotFound("LOT_NOT_FOUND", f"lot {lot_code} does not exist", lot_code=lot_code)
        if await conn.fetchval(_PRODUCED_BY_VOIDED_RUN, lot["id"]):
            raise Conflict(
                "LOT_VOIDED", f"lot {lot_code} was produced by a voided run; it cannot be corrected",
                lot_code=lot_code,
            )  # fmt: skip
        quantity = lot["quantity"] if change.quantity is None else change.quantity
        uom = change.uom or lot["uom"]
        product = change.product or lot["product"]
        if (quantity, uom, product) == (lot["quantity"], lot["uom"], lot["product"]):
            # 409, not 400: whether a correction changes anything depends on the lot as it is.
            raise Conflict(
                "NOTHING_TO_CORRECT",
                f"lot {lot_code} already has quantity {quantity:g} {uom} and product {product!r}; "
                "give a quantity, uom or product that differs",
                lot_code=lot_code,
            )
        consumers = await conn.fetch(_CONSUMERS, [lot["id"]])
        shipped = await conn.fetch(_SHIPPED, [lot["id"]])
        used = await conn.fetch(_USED, lot["id"])
        by = [*_consumer_names(consumers), *(f"shipment {r['id']}" for r in shipped)]
        _check_consumed(lot_code, quantity, uom, used, by)
        affected = await _affected(conn, [lot_code])
        correction_id = await conn.fetchval(
            _CORRECT,
            lot["id"],
            quantity,
            uom,
            product,
            lot["quantity"],
            lot["uom"],
            lot["product"],
            caller_name(),
            why,
        )
        await audit.record(
            conn,
            "correct",
            "lot",
            lot_code,
            reason=why,
            before={"quantity": lot["quantity"], "uom": lot["uom"], "product": lot["product"]},
            after={"quantity": quantity, "uom": uom, "product": product},
        )
        row = await conn.fetchrow(CORRECTIONS + " WHERE k.id = $1", correction_id)
    assert row is not None
    return correction_message(row), affected


def _check_consumed(
    lot_code: str, quantity: float, uom: str, used: list[asyncpg.Record], by: list[str]
) -> None:
    consumed = 0.0
    for row in used:
        converted = to_unit(row["quantity"], row["uom"], uom)
        if converted is None:
            raise Conflict(
                "UOM_MISMATCH",
                f"lot {lot_code} cannot be counted in {uom}: {', '.join(by)} consumed "
                f"{row['quantity']:g} {row['uom']} of it, which does not convert",
                lot_code=lot_code,
                uom=uom,
            )
        consumed += converted
    if quantity < consumed - EPSILON:
        raise Conflict(
            "QUANTITY_BELOW_CONSUMED",
            f"lot {lot_code} cannot be {quantity:g} {uom}: {', '.join(by)} already consumed "
            f"{consumed:g} {uom} of it",
            lot_code=lot_code,
            consumed=f"{consumed:g}",
            requested=f"{quantity:g}",
            uom=uom,
            consumed_by=",".join(by),
        )
