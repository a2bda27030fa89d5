"""recall() and composition(): proportional shares on small hand-checked graphs in a real database."""

from __future__ import annotations

import asyncpg
import pytest

from flowviz.core.errors import InvalidArgument
from services.genealogy.recall import CompositionResult, RecallResult, composition, recall

from .graphs import build, decide

# Beef and spice mixed 30:10 into a 40 kg mix; half the mix and 20 kg of onion make MIX2.
DONER = "RAW-BEEF > MIX-1 30 kg R1; RAW-SPICE > MIX-1 10 kg R1; MIX-1 > MIX-2 20 kg R2; RAW-ONION > MIX-2 20 kg R2"
DONER_LOTS = "MIX-1 MIX 40 kg; MIX-2 MIX 40 kg; RAW-BEEF RAW 500 kg; RAW-SPICE RAW 25 kg"


def shares(result: RecallResult | None) -> dict[str, float | None]:
    assert result is not None
    return {r.lot.lot_code: r.root_share for r in result.lots}


def parts(result: CompositionResult | None) -> dict[str, float | None]:
    assert result is not None
    return {c.lot.lot_code: c.share for c in result.lots}


async def test_proportional_mix_and_second_generation(conn: asyncpg.Connection) -> None:
    await build(conn, DONER, DONER_LOTS)
    beef = await recall(conn, "RAW-BEEF")
    assert shares(beef) == pytest.approx({"RAW-BEEF": 1.0, "MIX-1": 0.75, "MIX-2": 0.375})
    assert beef is not None
    by_code = {r.lot.lot_code: r for r in beef.lots}
    assert by_code["MIX-1"].root_quantity == pytest.approx(30.0)
    assert by_code["MIX-2"].root_quantity == pytest.approx(15.0)
    assert by_code["MIX-2"].lot.depth == 2 and by_code["MIX-2"].path_count == 1
    assert beef.root.lot.lot_code == "RAW-BEEF" and beef.root.root_quantity == 500.0
    assert shares(await recall(conn, "RAW-SPICE")) == pytest.approx(
        {"RAW-SPICE": 1.0, "MIX-1": 0.25, "MIX-2": 0.125}
    )
    assert shares(await recall(conn, "MIX-1")) == pytest.approx({"MIX-1": 1.0, "MIX-2": 0.5})


async def test_totals_per_kind(conn: asyncpg.Connection) -> None:
    await build(conn, DONER + "; MIX-2 > FG-1 40 kg R3", DONER_LOTS + "; FG-1 FG 80 ea")
    result = await recall(conn, "RAW-BEEF")
    assert result is not None
    totals = {t.kind: t for t in result.totals}
    assert set(totals) == {"RAW", "MIX", "FG"}
    assert (totals["RAW"].lots, totals["RAW"].quantity_kg, totals["RAW"].root_quantity_kg) == (
        1,
        500.0,
        500.0,
    )
    assert totals["MIX"].lots == 2
    assert totals["MIX"].quantity_kg == pytest.approx(80.0)
    assert totals["MIX"].root_quantity_kg == pytest.approx(30.0 + 15.0)
    # The FG is counted in pieces: it has a share but no kg.
    assert (totals["FG"].lots, totals["FG"].quantity_kg, totals["FG"].lots_not_in_kg) == (1, 0.0, 1)
    fg = next(r for r in result.lots if r.lot.lot_code == "FG-1")
    assert fg.root_share == pytest.approx(0.375) and fg.root_quantity == pytest.approx(30.0)


async def test_diamond_counts_paths_and_sums_quantities(conn: asyncpg.Connection) -> None:
    await build(
        conn,
        "R > A 10 kg; R > B 10 kg; A > D 5 kg; B > D 5 kg; X > D 10 kg; D > E 1 kg",
        "A LOT 10 kg; B LOT 10 kg; D LOT 20 kg; E LOT 1 kg",
    )
    result = await recall(conn, "R")
    assert result is not None
    by_code = {r.lot.lot_code: r for r in result.lots}
    assert [r.lot.lot_code for r in result.lots].count("D") == 1
    assert (by_code["D"].lot.depth, by_code["D"].path_count) == (2, 2)
    assert by_code["D"].root_share == pytest.approx(0.5)  # 5 + 5 of its 20 kg input
    assert by_code["D"].root_quantity == pytest.approx(10.0)  # of its 20 kg
    assert by_code["E"].path_count == 2 and by_code["E"].root_share == pytest.approx(0.5)
    assert "X" not in by_code


async def test_unit_conversion_of_edges(conn: asyncpg.Connection) -> None:
    await build(conn, "BEEF > MIX 30000 g; SPICE > MIX 22.046 lb", "MIX LOT 40 kg")  # 30 kg : 10 kg
    assert shares(await recall(conn, "BEEF"))["MIX"] == pytest.approx(0.75, abs=1e-4)


async def test_shared_non_mass_unit_and_mixed_units(conn: asyncpg.Connection) -> None:
    await build(
        conn,
        "A > M 10 ea; B > M 30 ea; M > N 1 kg; C > N 1 kg; N > O 1 kg",
        "M LOT 40 ea; N LOT 2 kg; O LOT 1 kg",
    )
    assert shares(await recall(conn, "A")) == pytest.approx({"A": 1.0, "M": 0.25, "N": 0.125, "O": 0.125})
    await build(conn, "P > Q 10 kg; W > Q 5 ea; Q > S 1 kg")
    mixed = await recall(conn, "P")
    assert shares(mixed) == {"P": 1.0, "Q": None, "S": None}
    assert mixed is not None and {r.lot.lot_code: r.root_quantity for r in mixed.lots}["S"] is None


