"""Recall (what a lot went into, and how much of it) and composition (what a lot is made of).

The share rule (conservation of mass). A lot holds the larger of its own quantity and the sum
of its recorded inputs, in one unit: unrecorded ingredients (water) dilute, losses in
processing do not inflate. A lot whose children took more than it held passes on only what
it held: each outgoing edge carries held / (sum of its outgoing edges) of its quantity. So

    share(child) = sum over parents p of share(p) * scale(p) * qty(p -> child) / held(child)
    scale(p)     = min(1, held(p) / sum of p's outgoing edges)

with share(root) = 1. root_quantity = share x the lot's quantity never exceeds the lot, and
what the lots nothing consumed further hold of the root, plus what the others still hold
(share x what they did not pass on), never exceeds what left the root. Composition reads the
same fractions the other way: share(parent in root) = sum share(child) * fraction.

held counts ALL incoming edges of the child, including those from lots outside the walk.
Quantities convert via flowviz.core.units: kg for mass units, else one shared unit
(10 ea of A + 30 ea of B -> 25 % A); a lot whose quantity does not convert into the unit of
its inputs (an FG counted in ea made from kg) holds its inputs. Inputs in units that do not
convert into each other (kg with ea) give an unknown share (None), and everything it feeds
is unknown too.

Cycles are data errors: the edge closing each one (a back edge of a depth-first search from
the root) is left out of the propagation, everywhere, and reported. The propagation is pure
(Kahn's topological order over the remaining DAG); the fetch is trace.py's one statement.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from flowviz.core.units import KG, MASS_UNITS, common_unit, to_unit
from services.genealogy.trace import (
    DB,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_NODES,
    Edge,
    TraceEdge,
    TraceNode,
    Walk,
    back_edges,
    describe_cycles,
    fetch_walk,
    gc_paused,
    successors,
    trace_edges,
)

Inputs = Mapping[int, Sequence[tuple[float, str]]]  # child id -> [(quantity, uom)]


class Measured(Protocol):
    """A lot's own quantity (a TraceNode is one)."""

    @property
    def quantity(self) -> float: ...
    @property
    def uom(self) -> str: ...


Quantities = Mapping[int, Measured]  # lot id -> the lot


@dataclass(frozen=True, slots=True)
class RecallLot:
    lot: TraceNode  # the lot, its status and depth (shortest distance from the root)
    path_count: int  # distinct lot paths from the root (grows fast in dense DAGs)
    root_share: float | None  # fraction of this lot that is root material; None: units unknown
    root_quantity: float | None  # root_share * lot.quantity, in lot.uom


@dataclass(frozen=True, slots=True)
class KindTotal:
    kind: str
    lots: int
    quantity_kg: float  # summed lot quantities, mass units only
    root_quantity_kg: float  # root material they contain, mass units and known shares only
    lots_not_in_kg: int  # lots left out of both kg sums (counted in ea, l, ...)


@dataclass(frozen=True, slots=True)
class RecallResult:
    root: RecallLot
    lots: list[RecallLot]  # the root (depth 0) and every lot downstream of it, by depth
    totals: list[KindTotal]  # per kind, the root's own lot included
    truncated: bool
    cycles: list[list[str]]
    walk: Walk  # what was fetched, and how it propagated (for the drill's accounting)
    propagation: Propagation

    @property
    def edges(self) -> list[TraceEdge]:
        """Every edge between two listed lots, sorted (made on demand: the recall answer has no
        edges, and a large walk's sorted list cost several percent of the recall)."""
        return trace_edges(self.walk)


@dataclass(frozen=True, slots=True)
class CompositionLot:
    lot: TraceNode  # the lot, its status and depth (shortest distance up from the root)
    path_count: int  # distinct lot paths from this lot down to the root
    share: float | None  # fraction of the root made of this lot; None: units unknown
    quantity_in_root: float | None  # share * the root's quantity, in the root's uom
    is_source: bool  # no parents at all: a raw or supplier lot


@dataclass(frozen=True, slots=True)
class CompositionResult:
    root: CompositionLot
    lots: list[CompositionLot]  # the root (depth 0) and every lot upstream of it, by depth
    edges: list[TraceEdge]
    # Sum of the sources' shares: ~1 when every input is recorded in convertible units
    # (less when a limit cut the walk); None when some share is unknown.
    sources_share: float | None
    truncated: bool
    cycles: list[list[str]]


# --- pure propagation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propagation:
    shares: dict[int, float | None]
    paths: dict[int, int]
    order: list[int]  # topological order in walk direction, root first
    skipped: set[tuple[int, int]]  # (parent, child) edges left out because they close a cycle
    flows: Flows


@dataclass(frozen=True, slots=True)
class Flows:
    """What each edge carries, by the share rule (see the module docstring)."""

    # (parent, child) -> scale(parent) * quantity / held(child); None: units do not convert.
    fractions: dict[tuple[int, int], float | None]
    # lot -> the larger of its quantity and its summed inputs, in unit[lot]; lots without
    # a unit (inputs that do not convert) are absent.
    held: dict[int, float]
    unit: dict[int, str]
    # lot -> the sum of its outgoing edges (those given), in unit[lot]; None: do not convert.
    out: dict[int, float | None]


