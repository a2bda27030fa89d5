"""Multi-level genealogy walks: every ancestor and/or descendant of a lot in one round trip.

The walk is a level-synchronous breadth-first search inside one recursive CTE. Each
iteration carries the whole frontier and the visited set as arrays, so every lot is found
exactly once, at its shortest distance: no path enumeration (a DAG full of diamonds stays
linear in its size) and cycles cannot loop. The lot rows, their QC status and the edges
between the kept lots come back in the same statement.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from flowviz.core.errors import InvalidArgument
from services.genealogy.lot_rows import LOT_STATUS_JOIN

DEFAULT_MAX_DEPTH = 50
HARD_MAX_DEPTH = 200
DEFAULT_MAX_NODES = 10_000
HARD_MAX_NODES = 100_000

Direction = Literal["upstream", "downstream", "both"]
# "root" for the traced lot (depth 0); otherwise which way it was reached from the root.
Side = Literal["root", "upstream", "downstream"]
DIRECTIONS: tuple[Direction, ...] = ("upstream", "downstream", "both")
DB: TypeAlias = "asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy"

_SIDE_NAMES: dict[str, Side] = {"r": "root", "u": "upstream", "d": "downstream"}
_SIDE_RANK = {"root": 0, "upstream": 1, "downstream": 2}


@dataclass(frozen=True, slots=True)
class TraceNode:
    lot_id: int
    lot_code: str
    kind: str
    product: str
    quantity: float
    uom: str
    status: str
    produced_at: datetime | None
    created_at: datetime
    # Shortest number of edges from the root, always >= 0; `side` gives the direction.
    depth: int
    side: Side


@dataclass(frozen=True, slots=True)
class TraceEdge:
    """One lot_genealogy row: `quantity` of the parent consumed into the child."""

    parent_code: str
    child_code: str
    quantity: float
    uom: str
    run_code: str  # "" for an edge recorded without a run
    edge_id: int = 0


@dataclass(frozen=True, slots=True)
class TraceResult:
    root: TraceNode
    direction: Direction
    nodes: list[TraceNode]  # root first, then by depth
    edges: list[TraceEdge]  # every edge between two listed lots, once
    truncated: bool  # max_depth or max_nodes cut something off
    cycles: list[list[str]]  # [a, b, c] means a -> b -> c -> a; each reported once


# --- the one statement ---------------------------------------------------------------


def _walk(name: str, towards: str, source: str) -> str:
    """BFS over lot_genealogy from `root`, stepping from `source` column to `towards` column.

    $2 = max_depth, $3 = max_nodes. A level takes new lots (never seen before, lowest ids
    first) until max_nodes + 1 lots are held: one beyond the limit tells the caller that
    the node limit cut something. Past max_depth one extra lot is probed, for the same reason.
    """
    return f"""
{name} (depth, frontier, visited) AS (
    SELECT 0, ARRAY[root.id], ARRAY[root.id] FROM root
    UNION ALL
    SELECT w.depth + 1, n.ids, w.visited || n.ids
    FROM {name} w
    CROSS JOIN LATERAL (
        SELECT array_agg(s.id ORDER BY s.id) AS ids
        FROM (
            SELECT e.{towards} AS id
            FROM unnest(w.frontier) AS f (id)
            JOIN lot_genealogy e ON e.{source} = f.id
            EXCEPT
            SELECT unnest(w.visited)
            ORDER BY 1
            LIMIT CASE WHEN w.depth < $2 THEN $3 + 1 - cardinality(w.visited) ELSE 1 END
        ) s
    ) n
    WHERE w.depth <= $2 AND cardinality(w.visited) <= $3 AND n.ids IS NOT NULL
)"""


def _build_sql(direction: Direction, *, with_inputs: bool) -> str:
    walks: list[str] = []
    candidates = ["SELECT id, 0 AS depth, 'r' AS side FROM root"]
    if direction in ("upstream", "both"):
        walks.append(_walk("up", "parent_lot_id", "child_lot_id"))
        candidates.append(
            "SELECT f.id, w.depth, 'u' FROM up w, unnest(w.frontier) AS f (id) WHERE w.depth > 0"
        )
    if direction in ("downstream", "both"):
        walks.append(_walk("down", "child_lot_id", "parent_lot_id"))
        candidates.append(
            "SELECT f.id, w.depth, 'd' FROM down w, unnest(w.frontier) AS f (id) WHERE w.depth > 0"
        )
    # Only "both" can reach a lot twice (through a cycle): keep its nearer side, upstream
    # on a tie ('u' > 'd'; the same order decides which lots a node limit keeps).
    unique = (
        "SELECT DISTINCT ON (id) id, depth, side FROM cand ORDER BY id, depth, side DESC"
        if direction == "both"
        else "SELECT id, depth, side FROM cand"
    )
    # Membership in the kept set is a binary search (width_bucket) in their sorted ids: a
    # join against `kept` would hang on the planner's guess of its size, which it cannot
    # know (a generic plan guessed 1 row and went quadratic: minutes for 10,000 lots).
    if with_inputs:
        # Every input of every kept lot: the shares need each lot's total input, including
        # what came from lots outside the result (other ingredients, lots past a limit).
        edges = f"""
