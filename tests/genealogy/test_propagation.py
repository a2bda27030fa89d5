"""The pure parts: input fractions, share propagation (Kahn), cycle handling. No database."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from flowviz.core.units import common_unit
from services.genealogy.recall import (
    Propagation,
    RecallLot,
    input_fractions,
    kind_totals,
    propagate,
)
from services.genealogy.trace import Edge, TraceNode, back_edges, describe_cycles, find_cycles, successors

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BEEF, SPICE, MIX, ONION, MIX2 = 1, 2, 3, 4, 5
DONER = [
    Edge(BEEF, MIX, 30, "kg"),
    Edge(SPICE, MIX, 10, "kg"),
    Edge(MIX, MIX2, 20, "kg"),
    Edge(ONION, MIX2, 20, "kg"),
]


def test_common_unit() -> None:
    assert common_unit(["kg", "g", "lb", "t"]) == "kg"
    assert common_unit(["ea", "ea"]) == "ea"
    assert common_unit(["kg", "ea"]) is None
    assert common_unit(["l", "ml"]) is None
    assert common_unit([]) == "kg"


def test_input_fractions() -> None:
    assert input_fractions(DONER) == pytest.approx(
        {(BEEF, MIX): 0.75, (SPICE, MIX): 0.25, (MIX, MIX2): 0.5, (ONION, MIX2): 0.5}
    )
    # Converted to kg; parallel edges (two runs) summed; inputs from outside count in the total.
    edges = [Edge(1, 9, 1000, "g"), Edge(1, 9, 1, "kg", "R2"), Edge(2, 9, 2.2046226218, "lb")]
    assert input_fractions(edges, {9: [(1.0, "kg")]}) == pytest.approx({(1, 9): 2 / 4, (2, 9): 1 / 4})
    assert input_fractions([Edge(1, 9, 1, "ea"), Edge(2, 9, 3, "ea")]) == {(1, 9): 0.25, (2, 9): 0.75}
    assert input_fractions([Edge(1, 9, 1, "kg"), Edge(2, 9, 3, "ea")]) == {(1, 9): None, (2, 9): None}
    assert input_fractions([Edge(1, 9, 1, "kg")], {9: [(1.0, "l")]}) == {(1, 9): None}
    assert input_fractions(DONER, skip={(MIX, MIX2)})[ONION, MIX2] == 1.0


def test_propagate_downstream_and_upstream() -> None:
    down = propagate(BEEF, DONER)
    assert down.shares == pytest.approx({BEEF: 1.0, MIX: 0.75, MIX2: 0.375})
    assert down.order == [BEEF, MIX, MIX2] and down.skipped == set()
    up = propagate(MIX2, DONER, upstream=True)
    assert up.shares == pytest.approx({MIX2: 1.0, MIX: 0.5, ONION: 0.5, BEEF: 0.375, SPICE: 0.125})
    assert up.order[0] == MIX2


def test_propagate_diamond_paths() -> None:
    r, a, b, d, e = 1, 2, 3, 4, 5
    edges = [
        Edge(r, a, 1, "kg"),
        Edge(r, b, 3, "kg"),
        Edge(a, d, 1, "kg"),
        Edge(b, d, 3, "kg"),
        Edge(d, e, 1, "kg"),
    ]
    result = propagate(r, edges, {d: [(4.0, "kg")]})
    assert result.paths == {r: 1, a: 1, b: 1, d: 2, e: 2}
    assert result.shares[d] == pytest.approx(0.5) and result.shares[e] == pytest.approx(0.5)
    # Parallel edges are one path.
    assert propagate(r, [Edge(r, a, 1, "kg"), Edge(r, a, 1, "kg", "R2")]).paths[a] == 1


def test_unknown_share_spreads_downstream_only() -> None:
    edges = [Edge(1, 2, 1, "kg"), Edge(9, 2, 1, "ea"), Edge(2, 3, 1, "kg"), Edge(1, 4, 1, "kg")]
    result = propagate(1, edges)
    assert result.shares == {1: 1.0, 2: None, 3: None, 4: 1.0}


def test_cycles_are_broken_not_followed() -> None:
    # 1 -> 2 -> 3 -> 2 (2, 3 a cycle away from the root), 3 -> 4.
    edges = [Edge(1, 2, 1, "kg"), Edge(2, 3, 1, "kg"), Edge(3, 2, 1, "kg"), Edge(3, 4, 1, "kg")]
    result = propagate(1, edges)
    assert result.skipped == {(3, 2)}
    assert result.shares == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert result.order == [1, 2, 3, 4]
    ring = [Edge(1, 2, 1, "kg"), Edge(2, 3, 1, "kg"), Edge(3, 1, 1, "kg")]
    assert propagate(1, ring).skipped == {(3, 1)}
    assert propagate(1, ring, upstream=True).skipped == {(1, 2)}


def test_back_edges_and_cycle_descriptions() -> None:
    succ = successors([(1, 2), (2, 3), (3, 1), (3, 4), (4, 5), (5, 4)])
    assert back_edges([1], succ) == [(3, 1), (5, 4)]
    codes = {1: "C", 2: "A", 3: "B", 4: "X", 5: "W"}
    assert describe_cycles([(3, 1), (5, 4)], succ, codes) == [["A", "B", "C"], ["W", "X"]]
    backs, cycles = find_cycles([4], [(1, 2), (2, 3), (3, 1), (3, 4), (4, 5), (5, 4)], codes, reverse=True)
    assert cycles == [["A", "B", "C"], ["W", "X"]] and len(backs) == 2


def test_deep_chain_does_not_recurse() -> None:
    n = 50_000  # far beyond Python's recursion limit
    edges = [Edge(i, i + 1, 1, "kg") for i in range(n)]
    result = propagate(0, edges)
    assert result.paths[n] == 1 and result.shares[n] == 1.0
    assert back_edges([0], successors([(e.parent, e.child) for e in edges] + [(n, 0)])) == [(n, 0)]


def _random_dag(seed: int, size: int) -> list[Edge]:
    rng = random.Random(seed)
    edges = []
    for child in range(10, size):
        for parent in rng.sample(range(max(0, child - 20), child), rng.randint(1, 3)):
            edges.append(Edge(parent, child, rng.randint(1, 100), rng.choice(["kg", "g", "lb"])))
    return edges


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_dag_recall_and_composition_agree(seed: int) -> None:
    edges = _random_dag(seed, 300)
    sink = 299
    comp = propagate(sink, edges, upstream=True)
    sources = [n for n in comp.shares if n < 10]  # lots 0-9 have no parents
    # Random quantities overconsume most lots; what they pass on is scaled down, never up.
    assert 0 < sum(comp.shares[n] or 0.0 for n in sources) <= 1.0 + 1e-9
    # Each ancestor's share of the sink, seen from either end, is the same number.
    ancestors = sorted(comp.shares)
    assert len(ancestors) > 30
    for ancestor in random.Random(seed).sample(ancestors, 30):
        down: Propagation = propagate(ancestor, edges)
        assert down.shares.get(sink, 0.0) == pytest.approx(comp.shares[ancestor])
        assert down.paths.get(sink, 0) == comp.paths[ancestor]


def test_kind_totals() -> None:
    def lot(code: str, kind: str, qty: float, uom: str, share: float | None) -> RecallLot:
        node = TraceNode(1, code, kind, "p", qty, uom, "pending", None, NOW, 1, "downstream")
        return RecallLot(node, 1, share, None if share is None else share * qty)

    totals = kind_totals(
        [lot("A", "RAW", 10, "kg", 1.0), lot("B", "MIX", 500, "g", 0.5), lot("C", "MIX", 2, "ea", 0.5),
         lot("D", "MIX", 1, "t", None)]
    )  # fmt: skip
    assert [(t.kind, t.lots, t.lots_not_in_kg) for t in totals] == [("MIX", 3, 1), ("RAW", 1, 0)]
    assert totals[0].quantity_kg == pytest.approx(1000.5)
    assert totals[0].root_quantity_kg == pytest.approx(0.25)
