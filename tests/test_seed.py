"""The seed: every table has a row, the story's edges exist, and loading twice changes nothing."""

from __future__ import annotations

import psycopg

from flowviz.tools import seed
from tests.test_migrations import TABLES


def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in sorted(TABLES)}


def test_every_table_has_a_row(seeded_db_url: str) -> None:
    snap = _snapshot(seeded_db_url)
    assert all(snap[t] for t in TABLES), {t: len(rows) for t, rows in snap.items()}


def test_seed_lots_and_their_genealogy(seeded_db_url: str) -> None:
    with psycopg.connect(seeded_db_url) as conn:
        lots = dict(conn.execute("SELECT lot_code, kind FROM lots").fetchall())
        edges = set(
            conn.execute(
                "SELECT p.lot_code, c.lot_code FROM lot_genealogy e "
                "JOIN lots p ON p.id = e.parent_lot_id JOIN lots c ON c.id = e.child_lot_id"
            ).fetchall()
        )
    assert lots == {"RAW-BEEF-001": "RAW", "RAW-SPICE-001": "RAW", "MIX-BATCH-88": "MIX", "FG-DONER-X1": "FG"}
    assert edges == {
        ("RAW-BEEF-001", "MIX-BATCH-88"),
        ("RAW-SPICE-001", "MIX-BATCH-88"),
        ("MIX-BATCH-88", "FG-DONER-X1"),
    }


def test_loading_twice_changes_nothing(seeded_db_url: str) -> None:
    before = _snapshot(seeded_db_url)
    seed.load(seeded_db_url)
    seed.load(seeded_db_url)
    assert _snapshot(seeded_db_url) == before
