"""The generated plant's trading partners, locations, receipts and shipments (flowviz.tools.generate).

Files, in the importer's formats (services.genealogy.import_events):
  partners   code,name,roles,gln,contact_name,contact_email,contact_phone   (roles: a|b)
  locations  code,name,partner_code,gln,address,city,postal_code,country   (partner_code empty: ours)
  receipts   lot_code,supplier_code,ship_from_location_code,receiving_location_code,received_at,
             supplier_lot_code,document_type,document_number,expires_on
  shipments  lot_code,quantity,uom,customer_code,ship_to_location_code,ship_from_location_code,
             carrier_code,shipped_at,document_type,document_number

Master data is the same for every size: 40 suppliers (the brands named in the raw products and
distributors), 400 customers with 1-3 sites each, 5 carriers, our plant and its cold store.
Every raw lot has a receipt; nine finished goods in ten ship in 1-3 shipments the next day or
the one after, most of them whole, the rest in part (what is left stays in the plant). A
random.Random of its own (seeded from the plant's seed) keeps the plant's files unchanged.
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from io import TextIOWrapper
from pathlib import Path
from typing import Any

from flowviz.core import validation
from flowviz.core.importformat import LOCATIONS_HEADER, PARTNERS_HEADER, RECEIPTS_HEADER, SHIPMENTS_HEADER

FILES = ("partners", "locations", "receipts", "shipments")

SUPPLIERS = 40
CUSTOMERS = 400
CARRIERS = 5
PLANT = "PLANT-1"
COLD_STORE = "PLANT-1-COLD"
SHIPPED_SHARE = 0.9  # of finished goods
WHOLE_SHARE = 0.8  # of shipped finished goods: the rest ships 50-95 %
COMPANY_PREFIX = "400638"  # GLNs: prefix + 6-digit serial + GS1 check digit
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
RAW_CATEGORIES = 8  # len(generate.RAW)

_TOWNS = (
    ("Berlin", "10115", "DE"), ("Hamburg", "20095", "DE"), ("Munich", "80331", "DE"),
    ("Cologne", "50667", "DE"), ("Vienna", "1010", "AT"), ("Rotterdam", "3011", "NL"),
    ("Antwerp", "2000", "BE"), ("Lyon", "69001", "FR"), ("Milan", "20121", "IT"), ("Poznan", "60-101", "PL"),
)  # fmt: skip
_FIRST = (
    "Alpen", "Baltic", "Cedar", "Delta", "Elbe", "Falcon", "Granite", "Harbor", "Iron", "Juniper",
    "Kestrel", "Linden", "Meadow", "North", "Oak", "Pioneer", "Quarry", "River", "Summit", "Tower",
)  # fmt: skip
_TRADE = ("Foods", "Trading", "Provisions", "Wholesale", "Imports", "Distribution")
_CUSTOMER = ("Market", "Grill", "Kebab House", "Cash & Carry", "Catering", "Bistro", "Foodservice")


def gln(serial: int) -> str:
    digits = f"{COMPANY_PREFIX}{serial:06d}"
    return digits + str(validation.gs1_check_digit(digits))


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


class Trade:
    """Writes the four files; the plant calls receive() per raw lot and ship() per finished good."""

    def __init__(self, seed: int, out_dir: Path) -> None:
        self.rng = random.Random(f"flowviz-trade-{seed}")
        self._files: list[TextIOWrapper] = []
        writers = {}
        for name, header in zip(
            FILES, (PARTNERS_HEADER, LOCATIONS_HEADER, RECEIPTS_HEADER, SHIPMENTS_HEADER), strict=True
        ):
            f = open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8", buffering=1 << 20)  # noqa: SIM115
            self._files.append(f)
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            writers[name] = w
        self.receipt_out = writers["receipts"]
        self.shipment_out = writers["shipments"]
        self.receipt_rows: list[tuple[str, ...]] = []
        self.shipment_rows: list[tuple[str, ...]] = []
        self.partners = self.locations = self.receipts = self.shipments = 0
        self._master(writers["partners"], writers["locations"])

    def _master(self, partners: Any, locations: Any) -> None:
        rng = self.rng
        serial = 0
        prows: list[tuple[str, ...]] = []
        lrows: list[tuple[str, ...]] = []

        def site(code: str, name: str, owner: str) -> None:
            nonlocal serial
            serial += 1
            town, postal, country = _TOWNS[rng.randrange(len(_TOWNS))]
            with_gln = gln(serial) if rng.random() < 0.8 else ""
            lrows.append(
                (
                    code,
                    name,
                    owner,
                    with_gln,
                    f"{rng.randint(1, 250)} Industriestrasse",
                    town,
                    postal,
                    country,
                )
            )

        def partner(code: str, name: str, roles: str) -> None:
            nonlocal serial
            serial += 1
            with_gln = gln(serial) if rng.random() < 0.7 else ""
            slug = "".join(ch for ch in name.lower() if ch.isalnum())[:20]
            prows.append((code, name, roles, with_gln, f"Recall desk {name}", f"recall@{slug}.example",
                          f"+49 30 {rng.randint(1000000, 9999999)}"))  # fmt: skip

        site(PLANT, "Plant 1 receiving and production", "")
        site(COLD_STORE, "Plant 1 cold store (dispatch)", "")
        # Suppliers: each serves one raw category (round robin), 1-2 sites each.
        self.suppliers_of: list[list[str]] = [[] for _ in range(RAW_CATEGORIES)]
        self.sites_of: dict[str, list[str]] = {}
        for i in range(SUPPLIERS):
            code = f"SUP-{i + 1:03d}"
            partner(code, f"{_FIRST[i % len(_FIRST)]} {_TRADE[i % len(_TRADE)]} {i + 1}", "supplier")
            self.suppliers_of[i % RAW_CATEGORIES].append(code)
            self.sites_of[code] = [f"{code}-S{k + 1}" for k in range(rng.randint(1, 2))]
            for s in self.sites_of[code]:
                site(s, f"{code} site {s[-1]}", code)
        self.customers: list[str] = []
        for i in range(CUSTOMERS):
            code = f"CUS-{i + 1:04d}"
            name = f"{_FIRST[rng.randrange(len(_FIRST))]} {_CUSTOMER[rng.randrange(len(_CUSTOMER))]} {i + 1}"
            partner(code, name, "customer")
            self.customers.append(code)
            self.sites_of[code] = [f"{code}-DC{k + 1}" for k in range(rng.choice((1, 1, 2, 3)))]
            for s in self.sites_of[code]:
                site(s, f"{name} {s.rsplit('-', 1)[1]}", code)
        self.carriers = [f"CAR-{i + 1:02d}" for i in range(CARRIERS)]
        for i, code in enumerate(self.carriers):
            partner(code, f"{_FIRST[-1 - i]} Logistics", "carrier")
        partners.writerows(prows)
        locations.writerows(lrows)
        self.partners, self.locations = len(prows), len(lrows)

    def receive(self, lot_code: str, category: int, product: str, at: str, day: int, shelf_days: int) -> None:
        rng = self.rng
        suppliers = self.suppliers_of[category]
        supplier = suppliers[rng.randrange(len(suppliers))]
        sites = self.sites_of[supplier]
        self.receipts += 1
        expires = (EPOCH + timedelta(days=day + shelf_days)).date().isoformat()
        doc = ("PO", "ASN", "BOL", "INVOICE")[rng.randrange(4)]
        self.receipt_rows.append((
            lot_code, supplier, sites[rng.randrange(len(sites))], PLANT, at,
            f"{supplier[4:]}-{day:04d}-{rng.randrange(100000):05d}", doc, f"{doc}-{self.receipts:07d}", expires,
        ))  # fmt: skip

    def ship(self, lot_code: str, grams: int, day: int) -> None:
        rng = self.rng
        if grams < 3000 or rng.random() >= SHIPPED_SHARE:
            return
        to_ship = grams if rng.random() < WHOLE_SHARE else grams * rng.randint(50, 95) // 100
        parts = rng.choice((1, 1, 2, 3))
        customers = rng.sample(self.customers, parts)
        left = to_ship
        for k, customer in enumerate(customers):
            part = left if k == parts - 1 else to_ship // parts
            left -= part
            sites = self.sites_of[customer]
            at = EPOCH + timedelta(days=day + rng.randint(1, 2), seconds=rng.randint(5 * 3600, 20 * 3600))
            self.shipments += 1
            self.shipment_rows.append((
                lot_code, f"{part // 1000}.{part % 1000:03d}", "kg", customer, sites[rng.randrange(len(sites))],
                COLD_STORE, self.carriers[rng.randrange(CARRIERS)], _stamp(at), "ASN", f"DESADV-{self.shipments:07d}",
            ))  # fmt: skip

    def flush(self) -> None:
        self.receipt_out.writerows(self.receipt_rows)
        self.shipment_out.writerows(self.shipment_rows)
        self.receipt_rows.clear()
        self.shipment_rows.clear()

    def close(self) -> None:
        self.flush()
        for f in self._files:
            f.close()
