"""trace(): multi-level walks on small hand-checked graphs in a real database."""

from __future__ import annotations

import asyncpg
import pytest

from flowviz.core.errors import InvalidArgument
from services.genealogy.trace import HARD_MAX_DEPTH, HARD_MAX_NODES, TraceResult, trace

from .graphs import build, decide


def depths(result: TraceResult | None) -> dict[str, tuple[str, int]]:
    assert result is not None
    return {n.lot_code: (n.side, n.depth) for n in result.nodes}


def edges(result: TraceResult | None) -> set[tuple[str, str]]:
    assert result is not None
    return {(e.parent_code, e.child_code) for e in result.edges}


async def test_chain_depths_each_way(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > C > D")
    down = await trace(conn, "A", direction="downstream")
    assert depths(down) == {
        "A": ("root", 0),
        "B": ("downstream", 1),
        "C": ("downstream", 2),
        "D": ("downstream", 3),
    }
    assert down is not None and [n.lot_code for n in down.nodes] == ["A", "B", "C", "D"]
    assert edges(down) == {("A", "B"), ("B", "C"), ("C", "D")}
    assert not down.truncated and down.cycles == [] and down.direction == "downstream"
    up = await trace(conn, "D", direction="upstream")
    assert depths(up) == {"D": ("root", 0), "C": ("upstream", 1), "B": ("upstream", 2), "A": ("upstream", 3)}
    assert edges(up) == edges(down)


async def test_both_directions_from_the_middle(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > C > D; X > B; C > Y")
    both = await trace(conn, "B", direction="both")
    assert depths(both) == {
        "B": ("root", 0),
        "A": ("upstream", 1),
        "X": ("upstream", 1),
        "C": ("downstream", 1),
        "D": ("downstream", 2),
        "Y": ("downstream", 2),
    }
    assert edges(both) == {("A", "B"), ("X", "B"), ("B", "C"), ("C", "D"), ("C", "Y")}
    assert both is not None and both.root.lot_code == "B" and both.nodes[0] == both.root
    # One way only: the other side is not walked.
    assert set(depths(await trace(conn, "B", direction="upstream"))) == {"B", "A", "X"}


async def test_both_lists_every_edge_between_listed_lots_but_no_siblings(conn: asyncpg.Connection) -> None:
    await build(conn, "P > R > D; P > SIBLING; P > D; SIBLING > D")
    both = await trace(conn, "R", direction="both")
    assert set(depths(both)) == {"P", "R", "D"}
    assert edges(both) == {("P", "R"), ("R", "D"), ("P", "D")}


async def test_diamond_lot_appears_once_at_its_shortest_depth(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > D; A > C > D; A > D2 > E > D")
    result = await trace(conn, "A", direction="downstream")
    assert result is not None
    assert [n.lot_code for n in result.nodes].count("D") == 1
    assert depths(result)["D"] == ("downstream", 2)
    assert len(result.edges) == 7 and len(edges(result)) == 7


async def test_parallel_edges_of_different_runs_are_both_listed(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B 3 kg R1; A > B 4 kg R2")
    result = await trace(conn, "A", direction="downstream")
    assert result is not None
    assert sorted((e.run_code, e.quantity) for e in result.edges) == [("R1", 3.0), ("R2", 4.0)]


async def test_wide_fan_out(conn: asyncpg.Connection) -> None:
    children = [f"C-{i:04d}" for i in range(500)]
    await build(conn, "\n".join(f"ROOT > {c} 2 g" for c in children))
    result = await trace(conn, "ROOT", direction="downstream")
    assert result is not None and not result.truncated
    assert len(result.nodes) == 501 and len(result.edges) == 500
    assert {n.depth for n in result.nodes[1:]} == {1}
    assert {(e.quantity, e.uom) for e in result.edges} == {(2.0, "g")}
    up = await trace(conn, "C-0123", direction="both")
    assert depths(up) == {"C-0123": ("root", 0), "ROOT": ("upstream", 1)}


async def test_lot_fields_and_status(conn: asyncpg.Connection) -> None:
    await build(conn, "RAW-BEEF > MIX-1 30 kg RUN-1", lots="RAW-BEEF RAW 500.5 kg")
    await decide(conn, "RAW-BEEF", "pass")
    await decide(conn, "RAW-BEEF", "hold")
    result = await trace(conn, "RAW-BEEF", direction="downstream")
    assert result is not None
    beef, mix = result.nodes
    assert (beef.kind, beef.product, beef.quantity, beef.uom, beef.status) == (
        "RAW",
        "product of RAW-BEEF",
        500.5,
        "kg",
        "on_hold",
    )
    assert (mix.kind, mix.status, mix.produced_at) == ("MIX", "pending", None)
    assert mix.created_at.tzinfo is not None
    assert result.edges[0].run_code == "RUN-1" and result.edges[0].quantity == 30.0


async def test_cycle_through_the_root_is_reported_and_does_not_hang(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > C > A")
    for direction in ("downstream", "upstream", "both"):
        result = await trace(conn, "A", direction=direction)
        assert result is not None
        assert sorted(n.lot_code for n in result.nodes) == ["A", "B", "C"], direction
        assert result.cycles == [["A", "B", "C"]], direction
        assert edges(result) == {("A", "B"), ("B", "C"), ("C", "A")}, direction
    both = depths(await trace(conn, "A", direction="both"))
    # B is a child of A and (via C) its grandparent: listed once, on the nearer side.
    assert both == {"A": ("root", 0), "B": ("downstream", 1), "C": ("upstream", 1)}


async def test_cycle_away_from_the_root(conn: asyncpg.Connection) -> None:
    await build(conn, "R > A > B > C > A; C > D")
    result = await trace(conn, "R", direction="downstream", max_depth=HARD_MAX_DEPTH)
    assert result is not None
    assert depths(result) == {
        "R": ("root", 0),
        "A": ("downstream", 1),
        "B": ("downstream", 2),
        "C": ("downstream", 3),
        "D": ("downstream", 4),
    }
    assert result.cycles == [["A", "B", "C"]] and not result.truncated
    up = await trace(conn, "D", direction="upstream")
    assert up is not None and up.cycles == [["A", "B", "C"]]
    assert set(depths(up)) == {"D", "C", "B", "A", "R"}


async def test_two_cycles_each_reported_once(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B > A; B > C > D > B")
    result = await trace(conn, "A", direction="both")
    assert result is not None and result.cycles == [["A", "B"], ["B", "C", "D"]]


async def test_depth_limit(conn: asyncpg.Connection) -> None:
    await build(conn, " > ".join(f"L{i}" for i in range(10)))
    cut = await trace(conn, "L0", direction="downstream", max_depth=3)
    assert cut is not None and cut.truncated
    assert [n.lot_code for n in cut.nodes] == ["L0", "L1", "L2", "L3"]
    assert edges(cut) == {("L0", "L1"), ("L1", "L2"), ("L2", "L3")}
    exact = await trace(conn, "L0", direction="downstream", max_depth=9)
    assert exact is not None and not exact.truncated and len(exact.nodes) == 10
    up = await trace(conn, "L9", direction="upstream", max_depth=1)
    assert up is not None and up.truncated and [n.lot_code for n in up.nodes] == ["L9", "L8"]


async def test_depth_limit_not_truncated_when_the_edge_leads_back_inside(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B; A > C; B > C")
    result = await trace(conn, "A", direction="downstream", max_depth=1)
    assert result is not None and not result.truncated
    assert edges(result) == {("A", "B"), ("A", "C"), ("B", "C")}


async def test_hard_depth_limit_on_a_long_chain(conn: asyncpg.Connection) -> None:
    await build(conn, " > ".join(f"L{i:03d}" for i in range(HARD_MAX_DEPTH + 10)))
    result = await trace(conn, "L000", direction="downstream", max_depth=HARD_MAX_DEPTH)
    assert result is not None and result.truncated
    assert len(result.nodes) == HARD_MAX_DEPTH + 1 and result.nodes[-1].depth == HARD_MAX_DEPTH


async def test_node_limit_keeps_the_nearest_lots(conn: asyncpg.Connection) -> None:
    # Depth 1: B-1..B-3; depth 2: C-1..C-4 (lower ids first within a depth).
    await build(conn, "A > B-1 > C-1; A > B-2 > C-2; B-2 > C-3; A > B-3 > C-4")
    full = await trace(conn, "A", direction="downstream", max_nodes=8)
    assert full is not None and not full.truncated and len(full.nodes) == 8
    cut = await trace(conn, "A", direction="downstream", max_nodes=6)
    assert cut is not None and cut.truncated
    assert [n.lot_code for n in cut.nodes] == ["A", "B-1", "B-2", "B-3", "C-1", "C-2"]
    assert edges(cut) == {("A", "B-1"), ("A", "B-2"), ("A", "B-3"), ("B-1", "C-1"), ("B-2", "C-2")}
    only_root = await trace(conn, "A", direction="both", max_nodes=1)
    assert only_root is not None and only_root.truncated and depths(only_root) == {"A": ("root", 0)}


async def test_node_limit_in_both_directions_cuts_by_depth(conn: asyncpg.Connection) -> None:
    await build(conn, "U2 > U1 > R > D1 > D2; U1B > R")
    result = await trace(conn, "R", direction="both", max_nodes=4)
    assert result is not None and result.truncated
    assert depths(result) == {
        "R": ("root", 0),
        "U1": ("upstream", 1),
        "U1B": ("upstream", 1),
        "D1": ("downstream", 1),
    }


async def test_node_limit_on_a_wide_fan_out(conn: asyncpg.Connection) -> None:
    await build(conn, "\n".join(f"ROOT > C-{i:04d}" for i in range(500)))
    result = await trace(conn, "ROOT", direction="downstream", max_nodes=100)
    assert result is not None and result.truncated
    assert [n.lot_code for n in result.nodes[1:]] == [f"C-{i:04d}" for i in range(99)]
    assert len(result.edges) == 99


async def test_lot_without_edges(conn: asyncpg.Connection) -> None:
    await build(conn, lots="ALONE RAW 5 kg")
    result = await trace(conn, "ALONE", direction="both")
    assert result is not None
    assert depths(result) == {"ALONE": ("root", 0)} and result.edges == [] and not result.truncated


async def test_unknown_lot_is_none(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B")
    assert await trace(conn, "NOPE", direction="both") is None


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"max_depth": 0}, "MAX_DEPTH_INVALID"),
        ({"max_depth": HARD_MAX_DEPTH + 1}, "MAX_DEPTH_INVALID"),
        ({"max_nodes": 0}, "MAX_NODES_INVALID"),
        ({"max_nodes": HARD_MAX_NODES + 1}, "MAX_NODES_INVALID"),
        ({"direction": "sideways"}, "DIRECTION_INVALID"),
    ],
)
async def test_invalid_arguments(conn: asyncpg.Connection, kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await trace(conn, "A", **kwargs)  # type: ignore[arg-type]
    assert err.value.reason == reason


async def test_seed_story(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        result = await trace(conn, "FG-DONER-X1", direction="upstream")
    finally:
        await conn.close()
    assert depths(result) == {
        "FG-DONER-X1": ("root", 0),
        "MIX-BATCH-88": ("upstream", 1),
        "RAW-BEEF-001": ("upstream", 2),
        "RAW-SPICE-001": ("upstream", 2),
    }
    assert result is not None and {e.run_code for e in result.edges} == {"RUN-MIX-88", "RUN-FORM-X1"}
    assert {n.lot_code: n.status for n in result.nodes}["RAW-BEEF-001"] == "passed"
