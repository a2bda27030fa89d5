"""A drill's accounting for the whole root lot (the mock-recall report BRC, SQF and FSMA 204
audits ask for), from a recall and the share rule (services.genealogy.recall).

In the root's unit (kg for mass units), every figure being root material:

    basis      = what the root holds: the larger of its quantity and its recorded inputs
    in stock   = basis - what its children took (never below 0), left in the root
    downstream = share x (quantity - what its children took), left in the lots in between
    end lots   = share x quantity, in the lots nothing consumed further
    unaccounted = basis - in stock - downstream - end lots   (>= 0 by the share rule)

A lot whose quantity does not convert into the unit of its inputs (an FG counted in ea made
from kg) counts what went into it. What the unaccounted part went to: the yield losses of
the lots in between (share x (inputs - quantity)); yield gains dilute and lose nothing, and
overconsumed lots pass on only what they held; both are listed. The verdict compares
|unaccounted| with tolerance x basis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowviz.core.units import to_unit
from services.genealogy.recall import RecallResult

YIELD_LOSS = "YIELD_LOSS"
YIELD_GAIN = "YIELD_GAIN"
OVERCONSUMED = "OVERCONSUMED"
MAX_RUNS = 100  # runs listed, largest root loss first; the rest are counted


@dataclass(frozen=True, slots=True)
class Child:
    lot_code: str
    quantity: float  # what the root's edges into it recorded, in the drill's unit
    root_quantity: float  # the root material those edges carried (less when the root is overconsumed)


@dataclass(frozen=True, slots=True)
class Run:
    run_code: str  # the run(s) whose edges made the lot, comma separated; "" for edges without one
    lot_code: str
    flag: str  # YIELD_LOSS, YIELD_GAIN or OVERCONSUMED
    inputs: float  # the lot's recorded inputs, in unit[lot]
    quantity: float  # the lot's quantity, in the same unit
    outputs: float  # what its children took, in the same unit
    root_lost: float  # root material lost there, in the drill's unit


@dataclass(frozen=True, slots=True)
class Accountability:
    unit: str
    root_quantity: float  # the root's own quantity, in unit
    basis: float
    children: list[Child]
    in_stock: float
    downstream: float
    end_lots: float
    end_lot_count: int
    unaccounted: float
    unaccounted_percent: float
    explained_by_losses: float
    runs: list[Run]
    runs_not_listed: int
    lots_not_in_unit: int  # lots left out of the figures (units that do not convert)
    tolerance: float
    within_tolerance: bool
    truncated: bool  # a limit cut the recall: lots beyond it are missing from the figures
    trace_ms: float = 0.0
    cycles: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Holding:
    root: float  # root material the lot holds (share x quantity), in unit[lot]
    left: float  # of it, what the lot did not pass on (share x (quantity - outputs), >= 0)
    end: bool  # nothing in the recall consumed it


def holdings(result: RecallResult) -> dict[int, Holding]:
    """Per lot of the recall with a known share, what it holds of the root, in unit[lot]."""
    flows, shares = result.propagation.flows, result.propagation.shares
    found: dict[int, Holding] = {}
    for lot_id, node in result.walk.nodes.items():
        share = shares.get(lot_id)
        if share is None or lot_id not in flows.unit:
            continue
        own = _own(node.quantity, node.uom, flows.unit[lot_id], flows.held[lot_id])
        given = flows.out.get(lot_id)
        end = lot_id not in flows.out
        left = share * max(0.0, own - (given or 0.0)) if given is not None or end else 0.0
        found[lot_id] = Holding(share * own, left, end)
    return found


def _own(quantity: float, uom: str, unit: str, held: float) -> float:
    converted = to_unit(quantity, uom, unit)
    return held if converted is None else converted


def account(result: RecallResult, tolerance: float, trace_ms: float = 0.0) -> Accountability | None:
    """The drill's accounting of `result`'s root; None when the root's unit is unknown."""
    flows = result.propagation.flows
    walk = result.walk
    root = walk.root.lot_id
    unit = flows.unit.get(root)
    if unit is None:
        return None
    basis = flows.held[root]
    root_quantity = _own(walk.root.quantity, walk.root.uom, unit, basis)
    held = holdings(result)
    out_root = flows.out.get(root) or 0.0
    in_stock = max(0.0, root_quantity - out_root)
    downstream = end_lots = 0.0
    end_count = not_in_unit = 0
    for lot_id in walk.nodes:
        if lot_id == root:
            continue
        h = held.get(lot_id)
        if h is None or flows.unit[lot_id] != unit:
            not_in_unit += 1
        elif h.end:
            end_lots += h.root
            end_count += 1
        else:
            downstream += h.left
    skipped = result.propagation.skipped
    taken: dict[int, float] = {}
    for e in walk.edges:
        if e.parent == root and (e.parent, e.child) not in skipped:
            q = to_unit(e.quantity, e.uom, unit)
            taken[e.child] = taken.get(e.child, 0.0) + (q or 0.0)
    scale = basis / out_root if out_root > basis else 1.0
    codes = {i: n.lot_code for i, n in walk.nodes.items()}
    children = sorted((Child(codes[c], q, q * scale) for c, q in taken.items()), key=lambda c: c.lot_code)
    runs = _runs(result, tolerance)
    listed = sorted(runs, key=lambda r: (-r.root_lost, r.lot_code))[:MAX_RUNS]
    unaccounted = basis - in_stock - downstream - end_lots
    return Accountability(
        unit=unit,
        root_quantity=root_quantity,
        basis=basis,
        children=children,
        in_stock=in_stock,
        downstream=downstream,
        end_lots=end_lots,
        end_lot_count=end_count,
        unaccounted=unaccounted,
        unaccounted_percent=100.0 * unaccounted / basis if basis > 0 else 0.0,
        explained_by_losses=sum(r.root_lost for r in runs if r.flag == YIELD_LOSS),
        runs=listed,
        runs_not_listed=len(runs) - len(listed),
        lots_not_in_unit=not_in_unit,
        tolerance=tolerance,
        within_tolerance=abs(unaccounted) <= tolerance * basis + 1e-9,
        truncated=result.truncated,
        trace_ms=trace_ms,
        cycles=result.cycles,
    )


