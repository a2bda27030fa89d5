"""The FSMA 204 sortable spreadsheet for one product over 30 days, streamed through the gateway:
rows/s, time to the first byte, and the genealogy service's and the gateway's RSS before and
after (flat memory: the export is rendered from a server-side cursor in 64 KiB pieces). Not a
test: it prints figures.

By default it starts its own system (embedded PostgreSQL and Valkey on free ports, every
service and the gateway, as the tests do), writes --lots received lots of one product over 30
days into it with SQL (a run per lot mixing two of them into a product of its own, and two
shipments of each output), then asks GET /api/fsma204 for both products over the 30 days:
--lots receipts + 2 x --lots transformation rows + 2 x --lots shipments; and once GET /api/epcis
for the same (events/s, for comparison).

    .venv/bin/python bench/fsma204_bench.py --lots 20000       # 100,000 rows
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowviz.tools import migrate, seed
from flowviz.tools.embedded import Postgres, Valkey, free_port
from tests.conftest import Servers, add_users, bearer, running_system

DATA = """
WITH p AS (
    INSERT INTO trading_partners (code, name, roles, contact_phone)
    VALUES ('FB-SUP-{t}', 'Bench Farms {t}', ARRAY['supplier'], '+49 30 1234'),
           ('FB-CUS-{t}', 'Bench Retail {t}', ARRAY['customer'], '+49 40 5678')
    RETURNING id, code
)
INSERT INTO locations (code, name, partner_id, address, city, postal_code, country)
SELECT 'FB-SITE-' || code, 'Site of ' || code, id, 'Feldweg 1', 'Potsdam', '14467', 'DE' FROM p
UNION ALL SELECT 'FB-PLANT-{t}', 'Bench plant {t}', NULL, 'Werkstr. 2', 'Berlin', '10115', 'DE';
INSERT INTO streams (code, name) VALUES ('FB-{t}', 'Bench line {t}');
INSERT INTO lots (lot_code, kind, product, quantity, uom, produced_at)
SELECT 'FB-R-{t}-' || g, 'RAW', 'Bench spinach {t}', 100, 'kg', {start} + g * interval '2 minutes'
FROM generate_series(1, {n}) g;
INSERT INTO receipts (lot_id, supplier_id, ship_from_location_id, location_id, received_at, supplier_lot_code,
                      document_type, document_number, recorded_by)
SELECT l.id, (SELECT id FROM trading_partners WHERE code = 'FB-SUP-{t}'),
       (SELECT id FROM locations WHERE code = 'FB-SITE-FB-SUP-{t}'), (SELECT id FROM locations WHERE code = 'FB-PLANT-{t}'),
       l.produced_at, 'S-' || l.lot_code, 'BOL', 'BOL-' || l.lot_code, 'bench'
FROM lots l WHERE l.lot_code LIKE 'FB-R-{t}-%';
INSERT INTO production_runs (run_code, stream_id, started_at, ended_at)
SELECT 'FB-RUN-{t}-' || g, (SELECT id FROM streams WHERE code = 'FB-{t}'),
       {start} + g * interval '2 minutes' + interval '30 seconds', {start} + g * interval '2 minutes' + interval '1 minute'
FROM generate_series(1, {n}) g;
INSERT INTO lots (lot_code, kind, product, quantity, uom, stream_id, produced_at)
SELECT 'FB-O-{t}-' || g, 'FG', 'Bench salad {t}', 20, 'kg', (SELECT id FROM streams WHERE code = 'FB-{t}'),
       {start} + g * interval '2 minutes' + interval '1 minute'
