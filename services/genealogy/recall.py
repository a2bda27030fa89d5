"""Recall (what a lot went into, and how much of it) and composition (what a lot is made of).

Shares follow proportional mixing: a child made of 30 kg beef and 10 kg spice is 75 % beef,
and a lot's share of the root flows on to its children in proportion to what they took:

    share(child) = sum over parents p of share(p) * qty(p -> child) / total_input(child)

where total_input counts ALL incoming edges of the child, including those from lots outside
the walk. Quantities convert to kg via MASS_UNITS; a child whose inputs are not all mass
units is summed in their one shared unit (10 ea of A + 30 ea of B -> 25 % A); inputs in
units that do not convert into each other (kg with ea, l with ml) give an unknown share
(None), and everything it feeds is unknown too.

Cycles are data errors: the edge closing each one (a back edge of a depth-first search from
the root) is left out of the propagation, numerator and denominator, and reported.
The propagation is pure (Kahn's topological order over the remaining DAG); the fetch is
trace.py's one statement.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flowviz.core.validation import MASS_UNITS
from services.genealogy.trace import (
    DB,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_NODES,
    TraceEdge,
    TraceNode,
    Walk,
    back_edges,
    fetch_walk,
    find_cycles,
    trace_edges,
)

KG = "kg"


@dataclass(frozen=True, slots=True)
class RecallLot:
    lot_id: int
    lot_code: str
    kind: str
    product: str
    quantity: float
    uom: str
    status: str
    produced_at: datetime | None
    depth: int  # shortest distance from the root (the root itself is 0)
    path_count: int  # distinct lot paths from the root (may be large in dense DAGs)
    root_share: float | None  # fraction of this lot that is root material; None: unknown units
    root_quantity: float | None  # root_share * quantity, in this lot's uom


@dataclass(frozen=True, slots=True)
class KindTotal:
    kind: str
    lots: int
    quantity_kg: float  # summed lot quantities, mass units only
    root_quantity_kg: float  # root material they contain, mass units and known shares only
    lots_not_in_kg: int  # lots left out of quantity_kg (counted in ea, l, ...)


@dataclass(frozen=True, slots=True)
class RecallResult:
    root: RecallLot
    lots: list[RecallLot]  # the root (depth 0) and every lot downstream of it, by depth
    edges: list[TraceEdge]
    totals: list[KindTotal]  # per kind, the root's own lot included
    truncated: bool
    cycles: list[list[str]]


@dataclass(frozen=True, slots=True)
class CompositionLot:
    lot_id: int
    lot_code: str
    kind: str
    product: str
    quantity: float
    uom: str
    status: str
    produced_at: datetime | None
    depth: int  # shortest distance up from the root (the root itself is 0)
    path_count: int  # distinct lot paths from this lot down to the root
    share: float | None  # fraction of the root made of this lot; None: unknown units
    quantity_in_root: float | None  # share * the root's quantity, in the root's uom
    is_source: bool  # no parents at all: a raw or supplier lot


@dataclass(frozen=True, slots=True)
class CompositionResult:
    root: CompositionLot
    lots: list[CompositionLot]  # the root (depth 0) and every lot upstream of it, by depth
    edges: list[TraceEdge]
    # Sum of the sources' shares: ~1 when every input is known and in convertible units;
    # None when some share is unknown.
    sources_share: float | None
    truncated: bool
    cycles: list[list[str]]


# --- pure propagation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flow:
    """quantity of `parent` consumed into `child` (one genealogy edge)."""

    parent: int
    child: int
    quantity: float
    uom: str


@dataclass(frozen=True, slots=True)
class Propagation:
    shares: dict[int, float | None]
    paths: dict[int, int]
    order: list[int]  # topological order in walk direction, root first
    skipped: set[tuple[int, int]]  # (parent, child) edges left out because they close a cycle


def to_kg(quantity: float, uom: str) -> float | None:
    factor = MASS_UNITS.get(uom)
    return None if factor is None else quantity * factor


def common_unit(uoms: Iterable[str]) -> str | None:
    """kg when every unit is a mass unit, else the one unit they all share, else None."""
    units = set(uoms)
    if units <= MASS_UNITS.keys():
        return KG
    return units.pop() if len(units) == 1 else None


def convert(quantity: float, uom: str, unit: str) -> float:
    """quantity in `unit`, which common_unit chose (kg for mass units, else uom itself)."""
    return quantity * MASS_UNITS[uom] if unit == KG else quantity


def input_fractions(
    flows: Iterable[Flow],
    outside: Mapping[int, Sequence[tuple[float, str]]] = {},  # read only
    *,
    skip: Collection[tuple[int, int]] = (),
) -> dict[tuple[int, int], float | None]:
    """Per (parent, child): the fraction of the child's total input the parent supplied.

    Parallel edges (same lots, different runs) are summed. `outside` adds a child's inputs
    from parents not in `flows`; edges in `skip` count nowhere. None: units do not convert.
    """
    into: dict[int, list[Flow]] = {}
    for f in flows:
        if (f.parent, f.child) not in skip:
            into.setdefault(f.child, []).append(f)
    fractions: dict[tuple[int, int], float | None] = {}
    for child, inputs in into.items():
        extra = outside.get(child, ())
        unit = common_unit([f.uom for f in inputs] + [u for _, u in extra])
        if unit is None:
            for f in inputs:
                fractions[f.parent, child] = None
            continue
        total = sum(convert(f.quantity, f.uom, unit) for f in inputs)
        total += sum(convert(q, u, unit) for q, u in extra)
        for f in inputs:
            key = (f.parent, child)
            fractions[key] = (fractions.get(key) or 0.0) + convert(f.quantity, f.uom, unit) / total
    return fractions


def propagate(
    root: int,
    flows: Sequence[Flow],
    outside: Mapping[int, Sequence[tuple[float, str]]] = {},  # read only
    *,
    upstream: bool = False,
    skip: Collection[tuple[int, int]] | None = None,
) -> Propagation:
    """Root shares and path counts of every lot reachable from `root`.

    Downstream the walk follows parent -> child: share(child) = sum share(parent) * fraction.
    Upstream it follows child -> parent: share(parent) = sum share(child) * fraction, i.e. how
    much of the root is made of the parent. `skip` (parent, child) edges are ignored; by
    default the back edges of a depth-first search from the root, which breaks every cycle.
    """
    pairs = sorted({(f.parent, f.child) for f in flows})
    succ: dict[int, list[int]] = {}
    for parent, child in pairs:
        a, b = (child, parent) if upstream else (parent, child)
        succ.setdefault(a, []).append(b)
    if skip is None:
        backs = back_edges([root], succ)
        skip = {(b, a) if upstream else (a, b) for a, b in backs}
    skipped = set(skip)
    fractions = input_fractions(flows, outside, skip=skipped)

    # Kahn's algorithm over the walk-direction DAG left once the cycle edges are gone.
    indegree: dict[int, int] = {root: 0}
    dag: dict[int, list[int]] = {}
    for parent, child in pairs:
        if (parent, child) in skipped:
            continue
        a, b = (child, parent) if upstream else (parent, child)
        dag.setdefault(a, []).append(b)
        indegree[b] = indegree.get(b, 0) + 1
        indegree.setdefault(a, 0)
    shares: dict[int, float | None] = dict.fromkeys(indegree, 0.0)
    paths = dict.fromkeys(indegree, 0)
    shares[root], paths[root] = 1.0, 1
    ready = deque(n for n, d in indegree.items() if d == 0)
    order: list[int] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        share, count = shares[node], paths[node]
        for nxt in dag.get(node, ()):
            fraction = fractions[(nxt, node) if upstream else (node, nxt)]
            current = shares[nxt]
            if share is None or fraction is None or current is None:
                shares[nxt] = None
            else:
                shares[nxt] = current + share * fraction
            paths[nxt] += count
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return Propagation(shares=shares, paths=paths, order=order, skipped=skipped)


# --- recall and composition -----------------------------------------------------------


def _flows(walk: Walk) -> list[Flow]:
    return [Flow(e.parent_id, e.child_id, e.quantity, e.uom) for e in walk.edges]


def _analyse(walk: Walk, *, upstream: bool) -> tuple[Propagation, list[list[str]]]:
    codes = {i: n.lot_code for i, n in walk.nodes.items()}
    flows = _flows(walk)
    backs, cycles = find_cycles(
        list(walk.nodes), ((f.parent, f.child) for f in flows), codes, reverse=upstream
    )
    prop = propagate(walk.root.lot_id, flows, walk.outside_inputs, upstream=upstream, skip=backs)
    return prop, cycles


def _recall_lot(node: TraceNode, share: float | None, paths: int) -> RecallLot:
    return RecallLot(
        lot_id=node.lot_id,
        lot_code=node.lot_code,
        kind=node.kind,
        product=node.product,
        quantity=node.quantity,
        uom=node.uom,
        status=node.status,
        produced_at=node.produced_at,
        depth=node.depth,
        path_count=paths,
        root_share=share,
        root_quantity=None if share is None else share * node.quantity,
    )


def kind_totals(lots: Iterable[RecallLot]) -> list[KindTotal]:
    acc: dict[str, list[float]] = {}  # kind -> [lots, kg, root kg, not in kg]
    for lot in lots:
        t = acc.setdefault(lot.kind, [0, 0.0, 0.0, 0])
        t[0] += 1
        kg = to_kg(lot.quantity, lot.uom)
        if kg is None:
            t[3] += 1
            continue
        t[1] += kg
        if lot.root_share is not None:
            t[2] += lot.root_share * kg
    return [KindTotal(k, int(t[0]), t[1], t[2], int(t[3])) for k, t in sorted(acc.items())]


async def recall(
    db: DB,
    lot_code: str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> RecallResult | None:
    """Every lot downstream of `lot_code` with how much of it is root material; None if unknown."""
    walk = await fetch_walk(
        db, lot_code, direction="downstream", max_depth=max_depth, max_nodes=max_nodes, with_inputs=True
    )
    if walk is None:
        return None
    prop, cycles = _analyse(walk, upstream=False)
    lots = [_recall_lot(n, prop.shares.get(i, 0.0), prop.paths.get(i, 0)) for i, n in walk.nodes.items()]
    return RecallResult(
        root=lots[0],
        lots=lots,
        edges=trace_edges(walk),
        totals=kind_totals(lots),
        truncated=walk.truncated,
        cycles=cycles,
    )


async def composition(
    db: DB,
    lot_code: str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> CompositionResult | None:
    """Every lot upstream of `lot_code` with the share of it that lot makes up; None if unknown."""
    walk = await fetch_walk(
        db, lot_code, direction="upstream", max_depth=max_depth, max_nodes=max_nodes, with_inputs=True
    )
    if walk is None:
        return None
    prop, cycles = _analyse(walk, upstream=True)
    has_parents = {e.child_id for e in walk.edges} | walk.outside_inputs.keys()
    root_qty = walk.root.quantity
    lots: list[CompositionLot] = []
    for i, n in walk.nodes.items():
        share = prop.shares.get(i, 0.0)
        lots.append(
            CompositionLot(
                lot_id=n.lot_id,
                lot_code=n.lot_code,
                kind=n.kind,
                product=n.product,
                quantity=n.quantity,
                uom=n.uom,
                status=n.status,
                produced_at=n.produced_at,
                depth=n.depth,
                path_count=prop.paths.get(i, 0),
                share=share,
                quantity_in_root=None if share is None else share * root_qty,
                is_source=i not in has_parents,
            )
        )
    source_shares = [lot.share for lot in lots if lot.is_source]
    sources_share = None if None in source_shares else sum(s for s in source_shares if s is not None)
    return CompositionResult(
        root=lots[0],
        lots=lots,
        edges=trace_edges(walk),
        sources_share=sources_share,
        truncated=walk.truncated,
        cycles=cycles,
    )