async def test_cycle_through_the_root(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B 10 kg; B > C 10 kg; C > A 10 kg", "A LOT 10 kg; B LOT 10 kg; C LOT 10 kg")
    result = await recall(conn, "A")
    assert result is not None
    assert result.cycles == [["A", "B", "C"]]
    assert shares(result) == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert [r.path_count for r in result.lots] == [1, 1, 1]


async def test_cycle_away_from_the_root_is_skipped_for_propagation(conn: asyncpg.Connection) -> None:
    await build(conn, "R > A 10 kg; A > B 10 kg; B > A 5 kg; Z > B 10 kg", "A LOT 10 kg; B LOT 20 kg")
    result = await recall(conn, "R")
    assert result is not None and result.cycles == [["A", "B"]]
    # B -> A closes the cycle: ignored, so A is all R, and B is half A, half Z.
    assert shares(result) == pytest.approx({"R": 1.0, "A": 1.0, "B": 0.5})
    up = await composition(conn, "B")
    assert up is not None and up.cycles == [["A", "B"]]
    # Walking up from B, B -> A is again the edge that closes the cycle.
    assert parts(up) == pytest.approx({"B": 1.0, "A": 0.5, "Z": 0.5, "R": 0.5})
    assert up.sources_share == pytest.approx(1.0)


async def test_status_and_lot_fields_carried(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B 1 kg")
    await decide(conn, "B", "reject")
    result = await recall(conn, "A")
    assert result is not None and {r.lot.lot_code: r.lot.status for r in result.lots} == {
        "A": "pending",
        "B": "rejected",
    }


async def test_truncated_recall_by_nodes_and_depth(conn: asyncpg.Connection) -> None:
    await build(conn, "R > A > B > C; R > A2")
    by_nodes = await recall(conn, "R", max_nodes=3)
    assert by_nodes is not None and by_nodes.truncated
    assert set(shares(by_nodes)) == {"R", "A", "A2"}
    by_depth = await recall(conn, "R", max_depth=2)
    assert by_depth is not None and by_depth.truncated and set(shares(by_depth)) == {"R", "A", "A2", "B"}
    full = await recall(conn, "R")
    assert full is not None and not full.truncated


async def test_wide_fan_out_recall(conn: asyncpg.Connection) -> None:
    await build(
        conn,
        "\n".join(f"SPICE > MIX-{i:03d} 1 kg; BEEF-{i:03d} > MIX-{i:03d} 3 kg" for i in range(500)),
        "SPICE LOT 500 kg; " + "; ".join(f"MIX-{i:03d} MIX 4 kg" for i in range(500)),
    )
    result = await recall(conn, "SPICE")
    assert result is not None and len(result.lots) == 501
    assert {r.root_share for r in result.lots[1:]} == {0.25}
    assert {t.kind: t.lots for t in result.totals} == {"LOT": 1, "MIX": 500}


async def test_composition_of_a_finished_good(conn: asyncpg.Connection) -> None:
    await build(conn, DONER + "; MIX-2 > FG-1 40 kg R3", DONER_LOTS + "; FG-1 FG 40 kg")
    result = await composition(conn, "FG-1")
    assert result is not None
    assert parts(result) == pytest.approx(
        {"FG-1": 1.0, "MIX-2": 1.0, "MIX-1": 0.5, "RAW-ONION": 0.5, "RAW-BEEF": 0.375, "RAW-SPICE": 0.125}
    )
    sources = {c.lot.lot_code for c in result.lots if c.is_source}
    assert sources == {"RAW-ONION", "RAW-BEEF", "RAW-SPICE"}
    assert result.sources_share == pytest.approx(1.0)
    beef = next(c for c in result.lots if c.lot.lot_code == "RAW-BEEF")
    assert beef.quantity_in_root == pytest.approx(15.0) and beef.lot.depth == 3
    assert not result.truncated and result.cycles == []


async def test_composition_of_a_raw_lot_is_itself(conn: asyncpg.Connection) -> None:
    await build(conn, "RAW-A > MIX-B")
    result = await composition(conn, "RAW-A")
    assert result is not None and parts(result) == {"RAW-A": 1.0}
    assert result.root.is_source and result.sources_share == 1.0


async def test_composition_cut_by_depth_is_truncated_and_short_of_one(conn: asyncpg.Connection) -> None:
    await build(conn, "S1 > M1 1 kg; S2 > M1 1 kg; M1 > FG 1 kg; S3 > FG 1 kg", "M1 LOT 2 kg; FG LOT 2 kg")
    result = await composition(conn, "FG", max_depth=1)
    assert result is not None and result.truncated
    assert {c.lot.lot_code: c.is_source for c in result.lots} == {"FG": False, "M1": False, "S3": True}
    assert result.sources_share == pytest.approx(0.5)


async def test_seed_composition(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        result = await composition(conn, "FG-DONER-X1")
    finally:
        await conn.close()
    assert parts(result) == pytest.approx(
        {"FG-DONER-X1": 1.0, "MIX-BATCH-88": 1.0, "RAW-BEEF-001": 0.95, "RAW-SPICE-001": 0.05}
    )
    assert result is not None and result.sources_share == pytest.approx(1.0)


async def test_unknown_lot_and_invalid_limits(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B")
    assert await recall(conn, "NOPE") is None
    assert await composition(conn, "NOPE") is None
    with pytest.raises(InvalidArgument) as err:
        await recall(conn, "A", max_depth=0)
    assert err.value.reason == "MAX_DEPTH_INVALID"
    with pytest.raises(InvalidArgument) as err:
        await composition(conn, "A", max_nodes=100_001)
    assert err.value.reason == "MAX_NODES_INVALID"