def _runs(result: RecallResult, tolerance: float) -> list[Run]:
    """The lots below the root that lost anything, gained or were overconsumed beyond tolerance."""
    flows, shares = result.propagation.flows, result.propagation.shares
    walk, skipped = result.walk, result.propagation.skipped
    root = walk.root.lot_id
    run_codes: dict[int, set[str]] = {}
    inputs: dict[int, float] = {}  # inside and outside the walk, in unit[lot]
    for e in walk.edges:
        if (e.parent, e.child) not in skipped and e.child in flows.unit:
            run_codes.setdefault(e.child, set()).add(e.run_code)
            inputs[e.child] = inputs.get(e.child, 0.0) + (
                to_unit(e.quantity, e.uom, flows.unit[e.child]) or 0.0
            )
    for child, extra in walk.outside_inputs.items():
        if child in flows.unit:
            inputs[child] = inputs.get(child, 0.0) + sum(
                to_unit(q, u, flows.unit[child]) or 0.0 for q, u in extra
            )
    found: list[Run] = []
    for lot_id, node in walk.nodes.items():
        share = shares.get(lot_id)
        unit = flows.unit.get(lot_id)
        if lot_id == root or share is None or unit is None or lot_id not in inputs:
            continue
        held, given = flows.held[lot_id], flows.out.get(lot_id) or 0.0
        own = to_unit(node.quantity, node.uom, unit)
        flag, lost = "", 0.0
        if own is not None and held > own:
            flag, lost = YIELD_LOSS, share * (held - own)
        elif own is not None and own > inputs[lot_id] * (1 + tolerance) + 1e-9:
            flag = YIELD_GAIN
        elif given > held * (1 + tolerance) + 1e-9:
            flag = OVERCONSUMED
        if flag:
            found.append(
                Run(
                    run_code=",".join(sorted(run_codes.get(lot_id, {""}))),
                    lot_code=node.lot_code,
                    flag=flag,
                    inputs=inputs[lot_id],
                    quantity=node.quantity if own is None else own,
                    outputs=given,
                    root_lost=lost,
                )
            )
    return found