FROM generate_series(1, {n}) g;
INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id)
SELECT r.id, o.id, 10, 'kg', pr.id
FROM generate_series(1, {n}) g CROSS JOIN LATERAL (VALUES (g, g), (g, g % {n} + 1)) AS i(g, k)
JOIN lots r ON r.lot_code = 'FB-R-{t}-' || i.k
JOIN lots o ON o.lot_code = 'FB-O-{t}-' || i.g
JOIN production_runs pr ON pr.run_code = 'FB-RUN-{t}-' || i.g;
INSERT INTO shipments (lot_id, quantity, uom, customer_id, ship_to_location_id, ship_from_location_id, shipped_at,
                       document_type, document_number, recorded_by)
SELECT o.id, 5, 'kg', (SELECT id FROM trading_partners WHERE code = 'FB-CUS-{t}'),
       (SELECT id FROM locations WHERE code = 'FB-SITE-FB-CUS-{t}'), (SELECT id FROM locations WHERE code = 'FB-PLANT-{t}'),
       o.produced_at + k * interval '10 seconds', 'ASN', 'ASN-' || o.lot_code || '-' || k, 'bench'
FROM lots o, generate_series(1, 2) k WHERE o.lot_code LIKE 'FB-O-{t}-%';
ANALYZE;
"""
START = "timestamptz '2026-10-01T00:00:00Z'"


def rss(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lots", type=int, default=20000, help="received lots (rows: 5 x lots)")
    parser.add_argument("--repeat", type=int, default=3, help="requests (the best is reported, all printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsma204-bench-") as folder:
        tmp = Path(folder)
        pg = Postgres(tmp / "pg", free_port())
        pg.init(fast=True)
        pg.start(fast=True)
        vk = Valkey(tmp / "valkey", free_port())
        vk.start()
        (tmp / "logs").mkdir()
        try:
            migrate.upgrade(pg.url)
            seed.load(pg.url)
            add_users(pg.url)
            t = uuid.uuid4().hex[:6].upper()
            started = time.perf_counter()
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(DATA.format(t=t, n=args.lots, start=START).encode())
            print(f"data: {5 * args.lots} events written in {time.perf_counter() - started:.1f} s")
            with running_system(Servers(pg, vk, tmp), pg.url) as system:
                procs = {name: psutil.Process(system.procs[name].pid) for name in ("genealogy", "gateway")}
                params = [("product", f"Bench spinach {t}"), ("product", f"Bench salad {t}"),
                          ("from", "2026-10-01"), ("to", "2026-10-30")]  # fmt: skip
                with httpx.Client(base_url=system.base, headers=bearer("ada"), timeout=120) as http:
                    for i in range(args.repeat):
                        before = {name: rss(p) for name, p in procs.items()}
                        started = time.perf_counter()
                        first = 0.0
                        rows, size, pieces = -1, 0, 0
                        with http.stream("GET", "/api/fsma204", params=params) as r:
                            r.raise_for_status()
                            for piece in r.iter_bytes():
                                if not first:
                                    first = time.perf_counter() - started
                                rows += piece.count(b"\n")
                                size += len(piece)
                                pieces += 1
                        took = time.perf_counter() - started
                        after = {name: rss(p) for name, p in procs.items()}
                        memory = ", ".join(f"{n} RSS {before[n]:.0f} -> {after[n]:.0f} MiB" for n in procs)
                        print(
                            f"request {i + 1}: {rows} rows, {size / 2**20:.1f} MiB in {took:.2f} s = "
                            f"{rows / took:,.0f} rows/s; first byte {first * 1000:.0f} ms; {memory}"
                        )
                    # The same request as one EPCIS 2.0 document (no goal; for comparison).
                    started = time.perf_counter()
                    r = http.get("/api/epcis", params=params)
                    r.raise_for_status()
                    took = time.perf_counter() - started
                    events = len(r.json()["epcisBody"]["eventList"])
                    print(
                        f"EPCIS: {events} events, {len(r.content) / 2**20:.1f} MiB in {took:.2f} s = "
                        f"{events / took:,.0f} events/s; genealogy RSS {rss(procs['genealogy']):.0f} MiB"
                    )
        finally:
            vk.stop()
            pg.stop()


if __name__ == "__main__":
    main()