def flows(
    edges: Iterable[Edge],
    outside: Inputs | None = None,
    quantities: Quantities | None = None,
    *,
    skip: Collection[tuple[int, int]] = (),
) -> Flows:
    """The share rule's figures for every edge and lot.

    Parallel edges (same lots, different runs) are summed. `outside` adds a child's inputs
    from parents not in `edges`; edges in `skip` count nowhere. `quantities` (lot -> its own
    quantity and uom); without them a lot holds just its inputs (plain proportional mixing).
    """
    outside = outside or {}
    quantities = quantities or {}
    mass = MASS_UNITS
    kept = [e for e in edges if (e.parent, e.child) not in skip] if skip else list(edges)
    # The usual case first, in flat loops: every edge in mass units -> kg, summed per child
    # (its inputs) and per parent (what it gave).
    total: dict[int, float] = {}
    given_kg: dict[int, float] = {}
    odd: set[int] = set()  # children with an input in a unit that is not a mass unit
    odd_out: set[int] = set()  # parents with such an output
    for e in kept:
        factor = mass.get(e.uom)
        if factor is None:
            odd.add(e.child)
            odd_out.add(e.parent)
        else:
            q = e.quantity * factor
            total[e.child] = total.get(e.child, 0.0) + q
            given_kg[e.parent] = given_kg.get(e.parent, 0.0) + q
    for child, extra in outside.items():
        for q, u in extra:
            factor = mass.get(u)
            if factor is None:
                odd.add(child)
            else:
                total[child] = total.get(child, 0.0) + q * factor
    unit: dict[int, str] = dict.fromkeys(total, KG)
    # The rest: one shared unit, summed as is; or units that do not convert (no unit).
    if odd:
        uoms = {c: [u for _, u in outside.get(c, ())] for c in odd}
        for c in odd:
            total[c] = sum(q for q, _ in outside.get(c, ()))
            unit.pop(c, None)
        for e in kept:
            if e.child in odd:
                uoms[e.child].append(e.uom)
                total[e.child] += e.quantity
        for c, units in uoms.items():
            shared = common_unit(units)
            if shared is None:
                del total[c]
            else:
                unit[c] = shared
    # What a lot holds: its own quantity, or more when more went in (a loss in processing).
    held = total
    for lot, measured in quantities.items():
        q, u = measured.quantity, measured.uom
        lot_unit, factor = unit.get(lot), mass.get(u)
        if lot_unit is None:
            if lot in odd:
                continue  # inputs that do not convert: nothing is known
            unit[lot] = u if factor is None else KG  # no inputs: the lot is what it holds
            held[lot] = q if factor is None else q * factor
        elif lot_unit == KG:
            if factor is not None and q * factor > held[lot]:
                held[lot] = q * factor  # a yield gain: unrecorded ingredients dilute the inputs
        elif u == lot_unit and q > held[lot]:
            held[lot] = q
    # What left each lot along the given edges, in its unit (None: does not convert).
    out: dict[int, float | None] = {p: q for p, q in given_kg.items() if unit.get(p) == KG}
    slow = odd_out | {p for p in given_kg if p not in out}
    if slow:
        for p in slow:
            out[p] = 0.0 if p in unit else None
        for e in kept:
            p = e.parent
            if p in slow and (sofar := out[p]) is not None:
                given = to_unit(e.quantity, e.uom, unit[p])
                out[p] = None if given is None else sofar + given
    # A lot whose children took more than it held passes on only what it held.
    scale: dict[int, float] = {}
    for p, total_out in out.items():
        if total_out is not None and p in held and total_out > held[p]:
            scale[p] = held[p] / total_out
    fractions: dict[tuple[int, int], float | None] = {}
    for e in kept:
        key = (e.parent, e.child)
        c_unit = unit.get(e.child)
        if c_unit is None:
            fractions[key] = None
            continue
        base = held[e.child]
        part = (e.quantity * mass[e.uom] if c_unit == KG else e.quantity) / base if base > 0 else 0.0
        if scale and e.parent in scale:
            part *= scale[e.parent]
        fractions[key] = (fractions.get(key) or 0.0) + part
    return Flows(fractions=fractions, held=held, unit=unit, out=out)


def input_fractions(
    edges: Iterable[Edge], outside: Inputs | None = None, *, skip: Collection[tuple[int, int]] = ()
) -> dict[tuple[int, int], float | None]:
    """Per (parent, child): the fraction of the child's total input the parent supplied."""
    return flows(edges, outside, skip=skip).fractions


