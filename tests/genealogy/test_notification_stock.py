"""The notification list's stock and shipment sums, computed in its one statement, over units
that convert (g, lb, kg) and one that does not (ea), on a small hand-checked genealogy.

    R (10 kg) --500 g--> A (1 kg) --0.4 kg--> F (0.4 kg)
    R --2 lb--> B (1 kg)
    R --1 kg--> P (10 ea) --1 kg--> Q (1 kg)   (kg out of an ea lot: counts nothing against it)

Shipped: R 1 kg and 500 g, A 100 g, F 0.4 kg, P 3 ea.
Left: R 10 - 0.5 - 0.90718474 - 1 (to P) - 1 - 0.5 = 6.09281526 kg; A 1 - 0.4 - 0.1 = 0.5 kg; B 1 kg;
F nothing (not listed); P 10 - 3 = 7 ea; Q 1 kg."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from services.genealogy import answers, notifications, recall
from tests.genealogy.graphs import build, decide

LB = 0.45359237


async def ship(conn: asyncpg.Connection, ids: dict[str, int], lot: str, quantity: float, uom: str) -> None:
    await conn.execute(
        """
        INSERT INTO shipments (lot_id, quantity, uom, customer_id, ship_to_location_id, ship_from_location_id,
                               shipped_at, document_type, document_number, recorded_by)
        SELECT $1, $2, $3, c.id, t.id, f.id, $4, 'ASN', $5, 'tester'
        FROM trading_partners c, locations t, locations f
        WHERE c.code = 'CUST' AND t.code = 'CUST-DC' AND f.code = 'PLANT'
        """,
        ids[lot],
        quantity,
        uom,
        datetime(2026, 12, 1, 10, len(lot), tzinfo=UTC),
        f"ASN-{lot}-{quantity}{uom}",
    )


async def test_stock_and_shipments_in_mixed_units(conn: asyncpg.Connection) -> None:
    ids = await build(
        conn,
        "R > A 500 g; A > F 0.4 kg; R > B 2 lb; R > P 1 kg; P > Q 1 kg",
        lots="R RAW 10 kg; A MIX 1 kg; F FG 0.4 kg; B MIX 1 kg; P FG 10 ea; Q FG 1 kg",
    )
    await conn.execute(
        "INSERT INTO trading_partners (code, name, roles) VALUES ('CUST', 'Customer', '{customer}')"
    )
    await conn.execute(
        "INSERT INTO locations (code, name, partner_id) SELECT 'CUST-DC', 'DC', id FROM trading_partners"
    )
    await conn.execute("INSERT INTO locations (code, name) VALUES ('PLANT', 'Plant')")
    for lot, quantity, uom in (
        ("R", 1, "kg"),
        ("R", 500, "g"),
        ("A", 100, "g"),
        ("F", 0.4, "kg"),
        ("P", 3, "ea"),
    ):
        await ship(conn, ids, lot, quantity, uom)
    found = await recall.recall(conn, "R", max_depth=50, max_nodes=10_000)
    assert found is not None
    notes = await notifications.notifications(conn, found)

    left = {s.lot.lot_code: (s.remaining, s.lot.uom) for s in notes.in_plant}
    assert left == {
        "R": (pytest.approx(10 - 0.5 - 2 * LB - 1 - 1 - 0.5), "kg"),
        "A": (pytest.approx(0.5), "kg"),
        "B": (pytest.approx(1), "kg"),
        "P": (pytest.approx(7), "ea"),
        "Q": (pytest.approx(1), "kg"),
    }
    assert [s.lot.lot_code for s in notes.in_plant] == ["R", "A", "B", "P", "Q"]  # by depth, then code
    [customer] = notes.customers
    assert (notes.shipments, customer.shipments, customer.shipments_not_in_kg) == (5, 5, 1)
    assert customer.quantity_kg == pytest.approx(1 + 0.5 + 0.1 + 0.4) == notes.shipped_kg
    shipped = [
        (n.shipment.lot_code, n.shipment.quantity, n.shipment.uom) for n in customer.locations[0].shipments
    ]
    assert shipped == [("R", 1, "kg"), ("R", 500, "g"), ("A", 100, "g"), ("F", 0.4, "kg"), ("P", 3, "ea")]
    # The root's own share is 1: its stock and shipments are root material whole.
    root = next(s for s in notes.in_plant if s.lot.lot_code == "R")
    assert root.root_quantity == pytest.approx(root.remaining)
    assert customer.locations[0].shipments[0].shipment.shipped_at.ToDatetime(tzinfo=UTC) == datetime(
        2026, 12, 1, 10, 1, tzinfo=UTC
    )


async def test_stock_lots_carry_their_effective_status_and_only_the_walk_down_truncates(
    conn: asyncpg.Connection,
) -> None:
    # R, X and Y make A, A makes F; a hold on Y blocks A and F, not R.
    await build(
        conn,
        "R > A 1 kg; X > A 1 kg; Y > A 1 kg; A > F 1 kg",
        lots="R RAW 10 kg; X RAW 10 kg; Y RAW 10 kg; A MIX 3 kg; F FG 2 kg",
    )
    await decide(conn, "Y", "hold")
    of_r = await recall.recall(conn, "R", max_depth=50, max_nodes=10)
    assert of_r is not None
    stock = {s.lot.lot_code: s.lot for s in (await notifications.notifications(conn, of_r)).in_plant}
    assert (stock["R"].effective_status, list(stock["R"].blocking)) == ("pending", [])
    assert [(lot, stock[lot].effective_status) for lot in "AF"] == [("A", "on_hold"), ("F", "on_hold")]
    assert [(b.lot_code, b.status) for b in stock["F"].blocking] == [("Y", "on_hold")]
    # Two lots at most: A's three inputs do not fit, A and F below it do. The list (what went
    # down from A) is whole; the recall answer's upstream part is not, and used to mark it cut.
    of_a = await recall.recall(conn, "A", max_depth=50, max_nodes=2)
    assert of_a is not None and not of_a.truncated
    assert not (await notifications.notifications(conn, of_a)).truncated
    impact = await answers.recall_impact(conn, "A", max_depth=50, max_nodes=2)
    assert impact is not None and impact[0].truncated
    cut = await recall.recall(conn, "A", max_depth=50, max_nodes=1)
    assert cut is not None and cut.truncated
    assert (await notifications.notifications(conn, cut)).truncated
