"""Shipments recorded through the gateway at --connections concurrent connections, against a
running system (`make run`, or any gateway at --base). Not a test: it prints figures.

Sets up a supplier, a customer with a site, our plant and --lots received lots, then records
--shipments shipments of 1 kg spread over those lots, each with its own Idempotency-Key, and
replays --replays of them. Afterwards it checks that every lot's mass balance counts exactly
the shipments acknowledged for it (none lost, none recorded twice) and prints shipments/s, P50,
P99 and max. Tokens are minted with FLOWVIZ_TOKEN_PRIVATE_KEY (or make run's key in --data-dir).

    .venv/bin/python bench/shipment_bench.py --base http://127.0.0.1:8000 --shipments 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flowviz.core import auth, keys


def signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The user-token private key: FLOWVIZ_TOKEN_PRIVATE_KEY, or make run's in --data-dir."""
    value = os.environ.get(keys.TOKEN_PRIVATE_ENV) or str(data_dir / "keys" / "token.key")
    return keys.parse_private(keys.TOKEN_PRIVATE_ENV, value)


async def setup(client: httpx.AsyncClient, tag: str, lots: int, quantity: float) -> list[str]:
    for code, roles in ((f"BS-{tag}", ["supplier"]), (f"BC-{tag}", ["customer"])):
        r = await client.post("/api/partners", json={"code": code, "name": code, "roles": roles})
        r.raise_for_status()
    for code, owner in ((f"BS-SITE-{tag}", f"BS-{tag}"), (f"BC-DC-{tag}", f"BC-{tag}"), (f"BP-{tag}", "")):
        r = await client.post("/api/locations", json={"code": code, "name": code, "partner_code": owner})
        r.raise_for_status()
    codes = [f"RAW-BENCH-{tag}-{i}" for i in range(lots)]
    for code in codes:
        r = await client.post("/api/receipts", json={
            "lot_code": code, "product": "Bench salt", "quantity": quantity, "uom": "kg",
            "supplier_code": f"BS-{tag}", "ship_from_location_code": f"BS-SITE-{tag}",
            "receiving_location_code": f"BP-{tag}", "received_at": "2026-12-01T06:00:00Z",
            "supplier_lot_code": code, "document_type": "PO", "document_number": f"PO-{code}",
        })  # fmt: skip
        r.raise_for_status()
    return codes


async def main_async(args: argparse.Namespace) -> None:
    token = auth.issue_token("admin", "admin", key=signing_key(args.data_dir), ttl_seconds=3600)
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(
        base_url=args.base, headers={"authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:
        tag = uuid.uuid4().hex[:6].upper()
        codes = await setup(client, tag, args.lots, float(args.shipments))
        jobs = [(codes[i % len(codes)], f"bench-{tag}-{i}") for i in range(args.shipments)]
        jobs += jobs[: args.replays]  # the same keys again: must replay, not record twice
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        recorded: Counter[str] = Counter()

        async def worker() -> None:
            while not queue.empty():
                lot, key = queue.get_nowait()
                if args.runs:  # the same shape as a production run, for a figure from the same moment
                    path, body = "/api/production-runs", {
                        "run_code": key.upper(), "inputs": [{"lot_code": lot, "quantity": 1, "uom": "kg"}],
                        "outputs": [{"lot_code": f"O-{key}", "kind": "MIX", "product": "x", "quantity": 1, "uom": "kg"}],
                    }  # fmt: skip
                else:
                    path, body = "/api/shipments", {
                        "lot_code": lot, "quantity": 1, "uom": "kg", "customer_code": f"BC-{tag}",
                        "ship_to_location_code": f"BC-DC-{tag}", "ship_from_location_code": f"BP-{tag}",
                        "shipped_at": "2026-12-02T06:00:00Z", "document_type": "ASN", "document_number": key,
                    }  # fmt: skip
                started = time.perf_counter()
                r = await client.post(path, json=body, headers={"idempotency-key": key})
                latencies.append(time.perf_counter() - started)
                statuses[r.status_code] += 1
                if r.status_code == 201:
                    recorded[lot] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.connections)))
        seconds = time.perf_counter() - started
        lost_or_twice = 0
        for code in codes:
            balance = (await client.get(f"/api/lots/{code}/mass-balance")).json()
            counted = balance.get("output_edges" if args.runs else "shipments", 0)
            lost_or_twice += abs(counted - recorded[code])
    ms = sorted(x * 1000 for x in latencies)
    print(f"{'production runs' if args.runs else 'shipments'}: {len(jobs)} requests ({args.replays} replays) over {args.lots} lots at "
          f"{args.connections} connections in {seconds:.1f} s: {len(jobs) / seconds:.0f}/s; "
          f"P50 {statistics.median(ms):.1f} ms, P99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms, max {ms[-1]:.1f} ms; "
          f"statuses {dict(statuses)}; lost or recorded twice: {lost_or_twice}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--shipments", type=int, default=3000)
    parser.add_argument("--replays", type=int, default=300)
    parser.add_argument("--lots", type=int, default=200)
    parser.add_argument("--runs", action="store_true", help="record 1-input production runs instead")
    args = parser.parse_args()
    if args.replays > args.shipments:
        sys.exit("--replays must not exceed --shipments")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
