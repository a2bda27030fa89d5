"""Mass balance of a lot (what went in, what it holds, what its children took) and of a run.

All figures of one balance are put in one unit: kg when every quantity involved is a mass
unit (MASS_UNITS), else the one unit they all share; when they mix units that do not
convert (kg with ea) the figures are None and the flag UNITS_MIXED says why, rather than
a wrong number. Tolerance is a fraction (0.02 = 2 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowviz.core.errors import InvalidArgument
from flowviz.core.units import common_unit, in_unit
from services.genealogy.trace import DB

DEFAULT_TOLERANCE = 0.02

# Children consumed more than the lot held (beyond tolerance): a data error to show users.
OVERCONSUMED = "OVERCONSUMED"
# More came out than went in (beyond tolerance).
YIELD_GAIN = "YIELD_GAIN"
# The quantities involved do not convert into one unit; no figures are given.
UNITS_MIXED = "UNITS_MIXED"
# A run output also has inputs from another run, so its quantity is not this run's alone.
OUTPUT_MULTI_RUN = "OUTPUT_MULTI_RUN"
# A historical import loaded an edge of this lot that broke a production-run rule (the rows are
# in import_overrides and audit_log): its figures hold data the rules would have refused.
HISTORICAL_IMPORT = "HISTORICAL_IMPORT"


@dataclass(frozen=True, slots=True)
class LotBalance:
    lot_code: str
    kind: str
    lot_quantity: float  # as recorded, in lot_uom
    lot_uom: str
    unit: str  # unit of every figure below; "" when UNITS_MIXED
    quantity: float | None
    inputs: float | None  # sum of incoming edges (what was consumed into the lot)
    consumed_by_children: float | None  # sum of outgoing edges
    remaining: float | None  # quantity - consumed_by_children - shipped
    input_vs_output_diff: float | None  # inputs - quantity; None for a lot without parents
    input_edges: int
    output_edges: int
    tolerance: float
    flags: list[str]
    shipped: float | None = None  # sum of its shipments
    shipments: int = 0


@dataclass(frozen=True, slots=True)
class RunLine:
    lot_code: str
    kind: str
    quantity: float  # inputs: consumed by the run; outputs: the lot's own quantity
    uom: str


@dataclass(frozen=True, slots=True)
class RunBalance:
    run_code: str
    inputs: list[RunLine]  # one line per parent lot (and edge unit)
    outputs: list[RunLine]  # each lot created by the run's edges, once
    unit: str  # "" when UNITS_MIXED
    total_input: float | None
    total_output: float | None
    input_vs_output_diff: float | None  # total_input - total_output (> 0: loss)
    tolerance: float
    flags: list[str]


def check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and 0 <= tolerance <= 1):
        raise InvalidArgument(
            "TOLERANCE_INVALID", "tolerance must be a fraction from 0 to 1", field="tolerance"
        )


def _exceeds(value: float, limit: float, tolerance: float) -> bool:
    """value > limit by more than tolerance * limit (any positive value exceeds a zero limit)."""
    return value > limit * (1 + tolerance) + 1e-9


_LOT_SQL = """
WITH l AS (SELECT id, lot_code, kind, quantity, uom FROM lots WHERE lot_code = $1)
SELECT 'l' AS rel, l.lot_code, l.kind, l.quantity::float8 AS quantity, l.uom, 1::bigint AS n,
       EXISTS (SELECT 1 FROM import_overrides o WHERE o.lot_id = l.id) AS historical
FROM l
UNION ALL
SELECT 'i', NULL, NULL, sum(e.quantity)::float8, e.uom, count(*), false
FROM l JOIN lot_genealogy e ON e.child_lot_id = l.id GROUP BY e.uom
UNION ALL
SELECT 'o', NULL, NULL, sum(e.quantity)::float8, e.uom, count(*), false
FROM l JOIN lot_genealogy e ON e.parent_lot_id = l.id GROUP BY e.uom
UNION ALL
SELECT 's', NULL, NULL, sum(s.quantity)::float8, s.uom, count(*), false
FROM l JOIN shipments s ON s.lot_id = l.id GROUP BY s.uom
"""


async def lot_balance(db: DB, lot_code: str, tolerance: float = DEFAULT_TOLERANCE) -> LotBalance | None:
    """The lot's mass balance; None when the lot does not exist."""
    check_tolerance(tolerance)
    rows = await db.fetch(_LOT_SQL, lot_code)
    lot = next((r for r in rows if r["rel"] == "l"), None)
    if lot is None:
        return None
    ins = [(r["quantity"], r["uom"], r["n"]) for r in rows if r["rel"] == "i"]
    outs = [(r["quantity"], r["uom"], r["n"]) for r in rows if r["rel"] == "o"]
    sent = [(r["quantity"], r["uom"], r["n"]) for r in rows if r["rel"] == "s"]
    input_edges = sum(n for _, _, n in ins)
    output_edges = sum(n for _, _, n in outs)
    unit = common_unit(
        [lot["uom"], *(u for _, u, _ in ins), *(u for _, u, _ in outs), *(u for _, u, _ in sent)]
    )
    flags: list[str] = []
    quantity = inputs = consumed = shipped = remaining = diff = None
    if unit is None:
        flags.append(UNITS_MIXED)
    else:
        quantity = in_unit(lot["quantity"], lot["uom"], unit)
        inputs = sum(in_unit(q, u, unit) for q, u, _ in ins)
        consumed = sum(in_unit(q, u, unit) for q, u, _ in outs)
        shipped = sum(in_unit(q, u, unit) for q, u, _ in sent)
        remaining = quantity - consumed - shipped
        if input_edges:
            diff = inputs - quantity
            if _exceeds(quantity, inputs, tolerance):
                flags.append(YIELD_GAIN)
        if _exceeds(consumed + shipped, quantity, tolerance):
            flags.append(OVERCONSUMED)
    if lot["historical"]:
        flags.append(HISTORICAL_IMPORT)
    return LotBalance(
        lot_code=lot["lot_code"],
        kind=lot["kind"],
        lot_quantity=lot["quantity"],
        lot_uom=lot["uom"],
        unit=unit or "",
        quantity=quantity,
        inputs=inputs,
        consumed_by_children=consumed,
        remaining=remaining,
        input_vs_output_diff=diff,
        input_edges=input_edges,
        output_edges=output_edges,
        tolerance=tolerance,
        flags=flags,
        shipped=shipped,
        shipments=sum(n for _, _, n in sent),
    )


