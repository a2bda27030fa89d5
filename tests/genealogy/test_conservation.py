"""The share rule obeys conservation of mass: hand-computed figures for yield gain, yield loss,
a multi-output run, a diamond, imported edges and mixed units, a drill's accounting, and a
property test over random genealogies, all against a real database."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowviz.core.units import KG, to_unit
from services.genealogy.accountability import YIELD_GAIN, YIELD_LOSS, account
from services.genealogy.recall import RecallResult, composition, recall

from .graphs import build


def by_code(result: RecallResult | None) -> dict[str, tuple[float | None, float | None]]:
    assert result is not None
    return {r.lot.lot_code: (r.root_share, r.root_quantity) for r in result.lots}


def expect(
    found: dict[str, tuple[float | None, float | None]], wanted: dict[str, tuple[float, float]]
) -> None:
    assert set(found) == set(wanted)
    for code, pair in wanted.items():
        assert found[code] == pytest.approx(pair), code


async def test_yield_gain_dilutes_the_issue_example(conn: asyncpg.Connection) -> None:
    # 200 kg of raw, 20 kg into each of 10 mixes of 100 kg (water untracked), each mix into
    # 100 finished goods of 1 kg: the goods hold 200 kg of the raw lot, not 1,000.
    edges = [f"RAW > MIX-{m} 20 kg RM{m}" for m in range(10)]
    edges += [f"MIX-{m} > FG-{m}-{g} 1 kg RF{m}" for m in range(10) for g in range(100)]
    lots = ["RAW RAW 200 kg"] + [f"MIX-{m} MIX 100 kg" for m in range(10)]
    lots += [f"FG-{m}-{g} FG 1 kg" for m in range(10) for g in range(100)]
    await build(conn, "; ".join(edges), "; ".join(lots))
    result = await recall(conn, "RAW")
    found = by_code(result)
    assert found["MIX-3"] == pytest.approx((0.2, 20.0))  # 20 of its 100 kg
    assert found["FG-3-7"] == pytest.approx((0.2, 0.2))
    assert result is not None
    totals = {t.kind: t.root_quantity_kg for t in result.totals}
    assert totals == pytest.approx({"RAW": 200.0, "MIX": 200.0, "FG": 200.0})
    drill = account(result, 0.02)
    assert drill is not None
    assert (drill.basis, drill.in_stock, drill.downstream) == pytest.approx((200.0, 0.0, 0.0))
    assert (drill.end_lots, drill.end_lot_count, drill.unaccounted) == pytest.approx(
        (200.0, 1000, 0.0), abs=1e-9
    )
    assert drill.within_tolerance and drill.runs_not_listed == 0
    assert {r.flag for r in drill.runs} == {YIELD_GAIN} and len(drill.runs) == 10  # the ten mixes


async def test_yield_loss_does_not_inflate(conn: asyncpg.Connection) -> None:
    # 100 kg in, 80 kg out (cooking loss); the 80 kg become F with 20 kg of X.
    await build(conn, "R > M 100 kg R1; M > F 80 kg R2; X > F 20 kg R2", "M LOT 80 kg; F LOT 100 kg")
    expect(by_code(await recall(conn, "R")), {"R": (1.0, 100.0), "M": (1.0, 80.0), "F": (0.8, 80.0)})
    up = await composition(conn, "F")
    assert up is not None
    assert {c.lot.lot_code: c.share for c in up.lots} == pytest.approx(
        {"F": 1.0, "M": 0.8, "X": 0.2, "R": 0.8}
    )
    assert up.sources_share == pytest.approx(1.0)


async def test_multi_output_run(conn: asyncpg.Connection) -> None:
    # R 100 kg + W 100 kg -> O1 120 kg + O2 60 kg; edges split by output (as runs record them).
    await build(
        conn,
        "R > O1 133.333 kg RUN; R > O2 66.667 kg RUN; W > O1 133.333 kg RUN; W > O2 66.667 kg RUN",
        "R LOT 200 kg; O1 LOT 240 kg; O2 LOT 120 kg",
    )
    # Each output is half R; 200 kg of R went in, 360 kg came out of 400 kg: 20 kg of R is lost.
    found = by_code(await recall(conn, "R"))
    assert found["O1"] == pytest.approx((0.5, 120.0), rel=1e-5)
    assert found["O2"] == pytest.approx((0.5, 60.0), rel=1e-5)
    drill = account(await recall(conn, "R"), 0.02)  # type: ignore[arg-type]
    assert drill is not None
    assert drill.end_lots == pytest.approx(180.0, rel=1e-5)
    assert drill.unaccounted == pytest.approx(20.0, rel=1e-4) and not drill.within_tolerance
    assert {(r.lot_code, r.run_code, r.flag) for r in drill.runs} == {
        ("O1", "RUN", YIELD_LOSS),
        ("O2", "RUN", YIELD_LOSS),
    }
    assert drill.explained_by_losses == pytest.approx(20.0, rel=1e-4)


async def test_diamond_is_not_counted_twice(conn: asyncpg.Connection) -> None:
    # R splits into A and B, which meet again in D with 10 kg of X; D goes whole into E.
    await build(
        conn,
        "R > A 10 kg; R > B 30 kg; A > D 10 kg; B > D 30 kg; X > D 10 kg; D > E 50 kg",
        "R LOT 40 kg; A LOT 10 kg; B LOT 30 kg; D LOT 50 kg; E LOT 50 kg",
    )
    found = by_code(await recall(conn, "R"))
    assert found["D"] == pytest.approx((0.8, 40.0)) and found["E"] == pytest.approx((0.8, 40.0))
    drill = account(await recall(conn, "R"), 0.02)  # type: ignore[arg-type]
    assert (
        drill is not None and drill.end_lots == pytest.approx(40.0) and drill.unaccounted == pytest.approx(0)
    )


async def test_imported_edges_overconsuming_a_lot_pass_on_only_what_it_held(conn: asyncpg.Connection) -> None:
    # Imported edges (no runs): R held 10 kg but its children are recorded as taking 8 + 12 kg.
    await build(
        conn, "R > A 8 kg; R > B 12 kg; B > C 12 kg", "R LOT 10 kg; A LOT 8 kg; B LOT 12 kg; C LOT 12 kg"
    )
    found = by_code(await recall(conn, "R"))
    # Scaled by 10 / 20: A holds 4 kg of R, B 6 kg (of its 12), and so does C.
    expect(found, {"R": (1.0, 10.0), "A": (0.5, 4.0), "B": (0.5, 6.0), "C": (0.5, 6.0)})
    drill = account(await recall(conn, "R"), 0.02)  # type: ignore[arg-type]
    assert drill is not None
    assert [(c.lot_code, c.quantity, c.root_quantity) for c in drill.children] == [
        ("A", 8.0, 4.0),
        ("B", 12.0, 6.0),
    ]
    assert (
        drill.in_stock == 0
        and drill.end_lots == pytest.approx(10.0)
        and drill.unaccounted == pytest.approx(0)
    )


async def test_mixed_units_run(conn: asyncpg.Connection) -> None:
    # 5,000 g of spice and 11.0231 lb (5 kg) of beef into a 10 kg mix, formed into 20 pieces (ea).
    await build(
        conn,
        "SPICE > MIX 5000 g RUN1; BEEF > MIX 11.0231 lb RUN1; MIX > FG 10 kg RUN2; FG > BOX 20 ea",
        "SPICE LOT 5 kg; MIX LOT 10 kg; FG LOT 20 ea; BOX LOT 20 ea",
    )
    result = await recall(conn, "SPICE")
    found = by_code(result)
    assert found["MIX"] == pytest.approx((0.5, 5.0), rel=1e-5)
    # The pieces hold their 10 kg input (ea does not convert to kg): half of it is spice.
    assert found["FG"] == pytest.approx((0.5, 10.0), rel=1e-5)  # 10 of its 20 ea
    assert found["BOX"] == pytest.approx((0.5, 10.0), rel=1e-5)  # counted in ea from here on
    assert result is not None
    drill = account(result, 0.02)
    assert drill is not None and drill.unit == "kg"
    # FG counts in kg (its inputs); BOX's inputs are in ea: it is reported apart.
    assert drill.lots_not_in_unit == 1
    assert drill.end_lots == 0 and drill.downstream == pytest.approx(0.0, abs=1e-6)


async def test_drill_accounts_for_the_whole_lot(conn: asyncpg.Connection) -> None:
    # 1,000 kg of raw: 20 kg each into two mixes of 100 kg; MIX-1 goes whole into two 50 kg
    # goods; 40 kg of MIX-2 becomes a 38 kg good (2 kg lost), 60 kg of it stays in stock.
    await build(
        conn,
        "RAW > MIX-1 20 kg R1; RAW > MIX-2 20 kg R2; MIX-1 > FG-1A 50 kg R3; MIX-1 > FG-1B 50 kg R3;"
        "MIX-2 > FG-2 40 kg R4",
        "RAW RAW 1000 kg; MIX-1 MIX 100 kg; MIX-2 MIX 100 kg; FG-1A FG 50 kg; FG-1B FG 50 kg; FG-2 FG 38 kg",
    )
    result = await recall(conn, "RAW")
    assert result is not None
    drill = account(result, 0.02, trace_ms=1.5)
    assert drill is not None
    assert [(c.lot_code, c.quantity) for c in drill.children] == [("MIX-1", 20.0), ("MIX-2", 20.0)]
    assert drill.in_stock == pytest.approx(960.0)  # 1,000 - 40
    assert drill.downstream == pytest.approx(12.0)  # 20 % of MIX-2's 60 kg left
    assert (drill.end_lots, drill.end_lot_count) == (pytest.approx(27.6), 3)  # 10 + 10 + 7.6
    assert drill.unaccounted == pytest.approx(0.4) and drill.unaccounted_percent == pytest.approx(0.04)
    assert [(r.run_code, r.lot_code, r.flag) for r in drill.runs] == [
        ("R4", "FG-2", YIELD_LOSS),
        ("R1", "MIX-1", YIELD_GAIN),  # 20 kg in, 100 kg out: diluted, nothing lost
        ("R2", "MIX-2", YIELD_GAIN),
    ]
    assert drill.runs[0].root_lost == pytest.approx(0.4) and drill.explained_by_losses == pytest.approx(0.4)
    assert drill.within_tolerance and drill.trace_ms == 1.5
    assert not account(result, 0.0001).within_tolerance  # type: ignore[union-attr]


# --- property: both inequalities for every root of random genealogies --------------------

UNITS = ["kg", "g", "lb", "t", "ea"]
lots_st = st.lists(
    st.tuples(st.integers(1, 100_000), st.sampled_from(UNITS + ["kg"] * 4)), min_size=2, max_size=9
)
_examples = itertools.count()


@st.composite
def genealogies(draw: st.DrawFn) -> tuple[list[tuple[int, str]], list[tuple[int, int, int, str, bool]]]:
    lots = draw(lots_st)
    n = len(lots)
    pairs = [
        (p, c) for p in range(n) for c in range(n) if p != c and (p < c or draw(st.integers(0, 20)) == 0)
    ]
    chosen = draw(st.lists(st.sampled_from(pairs), max_size=3 * n, unique=True)) if pairs else []
    edges = [
        (p, c, draw(st.integers(1, 100_000)), draw(st.sampled_from(UNITS + ["kg"] * 4)), draw(st.booleans()))
        for p, c in chosen
    ]
    return lots, edges


def kg(quantity: float, uom: str) -> float | None:
    return to_unit(quantity, uom, KG)


async def _check_every_root(
    url: str, lots: list[tuple[int, str]], edges: list[tuple[int, int, int, str, bool]]
) -> None:
    prefix = f"P{next(_examples)}-"
    codes = [f"{prefix}{i}" for i in range(len(lots))]
    spec = "; ".join(
        f"{codes[p]} > {codes[c]} {q / 1000} {u}" + (f" {prefix}RUN{p}" if run else "")
        for p, c, q, u, run in edges
    )
    lot_spec = "; ".join(f"{codes[i]} LOT {q / 1000} {u}" for i, (q, u) in enumerate(lots))
    conn = await asyncpg.connect(url)
    try:
        await build(conn, spec, lot_spec)
        for code in codes:
            result = await recall(conn, code)
            assert result is not None
            for r in result.lots:  # 1: what a lot holds of the root never exceeds the lot
                if r.root_share is not None:
                    assert -1e-12 <= r.root_share <= 1 + 1e-9
                    assert r.root_quantity is not None and r.root_quantity <= r.lot.quantity * (1 + 1e-9)
            _check_flow(result)
    finally:
        await conn.close()


def _check_flow(result: RecallResult) -> None:
    """2: end lots' share x quantity + what the others still hold <= what left the root, recomputed
    here from the walk's recorded edges and quantities (all in mass units only)."""
    walk = result.walk
    if any(kg(n.quantity, n.uom) is None for n in walk.nodes.values()) or any(
        kg(e.quantity, e.uom) is None for e in walk.edges
    ):
        return
    if any(kg(q, u) is None for extra in walk.outside_inputs.values() for q, u in extra):
        return
    root = walk.root.lot_id
    out: dict[int, float] = {}
    inputs: dict[int, float] = {}
    for e in walk.edges:
        q = kg(e.quantity, e.uom) or 0.0
        out[e.parent] = out.get(e.parent, 0.0) + q
        inputs[e.child] = inputs.get(e.child, 0.0) + q
    for child, extra in walk.outside_inputs.items():
        inputs[child] = inputs.get(child, 0.0) + sum(kg(q, u) or 0.0 for q, u in extra)
    root_held = max(kg(walk.root.quantity, walk.root.uom) or 0.0, inputs.get(root, 0.0))
    left_root = min(out.get(root, 0.0), root_held)
    accounted = 0.0
    shares = {r.lot.lot_id: r.root_share or 0.0 for r in result.lots}
    for lot_id, node in walk.nodes.items():
        if lot_id == root:
            continue
        own = kg(node.quantity, node.uom) or 0.0
        accounted += shares[lot_id] * (own if lot_id not in out else max(0.0, own - out[lot_id]))
    assert accounted <= left_root * (1 + 1e-9) + 1e-9
    drill = account(result, 0.02)
    assert drill is not None and drill.unaccounted >= -1e-6 * max(1.0, drill.basis)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(genealogy=genealogies())
def test_conservation_for_every_root_of_random_genealogies(
    empty_db_url: str, genealogy: tuple[list[tuple[int, str]], list[tuple[int, int, int, str, bool]]]
) -> None:
    lots, edges = genealogy
    asyncio.run(_check_every_root(empty_db_url, lots, edges))


def test_drill_tolerance_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowviz.core.config import ConfigError, settings
    from tests.conftest import PUBLIC_KEY_ENV

    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLOWVIZ_DRILL_TOLERANCE", raising=False)
    settings.cache_clear()
    try:
        assert settings().drill_tolerance == 0.02
        for raw, expected in (("0.05", 0.05), ("0", 0.0)):
            monkeypatch.setenv("FLOWVIZ_DRILL_TOLERANCE", raw)
            settings.cache_clear()
            assert settings().drill_tolerance == expected
        for bad in ("2", "-0.1", "two"):
            monkeypatch.setenv("FLOWVIZ_DRILL_TOLERANCE", bad)
            settings.cache_clear()
            with pytest.raises(ConfigError, match="FLOWVIZ_DRILL_TOLERANCE"):
                settings()
    finally:
        settings.cache_clear()
