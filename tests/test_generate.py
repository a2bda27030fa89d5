"""The synthetic genealogy: deterministic, shaped like a plant, consistent, and importable."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from io import BytesIO
from pathlib import Path

import asyncpg
import pytest

from flowviz.core import validation
from flowviz.tools import generate
from services.genealogy import import_events
from services.genealogy.importer import import_csv


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _grams(quantity: str) -> int:
    whole, _, frac = quantity.partition(".")
    return int(whole) * 1000 + int(frac.ljust(3, "0"))


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, generate.GenerateStats]:
    out = tmp_path_factory.mktemp("plant")
    return out, generate.generate(6000, 11, out)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate.generate(800, 5, tmp_path / "a")
    generate.generate(800, 5, tmp_path / "b")
    generate.generate(800, 6, tmp_path / "c")
    for name in ("lots.csv", "genealogy.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_counts_and_proportions(plant: tuple[Path, generate.GenerateStats]) -> None:
    out, stats = plant
    header, lots = _read(out / "lots.csv")
    assert tuple(header) == generate.LOTS_HEADER
    kinds = Counter(row[1] for row in lots)
    assert len(lots) == stats.lots == 6000
    assert dict(kinds) == stats.lots_by_kind
    assert 0.35 <= kinds["RAW"] / 6000 <= 0.45
    assert 0.35 <= kinds["MIX"] / 6000 <= 0.45
    assert 0.15 <= kinds["FG"] / 6000 <= 0.25
    header, edges = _read(out / "genealogy.csv")
    assert tuple(header) == generate.GENEALOGY_HEADER
    assert len(edges) == stats.edges
    assert 1.7 <= len(edges) / len(lots) <= 2.3
    assert len({e[4] for e in edges}) == stats.runs


def test_rows_are_valid_and_the_books_balance(plant: tuple[Path, generate.GenerateStats]) -> None:
    out, _ = plant
    _, lots = _read(out / "lots.csv")
    _, edges = _read(out / "genealogy.csv")
    quantity = {}
    produced = {}
    for code, kind, product, qty, uom, at in lots:
        assert validation.LOT_CODE_PATTERN.match(code) and validation.KIND_PATTERN.match(kind)
        assert product and uom == "kg" and at.endswith("Z")
        quantity[code] = _grams(qty)
        produced[code] = at
    assert len(quantity) == len(lots)  # codes are unique
    assert list(produced.values()) == sorted(produced.values())  # time moves forward
    consumed: Counter[str] = Counter()
    made: Counter[str] = Counter()
    inputs: defaultdict[str, set[str]] = defaultdict(set)
    runs: defaultdict[str, set[str]] = defaultdict(set)
    for parent, child, qty, uom, run in edges:
        assert parent in quantity and child in quantity and parent != child
        assert produced[parent] <= produced[child]
        assert uom == "kg" and _grams(qty) > 0
        assert parent not in inputs[child]  # no duplicate edges
        inputs[child].add(parent)
        consumed[parent] += _grams(qty)
        made[child] += _grams(qty)
        runs[run].add(child)
    assert all(consumed[code] <= quantity[code] for code in consumed)  # never used beyond what it had
    assert all(made[code] == quantity[code] for code in made)  # a child weighs what went into it
    assert all(len(children) == 1 for children in runs.values())  # one run per child lot
    assert all(not inputs[code] for code in quantity if code.startswith("RAW-"))
    mix_inputs = [len(inputs[c]) for c in quantity if c.startswith("MIX-")]
    fg_inputs = [len(inputs[c]) for c in quantity if c.startswith("FG-")]
    assert min(mix_inputs) >= 2 and max(mix_inputs) <= 6
    assert max(fg_inputs) <= 3 and all(
        p.startswith("MIX-") for c in quantity if c.startswith("FG-") for p in inputs[c]
    )
    # Mixes of mixes: genealogy several generations deep.
    depth: dict[str, int] = {}
    for code in quantity:  # file order: parents come first
        depth[code] = 1 + max((depth[p] for p in inputs[code]), default=-1)
    assert max(depth.values()) >= 4
    # A bulk spice lot feeds a large share of the mixes.
    fan_out = Counter(parent for parent, *_ in edges)
    top, children = fan_out.most_common(1)[0]
    assert top.startswith("RAW-SPICE-") and children >= 500


def test_zero_lots_writes_headers(tmp_path: Path) -> None:
    stats = generate.generate(0, 1, tmp_path)
    assert stats.lots == stats.edges == 0
    assert (tmp_path / "lots.csv").read_text() == ",".join(generate.LOTS_HEADER) + "\n"
    assert (tmp_path / "genealogy.csv").read_text() == ",".join(generate.GENEALOGY_HEADER) + "\n"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--lots", "300", "--seed", "2", "--out", str(tmp_path)]) == 0
    assert "wrote 300 lots" in capsys.readouterr().out
    assert len((tmp_path / "lots.csv").read_text().splitlines()) == 301


async def test_output_imports_cleanly(empty_db_url: str, tmp_path: Path) -> None:
    stats = generate.generate(2000, 3, tmp_path)
    conn = await asyncpg.connect(empty_db_url)
    try:
        lots, edges = (BytesIO((tmp_path / name).read_bytes()) for name in ("lots.csv", "genealogy.csv"))
        result = await import_csv(conn, lots, edges, cache=None)
        assert result.ok, result.errors[:5]
        assert (result.lots_imported, result.edges_imported, result.runs_created) == (
            stats.lots,
            stats.edges,
            stats.runs,
        )
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM lots), (SELECT count(*) FROM lot_genealogy),"
            " (SELECT count(*) FROM production_runs), (SELECT count(*) FROM lots WHERE kind = 'RAW')"
        )
        assert counts is not None
        assert tuple(counts) == (stats.lots, stats.edges, stats.runs, stats.lots_by_kind["RAW"])
    finally:
        await conn.close()


# --- partners, receipts and shipments (issue 13) ------------------------------------------


def test_trade_files_are_deterministic_and_leave_the_plant_unchanged(tmp_path: Path) -> None:
    generate.generate(800, 5, tmp_path / "a")
    generate.generate(800, 5, tmp_path / "b")
    generate.generate(800, 6, tmp_path / "c")
    for name in ("receipts.csv", "shipments.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_trade_counts_and_books(plant: tuple[Path, generate.GenerateStats]) -> None:
    out, stats = plant
    _, partners = _read(out / "partners.csv")
    _, locations = _read(out / "locations.csv")
    _, receipts = _read(out / "receipts.csv")
    _, shipments = _read(out / "shipments.csv")
    _, lots = _read(out / "lots.csv")
    _, edges = _read(out / "genealogy.csv")
    roles = Counter(p[2] for p in partners)
    assert (roles["supplier"], roles["customer"]) == (40, 400)
    assert (len(partners), len(locations), len(receipts), len(shipments)) == (
        stats.partners,
        stats.locations,
        stats.receipts,
        stats.shipments,
    )
    for p in partners:
        assert not p[3] or validation.gln(p[3])
    raw = [c for c, kind, *_ in lots if kind == "RAW"]
    assert [r[0] for r in receipts] == raw  # a receipt for each raw lot, in order
    assert all(r[5] and r[1].startswith("SUP-") for r in receipts)  # the supplier's own lot code
    assert len({(r[1], r[5]) for r in receipts}) == len(receipts)
    quantity = {code: _grams(q) for code, _, _, q, *_ in lots}
    consumed: Counter[str] = Counter()
    for parent, _, q, *_ in edges:
        consumed[parent] += _grams(q)
    shipped: Counter[str] = Counter()
    for s in shipments:
        assert s[0].startswith("FG-") and s[2] == "kg" and _grams(s[1]) > 0
        shipped[s[0]] += _grams(s[1])
    assert all(consumed[c] + shipped[c] <= quantity[c] for c in shipped)  # never beyond what remains
    fgs = [c for c, kind, *_ in lots if kind == "FG"]
    assert 0.8 <= len(shipped) / len(fgs) <= 0.95  # most finished goods ship
    assert any(shipped[c] < quantity[c] for c in shipped)  # some stays in the plant


async def test_trade_files_import(empty_db_url: str, tmp_path: Path) -> None:
    stats = generate.generate(2000, 3, tmp_path)
    conn = await asyncpg.connect(empty_db_url)
    try:
        files = {
            n: BytesIO((tmp_path / f"{n}.csv").read_bytes())
            for n in ("lots", "genealogy", *import_events.FILES)
        }
        result = await import_csv(conn, files.pop("lots"), files.pop("genealogy"), cache=None, events=files)
        assert result.ok, result.errors[:5]
        assert result.events_imported == {
            "partners": stats.partners, "locations": stats.locations,
            "receipts": stats.receipts, "shipments": stats.shipments,
        }  # fmt: skip
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM trading_partners WHERE 'supplier' = ANY(roles)) AS suppliers,"
            " (SELECT count(*) FROM receipts) AS receipts, (SELECT count(*) FROM shipments) AS shipments,"
            " (SELECT count(*) FROM lots l WHERE kind = 'RAW' AND NOT EXISTS"
            "  (SELECT 1 FROM receipts r WHERE r.lot_id = l.id)) AS raw_unreceived"
        )
        assert row is not None
        assert tuple(row) == (40, stats.receipts, stats.shipments, 0)
        # Importing the shipments again would ship more than the lots hold: refused, nothing written.
        again = BytesIO((tmp_path / "shipments.csv").read_bytes())
        result = await import_csv(conn, None, None, cache=None, events={"shipments": again})
        assert not result.ok
        assert {e.rule for e in result.errors} == {"INSUFFICIENT_QUANTITY"}
        assert all(e.file == "shipments" and e.field == "quantity" for e in result.errors)
        assert await conn.fetchval("SELECT count(*) FROM shipments") == stats.shipments
    finally:
        await conn.close()