SELECT e.parent_lot_id, e.child_lot_id, e.quantity, e.uom, e.run_id, e.id AS edge_id,
       {_in_kept("e.parent_lot_id")} AS inside
FROM kept k JOIN lot_genealogy e ON e.child_lot_id = k.id CROSS JOIN ids"""
    elif direction == "upstream":
        # Every edge between two kept lots, found from the end whose index is selective.
        edges = f"""
SELECT e.parent_lot_id, e.child_lot_id, e.quantity, e.uom, e.run_id, e.id AS edge_id, true AS inside
FROM kept k JOIN lot_genealogy e ON e.child_lot_id = k.id CROSS JOIN ids
WHERE {_in_kept("e.parent_lot_id")}"""
    else:
        edges = f"""
SELECT e.parent_lot_id, e.child_lot_id, e.quantity, e.uom, e.run_id, e.id AS edge_id, true AS inside
FROM kept k JOIN lot_genealogy e ON e.parent_lot_id = k.id CROSS JOIN ids
WHERE {_in_kept("e.child_lot_id")}"""
    outside = ""
    if with_inputs:
        outside = """
UNION ALL
SELECT 'x', child_lot_id, NULL, NULL, NULL, NULL, NULL, sum(quantity)::float8, uom, NULL, NULL, NULL,
       NULL, NULL, NULL
FROM edges WHERE NOT inside GROUP BY child_lot_id, uom"""
    return f"""
WITH RECURSIVE
root AS (SELECT id FROM lots WHERE lot_code = $1),
{",".join(walks)},
cand AS ({" UNION ALL ".join(candidates)}),
uniq AS ({unique}),
kept AS (SELECT id, depth, side FROM uniq WHERE depth <= $2 ORDER BY depth, side DESC, id LIMIT $3),
ids AS (SELECT array_agg(id ORDER BY id) AS a FROM kept),
edges AS ({edges})
-- lot_rows.LOT_COLUMNS with quantity as float8: decoding numeric into Decimal costs more.
SELECT 'n' AS rel, k.id, k.depth, k.side, l.lot_code, l.kind, l.product,
       l.quantity::float8 AS quantity, l.uom, l.produced_at, q.status,
       NULL::bigint AS parent_id, NULL::text AS run_code, l.created_at, NULL::bigint AS edge_id
FROM kept k JOIN lots l ON l.id = k.id {LOT_STATUS_JOIN}
UNION ALL
SELECT 'e', e.child_lot_id, NULL, NULL, NULL, NULL, NULL, e.quantity::float8, e.uom, NULL, NULL,
       e.parent_lot_id, r.run_code, NULL, e.edge_id
