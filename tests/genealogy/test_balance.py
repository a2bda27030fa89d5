"""Mass balance of lots and runs on small hand-checked graphs in a real database."""

from __future__ import annotations

import asyncpg
import pytest

from flowviz.core.errors import InvalidArgument
from services.genealogy.balance import (
    OUTPUT_MULTI_RUN,
    OVERCONSUMED,
    UNITS_MIXED,
    YIELD_GAIN,
    lot_balance,
    run_balance,
)

from .graphs import build


async def test_balanced_mix(conn: asyncpg.Connection) -> None:
    await build(conn, "BEEF > MIX 30 kg R1; SPICE > MIX 10 kg R1; MIX > FG 25 kg R2", "MIX MIX 40 kg")
    b = await lot_balance(conn, "MIX")
    assert b is not None
    assert (b.unit, b.quantity, b.inputs, b.consumed_by_children, b.remaining) == (
        "kg",
        40.0,
        40.0,
        25.0,
        15.0,
    )
    assert (b.input_vs_output_diff, b.input_edges, b.output_edges, b.flags) == (0.0, 2, 1, [])
    assert (b.lot_code, b.kind, b.lot_quantity, b.lot_uom, b.tolerance) == ("MIX", "MIX", 40.0, "kg", 0.02)


async def test_overconsumed(conn: asyncpg.Connection) -> None:
    await build(conn, "RAW-A > M1 60 kg; RAW-A > M2 50 kg", "RAW-A RAW 100 kg")
    b = await lot_balance(conn, "RAW-A")
    assert b is not None and b.flags == [OVERCONSUMED]
    assert b.remaining == -10.0
    # A raw lot has no inputs: nothing to compare them with.
    assert (b.inputs, b.input_edges, b.input_vs_output_diff) == (0.0, 0, None)
    loose = await lot_balance(conn, "RAW-A", tolerance=0.1)
    assert loose is not None and loose.flags == []


async def test_within_tolerance_is_not_flagged(conn: asyncpg.Connection) -> None:
    await build(conn, "A > L 40 kg; L > C 40.5 kg", "L MIX 40.5 kg; A RAW 40 kg")
    b = await lot_balance(conn, "L")  # 40.5 out of 40 in: +1.25 %, inside 2 %
    assert b is not None and b.flags == [] and b.input_vs_output_diff == pytest.approx(-0.5)
    strict = await lot_balance(conn, "L", tolerance=0.0)
    assert strict is not None and strict.flags == [YIELD_GAIN]


async def test_yield_gain(conn: asyncpg.Connection) -> None:
    await build(conn, "A > L 30 kg; B > L 10 kg", "L MIX 45 kg")
    b = await lot_balance(conn, "L")
    assert b is not None and b.flags == [YIELD_GAIN] and b.input_vs_output_diff == pytest.approx(-5.0)


async def test_unit_conversion(conn: asyncpg.Connection) -> None:
    # 10 kg of spice counted in grams, beef in pounds; the lot itself in kg.
    await build(conn, "SPICE > L 10000 g; BEEF > L 66.1387 lb; L > C 20 kg", "L MIX 40 kg")
    b = await lot_balance(conn, "L")
    assert b is not None and b.unit == "kg" and b.flags == []
    assert b.inputs == pytest.approx(40.0, abs=1e-3)
    assert b.remaining == pytest.approx(20.0)
    grams = await lot_balance(conn, "SPICE")
    assert grams is not None and grams.consumed_by_children == pytest.approx(10.0)


async def test_same_non_mass_unit_and_mixed_units(conn: asyncpg.Connection) -> None:
    await build(conn, "BOX > PALLET 10 ea; PALLET > SHIP 12 ea", "PALLET LOT 10 ea")
    same = await lot_balance(conn, "PALLET")
    assert same is not None and same.unit == "ea" and same.flags == [OVERCONSUMED]
    await build(conn, "DOUGH > BUNS 5 kg", "BUNS FG 100 ea")
    mixed = await lot_balance(conn, "BUNS")
    assert mixed is not None and mixed.flags == [UNITS_MIXED]
    assert (mixed.unit, mixed.quantity, mixed.inputs, mixed.remaining) == ("", None, None, None)
    assert (mixed.lot_quantity, mixed.lot_uom, mixed.input_edges) == (100.0, "ea", 1)


async def test_lot_balance_unknown_and_bad_tolerance(conn: asyncpg.Connection) -> None:
    await build(conn, "A > B")
    assert await lot_balance(conn, "NOPE") is None
    for bad in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(InvalidArgument) as err:
            await lot_balance(conn, "A", tolerance=bad)
        assert err.value.reason == "TOLERANCE_INVALID"


async def test_run_balance(conn: asyncpg.Connection) -> None:
    await build(
        conn,
        "BEEF > MIX 30 kg R1; SPICE > MIX 10000 g R1; MIX > FG-1 20 kg R2; MIX > FG-2 20 kg R2",
        "MIX MIX 40 kg; FG-1 FG 19 kg; FG-2 FG 20 kg",
    )
    mix = await run_balance(conn, "R1")
    assert mix is not None
    assert [(i.lot_code, i.quantity, i.uom) for i in mix.inputs] == [
        ("BEEF", 30.0, "kg"),
        ("SPICE", 10000.0, "g"),
    ]
    assert [(o.lot_code, o.kind, o.quantity) for o in mix.outputs] == [("MIX", "MIX", 40.0)]
    assert (mix.unit, mix.total_input, mix.total_output, mix.input_vs_output_diff) == ("kg", 40.0, 40.0, 0.0)
    assert mix.flags == []
    forming = await run_balance(conn, "R2")
    assert forming is not None and [i.lot_code for i in forming.inputs] == ["MIX"]
    assert forming.inputs[0].quantity == 40.0  # both edges from MIX summed
    assert [o.lot_code for o in forming.outputs] == ["FG-1", "FG-2"]
    assert forming.input_vs_output_diff == pytest.approx(1.0) and forming.flags == []


async def test_run_yield_gain_mixed_units_and_shared_outputs(conn: asyncpg.Connection) -> None:
    await build(
        conn,
        "A > GAIN 10 kg R1; B > BUNS 2 kg R2; C > SHARED 5 kg R3; D > SHARED 5 kg R4",
        "GAIN MIX 12 kg; BUNS FG 40 ea; SHARED MIX 10 kg",
    )
    gain = await run_balance(conn, "R1")
    assert gain is not None and gain.flags == [YIELD_GAIN]
    relaxed = await run_balance(conn, "R1", tolerance=0.25)
    assert relaxed is not None and relaxed.flags == []
    buns = await run_balance(conn, "R2")
    assert buns is not None and buns.flags == [UNITS_MIXED] and buns.total_output is None
    shared = await run_balance(conn, "R3")
    assert shared is not None and OUTPUT_MULTI_RUN in shared.flags


async def test_run_balance_unknown_and_empty(conn: asyncpg.Connection) -> None:
    assert await run_balance(conn, "NOPE") is None
    await conn.execute("INSERT INTO production_runs (run_code) VALUES ('EMPTY')")
    empty = await run_balance(conn, "EMPTY")
    assert empty is not None and (empty.inputs, empty.outputs, empty.total_input, empty.flags) == (
        [],
        [],
        0.0,
        [],
    )


async def test_seed_balance(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        beef = await lot_balance(conn, "RAW-BEEF-001")
        run = await run_balance(conn, "RUN-MIX-88")
    finally:
        await conn.close()
    assert beef is not None and (beef.remaining, beef.flags) == (120.0, [])
    assert run is not None and (run.total_input, run.total_output, run.flags) == (400.0, 400.0, [])
