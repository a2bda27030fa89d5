"""Build small genealogies from a compact spec, straight into a test database.

    await build(conn, "BEEF > MIX 30 kg R1; SPICE > MIX 10 kg R1; MIX > FG 40", lots="MIX 40 kg")

Edges: `parent > child [quantity [uom]] [run]`, separated by ";" or new lines; a chain
"A > B > C 5 kg" links each pair, all with what follows the last code (1 kg by default). Every code named becomes a lot: kind is the part of the code before
the first "-" when that is a valid kind, else LOT; quantity 100 kg unless `lots` says
otherwise ("CODE KIND QUANTITY UOM" entries separated by ";", e.g. "MIX MIX 40 kg").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import asyncpg

from flowviz.core.validation import KIND_PATTERN


@dataclass(frozen=True)
class EdgeSpec:
    parent: str
    child: str
    quantity: float
    uom: str
    run: str | None


def parse_edges(spec: str) -> list[EdgeSpec]:
    edges: list[EdgeSpec] = []
    for part in re.split(r"[;\n]", spec):
        if not part.strip():
            continue
        codes = [c.strip() for c in part.split(">")]
        *heads, last = codes
        tail = last.split()
        child, rest = tail[0], tail[1:]
        quantity, uom, run = 1.0, "kg", None
        if rest and re.fullmatch(r"[0-9.]+", rest[0]):
            quantity = float(rest.pop(0))
            if rest and not rest[0].isupper():
                uom = rest.pop(0)
        if rest:
            run = rest.pop(0)
        chain = [*heads, child]
        edges += [EdgeSpec(a, b, quantity, uom, run) for a, b in itertools.pairwise(chain)]
    return edges


def _kind(code: str) -> str:
    head = code.split("-", 1)[0]
    return head if "-" in code and KIND_PATTERN.match(head) else "LOT"


async def build(conn: asyncpg.Connection, edges: str = "", lots: str = "") -> dict[str, int]:
    """Insert the lots, runs and edges; return lot ids by code."""
    spec = parse_edges(edges)
    rows: dict[str, tuple[str, float, str]] = {}
    for e in spec:
        for code in (e.parent, e.child):
            rows.setdefault(code, (_kind(code), 100.0, "kg"))
    for entry in re.split(r"[;\n]", lots):
        if entry.strip():
            code, kind, quantity, uom = entry.split()
            rows[code] = (kind, float(quantity), uom)
    codes = list(rows)
    await conn.execute(
        "INSERT INTO lots (lot_code, kind, product, quantity, uom) "
        "SELECT c, k, 'product of ' || c, q, u FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[]) "
        "AS t (c, k, q, u)",
        codes,
        [rows[c][0] for c in codes],
        [rows[c][1] for c in codes],
        [rows[c][2] for c in codes],
    )
    found = await conn.fetch("SELECT lot_code, id FROM lots WHERE lot_code = ANY($1)", codes)
    ids: dict[str, int] = {r["lot_code"]: r["id"] for r in found}
    runs = sorted({e.run for e in spec if e.run})
    await conn.execute(
        "INSERT INTO production_runs (run_code) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", runs
    )
    await conn.execute(
        "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id) "
        "SELECT p, c, q, u, r.id FROM unnest($1::bigint[], $2::bigint[], $3::numeric[], $4::text[], $5::text[]) "
        "AS t (p, c, q, u, rc) LEFT JOIN production_runs r ON r.run_code = t.rc",
        [ids[e.parent] for e in spec],
        [ids[e.child] for e in spec],
        [e.quantity for e in spec],
        [e.uom for e in spec],
        [e.run for e in spec],
    )
    return ids


async def decide(conn: asyncpg.Connection, lot_code: str, decision: str) -> None:
    """Record a QC decision on the lot (the newest one gives its status)."""
    await conn.execute(
        "INSERT INTO users (username, role, password_hash) VALUES ('tester', 'qc', '!') "
        "ON CONFLICT (username) DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO qc_decisions (lot_id, decision, reason, decided_by) "
        "SELECT l.id, $2, 'test', u.id FROM lots l, users u WHERE l.lot_code = $1 AND u.username = 'tester'",
        lot_code,
        decision,
    )