FROM edges e LEFT JOIN production_runs r ON r.id = e.run_id
WHERE e.inside
UNION ALL
SELECT 't', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
WHERE EXISTS (SELECT 1 FROM cand WHERE depth > $2) OR (SELECT count(*) FROM uniq WHERE depth <= $2) > $3
{outside}
"""


def _in_kept(column: str) -> str:
    """`column` is one of the kept ids: ids.a[i] = column for the bucket i it falls in."""
    return f"coalesce(ids.a[width_bucket({column}, ids.a)] = {column}, false)"


_SQL = {(d, False): _build_sql(d, with_inputs=False) for d in DIRECTIONS} | {
    (d, True): _build_sql(d, with_inputs=True) for d in ("upstream", "downstream")
}


# --- fetched walk ----------------------------------------------------------------------


class Edge(NamedTuple):
    """One genealogy edge by lot id: `quantity` of `parent` consumed into `child`.

    A tuple, not a dataclass: tens of thousands are made per walk and never leave the module.
    """

    parent: int
    child: int
    quantity: float
    uom: str
    run_code: str = ""
    edge_id: int = 0


@dataclass(frozen=True, slots=True)
class Walk:
    """What the statement returned, keyed by lot id; shared with recall and composition."""

    root: TraceNode
    nodes: dict[int, TraceNode]  # in walk order: root, then by depth
    edges: list[Edge]  # every edge between two kept lots, once
    # child id -> [(quantity, uom)] of inputs from lots outside `nodes` (with_inputs only).
    outside_inputs: dict[int, list[tuple[float, str]]]
    truncated: bool


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a result is built (synchronous code, no await).

    A 10,000-lot result allocates ~100,000 objects; the collections they trigger scan every
    live object of the process and took ~25 % of a large recall. Nothing built here forms
    a reference cycle, so nothing is left for the collector.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def check_limits(max_depth: int, max_nodes: int) -> None:
    if not 1 <= max_depth <= HARD_MAX_DEPTH:
        raise InvalidArgument("MAX_DEPTH_INVALID", f"max_depth must be 1-{HARD_MAX_DEPTH}", field="max_depth")
    if not 1 <= max_nodes <= HARD_MAX_NODES:
        raise InvalidArgument("MAX_NODES_INVALID", f"max_nodes must be 1-{HARD_MAX_NODES}", field="max_nodes")


async def fetch_walk(
    db: DB,
    lot_code: str,
    *,
    direction: Direction,
    max_depth: int,
    max_nodes: int,
    with_inputs: bool = False,
) -> Walk | None:
    """Run the walk (one statement); None when the lot does not exist."""
    if direction not in DIRECTIONS:
        raise InvalidArgument(
            "DIRECTION_INVALID", "direction must be upstream, downstream or both", field="direction"
        )
    check_limits(max_depth, max_nodes)
    if with_inputs and direction == "both":
        raise ValueError("with_inputs needs a single direction")
    rows = await db.fetch(_SQL[direction, with_inputs], lot_code, max_depth, max_nodes)
    with gc_paused():
        return _parse(rows)


def _parse(rows: Sequence[asyncpg.Record]) -> Walk | None:
    nodes: list[TraceNode] = []
    edges: list[Edge] = []
    outside: dict[int, list[tuple[float, str]]] = {}
    truncated = False
    for row in rows:
        rel = row[0]
        if rel == "e":
            edges.append(Edge(row[11], row[1], row[7], row[8], row[12] or "", row[14]))
        elif rel == "n":
            nodes.append(
                TraceNode(
                    lot_id=row[1],
                    lot_code=row[4],
                    kind=row[5],
                    product=row[6],
                    quantity=row[7],
                    uom=row[8],
                    status=row[10] or "pending",
                    produced_at=row[9],
                    created_at=row[13],
                    depth=row[2],
                    side=_SIDE_NAMES[row[3]],
                )
            )
        elif rel == "x":
            outside.setdefault(row[1], []).append((row[7], row[8]))
        else:
            truncated = True
    if not nodes:
        return None
    nodes.sort(key=lambda n: (n.depth, _SIDE_RANK[n.side], n.lot_code))
    return Walk(
        root=nodes[0],
        nodes={n.lot_id: n for n in nodes},
        edges=edges,
        outside_inputs=outside,
        truncated=truncated,
    )


def trace_edges(walk: Walk) -> list[TraceEdge]:
    """The walk's edges by lot code, sorted."""
    codes = {i: n.lot_code for i, n in walk.nodes.items()}
    rows = sorted(
        (codes[e.parent], codes[e.child], e.run_code, e.quantity, e.uom, e.edge_id) for e in walk.edges
    )
    return [TraceEdge(p, c, q, u, r, i) for p, c, r, q, u, i in rows]


# --- cycles -----------------------------------------------------------------------------


