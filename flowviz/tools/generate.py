"""Deterministic synthetic genealogy of a food plant, written in the import CSV format.

Each simulated day receives raw lots (meat, spices, dry goods), mixes them and forms the
mixes into finished goods. Inputs are taken first in, first out, so parents are always
older than their children. Quantities are whole grams so the books balance exactly: a
child's quantity is the sum of what it consumed, and no lot gives away more than it has.
A few bulk spice lots feed a large share of all mixes, so tracing one of them reaches
thousands of descendants (the recall case the traces must handle).

Beyond the plant walls (flowviz.tools.partners_gen): about 40 suppliers, 400 customers with their
sites and a few carriers; a receipt for every raw lot and shipments for most finished goods.
They draw from a random.Random of their own, so lots.csv and genealogy.csv are the same bytes
as without them.

Same (lots, seed) gives byte-identical files: one random.Random(seed), no wall clock.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import random
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from flowviz.tools import partners_gen

LOTS_HEADER = ("lot_code", "kind", "product", "quantity", "uom", "produced_at")
GENEALOGY_HEADER = ("parent_lot_code", "child_lot_code", "quantity", "uom", "run_code")

# Raw categories: (code part, products with their suppliers, lot size in kg, shelf life in days).
RAW: tuple[tuple[str, tuple[str, ...], tuple[int, int], int], ...] = (
    ("BEEF", ("Beef trim 80/20 - Anatolia Meats", "Beef trim 90/10 - Nordfleisch", "Beef brisket - Anatolia Meats"),
     (390, 790), 6),
    ("LAMB", ("Lamb shoulder - Highland Farms", "Lamb trim 75/25 - Kiwi Lamb Co"), (390, 790), 6),
    ("CHICKEN", ("Chicken thigh - Golden Hen", "Chicken breast - Golden Hen", "Chicken thigh - Polmar Drob"),
     (390, 790), 5),
    ("SPICE", ("Doner spice blend - Bahar Spices", "Gyros seasoning - Spicemasters", "Paprika smoked - Bahar Spices"),
     (32, 70), 90),
    ("FLOUR", ("Wheat flour T550 - Muehle Weiss", "Breadcrumbs - Muehle Weiss"), (28, 55), 90),
    ("ONION", ("Onion diced frozen - Greenfield", "Onion powder - Bahar Spices"), (28, 55), 30),
    ("GARLIC", ("Garlic puree - Greenfield",), (7, 17), 30),
    ("SALT", ("Salt nitrite - Salinas", "Sea salt fine - Salinas"), (11, 26), 180),
)  # fmt: skip
MEATS = (0, 1, 2)  # indexes into RAW
SPICE = 3
EXTRAS = (4, 5, 6, 7)
MIXES = len(RAW)  # index of the mix stock next to the raw ones
MIX_SHELF_DAYS = 3
MEAT_WEIGHTS = (0.5, 0.2, 0.3)
MEAT_SHARE = 0.75  # of a mix's target weight
SPICE_SHARE = 0.02
POPULAR_SHARE = 0.3  # of mixes that take their spice from the current bulk spice lot
EXTRA_SHARE = (0.04, 0.05, 0.01, 0.015)  # each extra is in a quarter of the mixes (0-2 of 4)
# Relative weight each category is drawn by a mix: purchasing buys whatever is shortest
# relative to this, so stock follows use and little is written off.
DEMAND = (
    *(w * MEAT_SHARE for w in MEAT_WEIGHTS),
    (1 - POPULAR_SHARE) * SPICE_SHARE,
    *(share / 4 for share in EXTRA_SHARE),
)
# Species name used for the mix and finished-good products, per meat.
MIX_PRODUCTS = ("Doner meat mix beef", "Kofta mix lamb", "Gyros mix chicken")
FG_PRODUCTS = (
    ("Doner kebab cone 10 kg", "Doner kebab cone 20 kg", "Doner slices 1 kg"),
    ("Lamb kofta 2 kg", "Lamb doner cone 15 kg"),
    ("Chicken gyros cone 15 kg", "Chicken doner slices 1 kg"),
)

KIND_SHARES = (0.4, 0.4, 0.2)  # RAW, MIX, FG: with 2-6 inputs per mix and 1-3 per FG, ~2 edges a lot
LOTS_PER_DAY = 1000
POPULAR_KG = (25_000, 40_000)
REWORK_SHARE = 0.3  # of mixes that take in an earlier mix (mix of mixes: deeper genealogy)
MIN_LEFT = 1000  # grams: below this a lot counts as used up
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class GenerateStats:
    lots_by_kind: dict[str, int] = field(default_factory=dict)
    edges: int = 0
    runs: int = 0
    partners: int = 0
    locations: int = 0
    receipts: int = 0
    shipments: int = 0
    seconds: float = 0.0

    @property
    def lots(self) -> int:
        return sum(self.lots_by_kind.values())


class _Writer(Protocol):
    def writerows(self, rows: Iterable[Iterable[Any]], /) -> None: ...


def _kg(grams: int) -> str:
    return f"{grams // 1000}.{grams % 1000:03d}"


class _Plant:
    """The simulation state; lot numbers are indexes into `codes`, `left` and `day_of`."""

    def __init__(
        self,
        rng: random.Random,
        lots_out: _Writer,
        edges_out: _Writer,
        trade: partners_gen.Trade | None = None,
    ) -> None:
        self.rng = rng
        self.trade = trade
        self.lots_out = lots_out
        self.edges_out = edges_out
        self.codes: list[str] = []
        self.left = array("q")  # grams not yet consumed, per lot
        self.day_of = array("i")  # day the lot was made, per lot
        self.species = array("b")  # meat of a mix (index into MEATS), per lot; 0 for others
        # FIFO stock of each raw category, then of mixes; grams on hand in each.
        self.stock: list[deque[int]] = [deque() for _ in range(MIXES + 1)]
        self.on_hand = [0] * (MIXES + 1)
        self.raw_counts = [0] * len(RAW)
        self.popular = -1
        self.day = 0
        self.mixes = 0
        self.fgs = 0
        self.edges = 0
        self.runs = 0  # runs with at least one edge (a child with no inputs has no run)
        self.lot_rows: list[tuple[str, str, str, str, str, str]] = []
        self.edge_rows: list[tuple[str, str, str, str, str]] = []

    def _new_lot(self, code: str, kind: str, product: str, grams: int, at: str, species: int) -> int:
        n = len(self.codes)
        self.codes.append(code)
        self.left.append(grams)
        self.day_of.append(self.day)
        self.species.append(species)
        self.lot_rows.append((code, kind, product, _kg(grams), "kg", at))
        return n

    def flush(self) -> None:
        self.lots_out.writerows(self.lot_rows)
        self.edges_out.writerows(self.edge_rows)
        if self.trade:
            self.trade.flush()
        self.lot_rows.clear()
        self.edge_rows.clear()

    def new_day(self, day: int) -> None:
        """Write off stock past its shelf life (it keeps its unconsumed quantity)."""
        self.day = day
        for cat, stock in enumerate(self.stock):
            shelf = MIX_SHELF_DAYS if cat == MIXES else RAW[cat][3]
            while stock and day - self.day_of[stock[0]] > shelf:
                self.on_hand[cat] -= self.left[stock.popleft()]

    def receive(self, at: str) -> None:
        rng = self.rng
        on_hand = self.on_hand
        cat = min(range(len(RAW)), key=lambda c: on_hand[c] / DEMAND[c])  # the shortest
        name, products, (lo, hi), _ = RAW[cat]
        self.raw_counts[cat] += 1
        code = f"RAW-{name}-{self.raw_counts[cat]:06d}"
        product = products[rng.randrange(len(products))]
        if cat == SPICE and (self.popular < 0 or self.left[self.popular] < 1_000_000):
            # A bulk silo lot: thousands of mixes draw a little from it.
            grams = rng.randint(*POPULAR_KG) * 1000
            self.popular = self._new_lot(code, "RAW", product + " (bulk)", grams, at, 0)
        else:
            grams = rng.randint(lo, hi) * 1000 + rng.randrange(1000)
            self.stock[cat].append(self._new_lot(code, "RAW", product, grams, at, 0))
            on_hand[cat] += grams
        if self.trade:
            self.trade.receive(code, cat, product, at, self.day, RAW[cat][3])

    def _take(self, cat: int, i: int, want: int, taken: list[tuple[int, int]]) -> bool:
        """Consume up to `want` grams from the i-th oldest lot in stock; True if it is used up."""
        stock = self.stock[cat]
        n = stock[i]
        left = self.left[n]
        got = want if want < left else left
        left -= got
        self.left[n] = left
        taken.append((n, got))
        if left < MIN_LEFT:
            del stock[i]
            got += left
        self.on_hand[cat] -= got
        return left < MIN_LEFT

    def _take_oldest(self, cat: int, wants: list[int], taken: list[tuple[int, int]]) -> None:
        """One draw from each of the len(wants) oldest lots (distinct lots: no duplicate edges)."""
        i = 0
        for want in wants[: len(self.stock[cat])]:
            if not self._take(cat, i, want, taken):
                i += 1

    def _edges(self, child: str, run: str, taken: list[tuple[int, int]]) -> int:
        codes = self.codes
        rows = self.edge_rows
        total = 0
        for n, grams in taken:
            rows.append((codes[n], child, _kg(grams), "kg", run))
            total += grams
        self.edges += len(taken)
        self.runs += bool(taken)
        return total

    def mix(self, at: str) -> None:
        rng = self.rng
        stock = self.stock
        target = rng.randint(250_000, 650_000)  # grams
        taken: list[tuple[int, int]] = []
        meat = rng.choices(MEATS, MEAT_WEIGHTS)[0]
        if not stock[meat]:  # this meat is out: use whichever is in stock
            meat = next((m for m in MEATS if stock[m]), meat)
        pieces = 2 if rng.random() < 0.6 else 1
        meat_grams = int(target * MEAT_SHARE) // pieces
        self._take_oldest(meat, [meat_grams + rng.randrange(1000) for _ in range(pieces)], taken)
        spice_grams = int(target * SPICE_SHARE) + rng.randrange(1000)
        if self.popular >= 0 and rng.random() < POPULAR_SHARE and self.left[self.popular] > spice_grams:
            self.left[self.popular] -= spice_grams
            taken.append((self.popular, spice_grams))
        elif stock[SPICE]:
            self._take(SPICE, 0, spice_grams, taken)
        for extra in rng.sample(EXTRAS, rng.randint(0, 2)):
            if stock[extra]:
                want = int(target * EXTRA_SHARE[extra - EXTRAS[0]]) + rng.randrange(1, 1000)
                self._take(extra, 0, want, taken)
        if stock[MIXES] and (len(taken) < 2 or rng.random() < REWORK_SHARE):
            # Rework: part of a recent mix goes into this one.
            i = rng.randrange(min(len(stock[MIXES]), 20))
            self._take(MIXES, i, rng.randint(20_000, 150_000), taken)
        self.mixes += 1
        code = f"MIX-{self.mixes:06d}"
        grams = self._edges(code, f"RUN-{self.mixes + self.fgs:06d}", taken)
        n = self._new_lot(code, "MIX", MIX_PRODUCTS[meat], grams, at, meat)
        if grams >= MIN_LEFT:
            stock[MIXES].append(n)
            self.on_hand[MIXES] += grams

    def finish(self, at: str) -> None:
        rng = self.rng
        k = rng.choices((1, 2, 3), (0.2, 0.5, 0.3))[0]
        taken: list[tuple[int, int]] = []
        self._take_oldest(MIXES, [rng.randint(300_000, 650_000) for _ in range(k)], taken)
        species = self.species[taken[0][0]] if taken else 0
        self.fgs += 1
        code = f"FG-{self.fgs:06d}"
        grams = self._edges(code, f"RUN-{self.mixes + self.fgs:06d}", taken)
        products = FG_PRODUCTS[species]
        self._new_lot(code, "FG", products[rng.randrange(len(products))], grams, at, 0)
        if self.trade:
            self.trade.ship(code, grams, self.day)


def _day_plan(rng: random.Random, size: int) -> list[int]:
    """Kinds (0 RAW, 1 MIX, 2 FG) of one day in order: receiving, then mixing, then forming."""
    raw = round(size * KIND_SHARES[0] * rng.uniform(0.95, 1.05))
    mix = round(size * KIND_SHARES[1] * rng.uniform(0.95, 1.05))
    raw, mix = min(raw, size), min(mix, size - min(raw, size))
    return [0] * raw + [1] * mix + [2] * (size - raw - mix)


# Seconds after midnight each phase of the day starts and how long it lasts.
PHASES = ((5 * 3600, 4 * 3600), (9 * 3600, 6 * 3600), (15 * 3600, 7 * 3600))


def generate(lots: int, seed: int, out_dir: Path, *, progress: bool = False) -> GenerateStats:
    """Write out_dir/lots.csv and out_dir/genealogy.csv with `lots` lots; return the counts."""
    if lots < 0:
        raise ValueError("lots must be 0 or more")
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with (
        contextlib.ExitStack() as stack,
        open(out_dir / "lots.csv", "w", newline="", encoding="utf-8", buffering=1 << 20) as lf,
        open(out_dir / "genealogy.csv", "w", newline="", encoding="utf-8", buffering=1 << 20) as gf,
    ):
        lots_out = csv.writer(lf, lineterminator="\n")
        edges_out = csv.writer(gf, lineterminator="\n")
        lots_out.writerow(LOTS_HEADER)
        edges_out.writerow(GENEALOGY_HEADER)
        trade = partners_gen.Trade(seed, out_dir)
        stack.callback(trade.close)
        plant = _Plant(rng, lots_out, edges_out, trade)
        done = day = 0
        while done < lots:
            plan = _day_plan(rng, min(LOTS_PER_DAY, lots - done))
            plant.new_day(day)
            date = (EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
            per_phase = [plan.count(k) for k in range(3)]
            seen = [0, 0, 0]
            for kind in plan:
                start, length = PHASES[kind]
                t = start + seen[kind] * length // max(per_phase[kind], 1)
                seen[kind] += 1
                at = f"{date}{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z"
                if kind == 0:
                    plant.receive(at)
                elif kind == 1:
                    plant.mix(at)
                else:
                    plant.finish(at)
            done += len(plan)
            day += 1
            plant.flush()
            if progress and (day % 100 == 0 or done == lots):
                print(f"\rgenerated {done:,} of {lots:,} lots", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    return GenerateStats(
        lots_by_kind={"RAW": sum(plant.raw_counts), "MIX": plant.mixes, "FG": plant.fgs},
        edges=plant.edges,
        runs=plant.runs,
        partners=trade.partners,
        locations=trade.locations,
        receipts=trade.receipts,
        shipments=trade.shipments,
        seconds=time.monotonic() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flowviz generate", description="Write a synthetic lot genealogy as lots.csv + genealogy.csv."
    )
    parser.add_argument("--lots", type=int, default=10_000, help="number of lots (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder (default: current)")
    args = parser.parse_args(argv)
    if args.lots < 0:
        parser.error("--lots must be 0 or more")
    stats = generate(args.lots, args.seed, args.out, progress=True)
    kinds = ", ".join(f"{k} {n:,}" for k, n in stats.lots_by_kind.items())
    print(
        f"wrote {stats.lots:,} lots ({kinds}), {stats.edges:,} edges, {stats.partners:,} partners, "
        f"{stats.locations:,} locations, {stats.receipts:,} receipts and {stats.shipments:,} shipments "
        f"to {args.out} in {stats.seconds:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