# lot_genealogy has no index on run_id: a run balance scans the table (see the report).
_RUN_SQL = """
WITH r AS (SELECT id, run_code FROM production_runs WHERE run_code = $1),
e AS (SELECT g.parent_lot_id, g.child_lot_id, g.quantity, g.uom
      FROM r JOIN lot_genealogy g ON g.run_id = r.id
      UNION ALL  -- a voided run's edges, as they were (a run's edges are voided all together)
      SELECT v.parent_lot_id, v.child_lot_id, v.quantity, v.uom
      FROM r JOIN voided_edges v ON v.run_id = r.id)
SELECT 'r' AS rel, r.run_code AS lot_code, NULL AS kind, NULL::float8 AS quantity, NULL AS uom,
       false AS shared
FROM r
UNION ALL
SELECT 'i', p.lot_code, p.kind, sum(e.quantity)::float8, e.uom, false
FROM e JOIN lots p ON p.id = e.parent_lot_id
GROUP BY p.lot_code, p.kind, e.uom
UNION ALL
SELECT 'o', c.lot_code, c.kind, c.quantity::float8, c.uom,
       EXISTS (SELECT 1 FROM r, lot_genealogy o
               WHERE o.child_lot_id = c.id AND o.run_id IS DISTINCT FROM r.id)
FROM lots c WHERE c.id IN (SELECT child_lot_id FROM e)
"""


async def run_balance(db: DB, run_code: str, tolerance: float = DEFAULT_TOLERANCE) -> RunBalance | None:
    """Inputs against outputs of one production run; None when the run does not exist."""
    check_tolerance(tolerance)
    rows = await db.fetch(_RUN_SQL, run_code)
    if not any(r["rel"] == "r" for r in rows):
        return None
    inputs = [RunLine(r["lot_code"], r["kind"], r["quantity"], r["uom"]) for r in rows if r["rel"] == "i"]
    out_rows = [r for r in rows if r["rel"] == "o"]
    outputs = [RunLine(r["lot_code"], r["kind"], r["quantity"], r["uom"]) for r in out_rows]
    return summarize_run(run_code, inputs, outputs, any(r["shared"] for r in out_rows), tolerance)


def summarize_run(
    run_code: str,
    inputs: list[RunLine],
    outputs: list[RunLine],
    shared_output: bool,
    tolerance: float = DEFAULT_TOLERANCE,
) -> RunBalance:
    """The balance of a run from its lines (inputs: edge quantities summed per lot and unit;
    outputs: the lots' own quantities); `shared_output` when an output has another run's inputs."""
    inputs = sorted(inputs, key=lambda line: (line.lot_code, line.uom))
    outputs = sorted(outputs, key=lambda line: line.lot_code)
    flags: list[str] = []
    unit = common_unit(line.uom for line in [*inputs, *outputs])
    total_in = total_out = diff = None
    if unit is None:
        flags.append(UNITS_MIXED)
    else:
        total_in = sum(in_unit(line.quantity, line.uom, unit) for line in inputs)
        total_out = sum(in_unit(line.quantity, line.uom, unit) for line in outputs)
        diff = total_in - total_out
        if inputs and _exceeds(total_out, total_in, tolerance):
            flags.append(YIELD_GAIN)
    if shared_output:
        flags.append(OUTPUT_MULTI_RUN)
    return RunBalance(
        run_code=run_code,
        inputs=inputs,
        outputs=outputs,
        unit=unit or "",
        total_input=total_in,
        total_output=total_out,
        input_vs_output_diff=diff,
        tolerance=tolerance,
        flags=flags,
    )