def propagate(
    root: int,
    edges: Sequence[Edge],
    outside: Inputs | None = None,
    quantities: Quantities | None = None,
    *,
    upstream: bool = False,
    skip: Collection[tuple[int, int]] | None = None,
) -> Propagation:
    """Root shares and path counts of every lot reachable from `root`.

    Downstream the walk follows parent -> child: share(child) = sum share(parent) * fraction.
    Upstream it follows child -> parent: share(parent) = sum share(child) * fraction, i.e. how
    much of the root is made of the parent. `skip`: (parent, child) edges to ignore; by
    default the back edges of a depth-first search from the root, which breaks every cycle.
    """
    succ = successors(((e.parent, e.child) for e in edges), reverse=upstream)
    if skip is None:
        skip = {(v, u) if upstream else (u, v) for u, v in back_edges([root], succ)}
    skipped = set(skip)
    flow = flows(edges, outside, quantities, skip=skipped)
    fractions = flow.fractions

    # Kahn's algorithm over the walk-direction DAG left once the cycle edges are gone.
    dag: dict[int, list[tuple[int, float | None]]] = {}
    indegree: dict[int, int] = {root: 0}
    for a, nexts in succ.items():
        indegree.setdefault(a, 0)
        out = dag.setdefault(a, [])
        for b in nexts:
            pair = (b, a) if upstream else (a, b)
            if pair not in skipped:
                out.append((b, fractions[pair]))
                indegree[b] = indegree.get(b, 0) + 1
    shares: dict[int, float | None] = dict.fromkeys(indegree, 0.0)
    paths = dict.fromkeys(indegree, 0)
    shares[root], paths[root] = 1.0, 1
    ready = deque(n for n, d in indegree.items() if d == 0)
    order: list[int] = []
    while ready:
        node = ready.popleft()
        order.append(node)
        share, count = shares[node], paths[node]
        for nxt, fraction in dag.get(node, ()):
            current = shares[nxt]
            if share is None or fraction is None or current is None:
                shares[nxt] = None
            else:
                shares[nxt] = current + share * fraction
            paths[nxt] += count
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    # Lots not reachable from the root (other parents in `edges`) were walked with share 0.
    reached = [n for n in order if paths[n]]
    return Propagation(
        shares={n: shares[n] for n in reached},
        paths={n: paths[n] for n in reached},
        order=reached,
        skipped=skipped,
        flows=flow,
    )


def kind_totals(lots: Iterable[RecallLot]) -> list[KindTotal]:
    acc: dict[str, list[float]] = {}  # kind -> [lots, kg, root kg, not in kg]
    for r in lots:
        t = acc.setdefault(r.lot.kind, [0, 0.0, 0.0, 0])
        t[0] += 1
        kg = to_unit(r.lot.quantity, r.lot.uom, KG)
        if kg is None:
            t[3] += 1
            continue
        t[1] += kg
        if r.root_share is not None:
            t[2] += r.root_share * kg
    return [KindTotal(k, int(t[0]), t[1], t[2], int(t[3])) for k, t in sorted(acc.items())]


# --- recall and composition -----------------------------------------------------------


def _analyse(walk: Walk, *, upstream: bool) -> tuple[Propagation, list[list[str]]]:
    prop = propagate(walk.root.lot_id, walk.edges, walk.outside_inputs, walk.nodes, upstream=upstream)
    cycles: list[list[str]] = []
    if prop.skipped:
        codes = {i: n.lot_code for i, n in walk.nodes.items()}
        cycles = describe_cycles(prop.skipped, successors((e.parent, e.child) for e in walk.edges), codes)
    return prop, cycles


async def recall(
    db: DB,
    lot_code: str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> RecallResult | None:
    """Every lot downstream of `lot_code` with how much of it is root material; None if unknown.

    max_nodes counts the root too. When a limit cuts the walk (truncated), a kept lot that
    also has an input from a dropped lot counts that input in its total but not in its share.
    """
    walk = await fetch_walk(
        db, lot_code, direction="downstream", max_depth=max_depth, max_nodes=max_nodes, with_inputs=True
    )
    if walk is None:
        return None
    with gc_paused():
        return _recall_result(walk)


def _recall_result(walk: Walk) -> RecallResult:
    prop, cycles = _analyse(walk, upstream=False)
    shares, paths = prop.shares, prop.paths
    lots = []
    for i, node in walk.nodes.items():
        share = shares.get(i, 0.0)
        lots.append(RecallLot(node, paths.get(i, 0), share, None if share is None else share * node.quantity))
    return RecallResult(
        root=lots[0],
        lots=lots,
        totals=kind_totals(lots),
        truncated=walk.truncated,
        cycles=cycles,
        walk=walk,
        propagation=prop,
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
    with gc_paused():
        return _composition_result(walk)


def _composition_result(walk: Walk) -> CompositionResult:
    prop, cycles = _analyse(walk, upstream=True)
    has_parents = {e.child for e in walk.edges} | walk.outside_inputs.keys()
    root_qty = walk.root.quantity
    lots = []
    for i, node in walk.nodes.items():
        share = prop.shares.get(i, 0.0)
        in_root = None if share is None else share * root_qty
        lots.append(CompositionLot(node, prop.paths.get(i, 0), share, in_root, i not in has_parents))
    source_shares = [c.share for c in lots if c.is_source]
    sources_share = None if None in source_shares else sum(s or 0.0 for s in source_shares)
    return CompositionResult(
        root=lots[0],
        lots=lots,
        edges=trace_edges(walk),
        sources_share=sources_share,
        truncated=walk.truncated,
        cycles=cycles,
    )
