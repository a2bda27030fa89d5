"""Recall notification lists: from a recall's answer (the root and every lot made from it, with
the share of root material in each), every shipment of an affected lot grouped by customer and
ship-to location with the root quantity it carried, and what is still in the plant.

Quantities: a shipment of q of a lot whose root share is s carried s x q of the root (the recall's
proportional mixing); kg sums count shipments in mass units only, the others are counted apart."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from flowviz.core.db import DB
from flowviz.core.units import KG, to_unit
from flowviz.genealogy.v1 import genealogy_pb2
from services.genealogy import shipping
from services.genealogy.runs import EPSILON

_SHIPMENTS = (
    shipping.SHIPMENT
    + " WHERE s.lot_id IN (SELECT id FROM lots WHERE lot_code = ANY($1::text[]))"
    + " ORDER BY c.code, t.code, s.shipped_at, s.id"
)
# Per lot: what it gave (to children and shipments) by unit, and where it was received.
_STOCK = """
SELECT l.lot_code, l.quantity::float8 AS quantity, l.uom, g.quantities, g.uoms,
       (SELECT t.code FROM receipts r JOIN locations t ON t.id = r.location_id WHERE r.lot_id = l.id) AS location_code
FROM lots l
LEFT JOIN LATERAL (
    SELECT array_agg(quantity::float8) AS quantities, array_agg(uom) AS uoms FROM (
        SELECT uom, sum(quantity) AS quantity FROM (
            SELECT uom, quantity FROM lot_genealogy WHERE parent_lot_id = l.id
            UNION ALL SELECT uom, quantity FROM shipments WHERE lot_id = l.id) x
        GROUP BY uom) y
) g ON true
WHERE l.lot_code = ANY($1::text[])
"""


def _affected(impact: genealogy_pb2.GetRecallImpactResponse) -> dict[str, genealogy_pb2.RecallLot]:
    return {r.lot.lot_code: r for r in [impact.root, *impact.downstream]}


def _share(lot: genealogy_pb2.RecallLot) -> float | None:
    return lot.root_share if lot.HasField("root_share") else None


def _customers(
    rows: Sequence[asyncpg.Record], affected: dict[str, genealogy_pb2.RecallLot]
) -> list[genealogy_pb2.NotifiedCustomer]:
    customers: dict[str, genealogy_pb2.NotifiedCustomer] = {}
    places: dict[tuple[str, str], genealogy_pb2.NotifiedLocation] = {}
    for row in rows:  # ordered by customer, location, time
        code = row["customer_code"]
        customer = customers.get(code)
        if customer is None:
            customer = customers[code] = genealogy_pb2.NotifiedCustomer(
                customer_code=code,
                name=row["customer_name"],
                gln=row["customer_gln"],
                contact_name=row["contact_name"],
                contact_email=row["contact_email"],
                contact_phone=row["contact_phone"],
            )
        place = places.get((code, row["ship_to_location_code"]))
        if place is None:
            place = places[(code, row["ship_to_location_code"])] = customer.locations.add(
                location_code=row["ship_to_location_code"],
                name=row["ship_to_name"],
                gln=row["ship_to_gln"],
                address=row["ship_to_address"],
                city=row["ship_to_city"],
                postal_code=row["ship_to_postal_code"],
                country=row["ship_to_country"],
            )
        lot = affected[row["lot_code"]]
        share = _share(lot)
        root_quantity = None if share is None else share * row["quantity"]
        place.shipments.add(
            shipment=shipping.message(row), depth=lot.depth, root_share=share, root_quantity=root_quantity
        )
        customer.shipments += 1
        kg = to_unit(row["quantity"], row["uom"], KG)
        if kg is None:
            customer.shipments_not_in_kg += 1
            continue
        root_kg = 0.0 if share is None else share * kg
        place.quantity_kg += kg
        place.root_quantity_kg += root_kg
        customer.quantity_kg += kg
        customer.root_quantity_kg += root_kg
    return list(customers.values())


def _in_plant(
    rows: Sequence[asyncpg.Record], affected: dict[str, genealogy_pb2.RecallLot]
) -> list[genealogy_pb2.StockInPlant]:
    stock = []
    for row in rows:
        pairs = zip(row["quantities"] or [], row["uoms"] or [], strict=True)
        given = sum(to_unit(q, u, row["uom"]) or 0.0 for q, u in pairs)
        remaining = row["quantity"] - given
        if remaining <= EPSILON:
            continue
        lot = affected[row["lot_code"]]
        share = _share(lot)
        stock.append(
            genealogy_pb2.StockInPlant(
                lot=lot.lot,
                location_code=row["location_code"] or "",
                remaining=remaining,
                root_share=share,
                root_quantity=None if share is None else share * remaining,
            )
        )
    stock.sort(key=lambda s: (affected[s.lot.lot_code].depth, s.lot.lot_code))
    return stock


async def notifications(
    db: DB, impact: genealogy_pb2.GetRecallImpactResponse
) -> genealogy_pb2.GetRecallNotificationsResponse:
    """The notification list of a recall answer (GetRecallImpact's)."""
    affected = _affected(impact)
    codes = list(affected)
    shipped = await db.fetch(_SHIPMENTS, codes)
    stock_rows = await db.fetch(_STOCK, codes)
    answer = genealogy_pb2.GetRecallNotificationsResponse(
        root=impact.root.lot.lot_code,
        customers=_customers(shipped, affected),
        in_plant=_in_plant(stock_rows, affected),
        truncated=impact.truncated,
    )
    for customer in answer.customers:
        answer.shipments += customer.shipments
        answer.shipped_kg += customer.quantity_kg
        answer.root_shipped_kg += customer.root_quantity_kg
    for item in answer.in_plant:
        kg = to_unit(item.remaining, item.lot.uom, KG)
        if kg is not None:
            answer.in_plant_kg += kg
            answer.root_in_plant_kg += kg * (item.root_share if item.HasField("root_share") else 0.0)
    return answer