def successors(pairs: Iterable[tuple[int, int]], *, reverse: bool = False) -> dict[int, list[int]]:
    """Adjacency lists (sorted, so searches are deterministic); reverse: child -> parents."""
    succ: dict[int, list[int]] = {}
    for parent, child in sorted(set(pairs)):
        a, b = (child, parent) if reverse else (parent, child)
        succ.setdefault(a, []).append(b)
    return succ


def back_edges(starts: Iterable[int], succ: Mapping[int, Sequence[int]]) -> list[tuple[int, int]]:
    """Edges (u, v) closing a cycle in an iterative depth-first search from `starts` in order.

    Removing them leaves a DAG; every cycle in the graph contains at least one of them.
    """
    on_stack: dict[int, bool] = {}  # absent: unseen; True: on the stack; False: done
    found: list[tuple[int, int]] = []
    for start in starts:
        if start in on_stack:
            continue
        on_stack[start] = True
        stack: list[tuple[int, Iterator[int]]] = [(start, iter(succ.get(start, ())))]
        while stack:
            node, it = stack[-1]
            for nxt in it:
                state = on_stack.get(nxt)
                if state is None:
                    on_stack[nxt] = True
                    stack.append((nxt, iter(succ.get(nxt, ()))))
                    break
                if state:
                    found.append((node, nxt))
            else:
                on_stack[node] = False
                stack.pop()
    return found


def describe_cycles(
    backs: Iterable[tuple[int, int]], succ: Mapping[int, Sequence[int]], codes: Mapping[int, str]
) -> list[list[str]]:
    """The cycle each back edge (parent, child) closes: child ~> parent by a shortest path
    (in `succ`, parent -> child adjacency), as lot codes, smallest code first, each once."""
    seen: set[tuple[str, ...]] = set()
    for parent, child in backs:
        prev: dict[int, int] = {child: child}
        frontier = [child]
        while frontier and parent not in prev:
            reached = []
            for node in frontier:
                for nxt in succ.get(node, ()):
                    if nxt not in prev:
                        prev[nxt] = node
                        reached.append(nxt)
            frontier = reached
        path = [parent]
        while path[-1] != child:
            path.append(prev[path[-1]])
        ids = path[::-1]
        i = min(range(len(ids)), key=lambda k: codes[ids[k]])
        seen.add(tuple(codes[n] for n in ids[i:] + ids[:i]))
    return sorted(list(c) for c in seen)


def find_cycles(
    order: Sequence[int], pairs: Iterable[tuple[int, int]], codes: Mapping[int, str], *, reverse: bool
) -> tuple[set[tuple[int, int]], list[list[str]]]:
    """Back edges of a depth-first search from `order` (root first) in walk direction
    (`reverse`: child -> parent), as (parent, child) pairs, and the cycles they close."""
    pairs = set(pairs)
    forward = successors(pairs)
    walk_succ = successors(pairs, reverse=True) if reverse else forward
    backs = {(v, u) if reverse else (u, v) for u, v in back_edges(order, walk_succ)}
    return backs, describe_cycles(backs, forward, codes)


# --- the trace --------------------------------------------------------------------------


async def trace(
    db: DB,
    lot_code: str,
    *,
    direction: Direction = "both",
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> TraceResult | None:
    """Every lot up and/or down from `lot_code` within the limits; None if the lot does not exist.

    A lot reached both ways (only possible through a cycle) is listed once, on the side
    where it is nearer (upstream on a tie). Past max_nodes the deepest lots are dropped
    (within a depth downstream before upstream, then highest id first), with their edges.
    Edges: every edge between two listed lots (for "both" that includes an edge from an
    ancestor straight into a descendant), each once.
    """
    walk = await fetch_walk(db, lot_code, direction=direction, max_depth=max_depth, max_nodes=max_nodes)
    if walk is None:
        return None
    with gc_paused():
        codes = {i: n.lot_code for i, n in walk.nodes.items()}
        pairs = [(e.parent, e.child) for e in walk.edges]
        _, cycles = find_cycles(list(walk.nodes), pairs, codes, reverse=direction == "upstream")
        return TraceResult(
            root=walk.root,
            direction=direction,
            nodes=list(walk.nodes.values()),
            edges=trace_edges(walk),
            truncated=walk.truncated,
            cycles=cycles,
        )
