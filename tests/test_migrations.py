"""Migrations up from empty, down and up again; the constraints the schema promises."""

from __future__ import annotations

import psycopg
import pytest

from flowviz.tools import migrate
from tests.conftest import Servers

TABLES = {
    "lots",
    "lot_genealogy",
    "phases",
    "production_runs",
    "qc_decisions",
    "qc_gates",
    "scenarios",
    "streams",
    "users",
}
# Ours beyond the seed's nine.
ALL_TABLES = TABLES | {
    "audit_log",
    "qc_lot_blocks",
    "qc_lot_status",
    "import_overrides",
    "run_voids",
    "voided_edges",
    "lot_corrections",
    "trading_partners",
    "locations",
    "receipts",
    "shipments",
    "event_outbox",
    "event_subscriptions",
    "event_deliveries",
    "event_fanout_cursor",
    "genealogy_event_blocks",
    "genealogy_event_cursor",
}


@pytest.fixture
def blank_url(servers: Servers) -> str:
    with servers.admin() as conn:
        conn.execute("DROP DATABASE IF EXISTS blank WITH (FORCE)")
        conn.execute("CREATE DATABASE blank")
    return servers.url("blank")


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows} - {"alembic_version"}


def test_upgrade_from_empty_creates_the_nine_tables(blank_url: str) -> None:
    assert _tables(blank_url) == set()
    migrate.upgrade(blank_url)
    assert _tables(blank_url) == ALL_TABLES
    with psycopg.connect(blank_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0016",)


def test_downgrade_to_base_and_up_again(blank_url: str) -> None:
    migrate.upgrade(blank_url)
    migrate.downgrade(blank_url, "base")
    assert _tables(blank_url) == set()
    migrate.upgrade(blank_url)
    assert _tables(blank_url) == ALL_TABLES


def test_upgrade_twice_is_a_no_op(blank_url: str) -> None:
    migrate.upgrade(blank_url)
    migrate.upgrade(blank_url)
    assert _tables(blank_url) == ALL_TABLES


def test_indexes_on_lot_code_and_both_edge_ends(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        defs = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")]
    assert any("lots_lot_code_key" in d and "(lot_code)" in d for d in defs)
    assert any("lot_genealogy" in d and "(parent_lot_id)" in d for d in defs)
    assert any("lot_genealogy" in d and "(child_lot_id)" in d for d in defs)


def _insert_lot(conn: psycopg.Connection, code: str) -> int:
    row = conn.execute(
        "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES (%s, 'RAW', 'x', 1, 'kg') RETURNING id",
        (code,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_lot_cannot_be_its_own_parent(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        lot = _insert_lot(conn, "A-1")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) VALUES (%s, %s, 1, 'kg')",
                (lot, lot),
            )


def test_lot_code_is_unique_and_edges_need_existing_lots(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        _insert_lot(conn, "A-1")
        with pytest.raises(psycopg.errors.UniqueViolation):
            _insert_lot(conn, "A-1")
    with psycopg.connect(empty_db_url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(
            "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) VALUES (1, 999, 1, 'kg')"
        )


def test_edges_carry_positive_quantities_with_units(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        a, b = _insert_lot(conn, "A-1"), _insert_lot(conn, "B-1")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom) VALUES (%s, %s, 0, 'kg')",
                (a, b),
            )
