"""Heavy queries cannot starve others: another user's hot trace while one viewer floods traces.

Starts `flowviz run` on free ports in a temporary data folder (the default settings, so the
per-user bound FLOWVIZ_HEAVY_CALLS is on unless --heavy-calls says otherwise), imports the
generated genealogy (flowviz.tools.generate, cached under bench/out/data/ like bench/run.py), then:

  quiet   one user's hot (cached) trace at --rate req/s for --seconds
  loaded  the same, while a viewer keeps 20 graph traces (both directions, from the bulk spice
          lots that reach thousands of lots) in flight at once for --seconds

and prints each phase's hot-trace P50/P99, the loaded/quiet P99 ratio (goal: <= 2x) and what
the viewer's traces answered (200, 429 past the bound, 504 past the deadline). Nothing is
asserted. About 2 x --seconds of load after the import.

    .venv/bin/python bench/fairness_bench.py [--lots 100000] [--seconds 10] [--heavy-calls 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from flowviz.core import auth, keys  # noqa: E402
from flowviz.core.config import DEFAULT_PORTS  # noqa: E402
from flowviz.tools.embedded import free_port  # noqa: E402

HOT = "/api/traceability/FG-DONER-X1"
FLOOD = 20  # the viewer's traces in flight at once


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


async def hot_load(client: httpx.AsyncClient, rate: int, seconds: float) -> tuple[list[float], Counter[int]]:
    """The hot trace at a fixed arrival rate (open loop: a slow answer does not slow the sending)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def one() -> None:
        sent = time.monotonic()
        try:
            status = (await client.get(HOT)).status_code
        except httpx.HTTPError:
            status = 0
        statuses[status] += 1
        if status == 200:
            latencies.append((time.monotonic() - sent) * 1000)

    tasks = []
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        tasks.append(asyncio.create_task(one()))
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    return latencies, statuses


async def flood(
    client: httpx.AsyncClient, roots: list[str], stop: asyncio.Event
) -> tuple[Counter[int], list[float]]:
    """FLOOD workers, each sending the next graph trace as soon as the last one answered."""
    statuses: Counter[int] = Counter()
    ok_ms: list[float] = []
    rng = random.Random(1)

    async def worker() -> None:
        while not stop.is_set():
            lot = rng.choice(roots)
            sent = time.monotonic()
            try:
                r = await client.get(f"/api/traceability/{lot}/graph", params={"direction": "both"})
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            statuses[status] += 1
            if status == 200:
                ok_ms.append((time.monotonic() - sent) * 1000)
            elif status == 429:
                # What a well-behaved client does with Retry-After (1 s); a flood that ignores
                # it only costs itself: a 429 is answered before any query runs.
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    await asyncio.gather(*(worker() for _ in range(FLOOD)))
    return statuses, ok_ms


async def measure(
    base: str, args: argparse.Namespace, roots: list[str], signing: Ed25519PrivateKey
) -> dict[str, object]:
    hot_token = auth.issue_token("loadtest", "admin", key=signing, ttl_seconds=600)
    viewer_token = auth.issue_token("viewer1", "viewer", key=signing, ttl_seconds=600)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {hot_token}"}, timeout=30, limits=limits) as hot,
        httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {viewer_token}"}, timeout=60, limits=limits) as viewer,
    ):  # fmt: skip
        for _ in range(20):
            await hot.get(HOT)  # warm: connections, the hot lot's cache entry
        log(f"quiet: hot trace at {args.rate}/s for {args.seconds:g}s")
        quiet, quiet_status = await hot_load(hot, args.rate, args.seconds)
        log(f"loaded: the same while a viewer keeps {FLOOD} graph traces in flight")
        stop = asyncio.Event()
        flooding = asyncio.create_task(flood(viewer, roots, stop))
        await asyncio.sleep(1.0)  # the flood under way before the measured window
        loaded, loaded_status = await hot_load(hot, args.rate, args.seconds)
        stop.set()
        viewer_status, viewer_ms = await flooding
    return {
        "quiet": {
            "n": len(quiet),
            "p50_ms": pct(quiet, 50),
            "p99_ms": pct(quiet, 99),
            "statuses": quiet_status,
        },
        "loaded": {
            "n": len(loaded),
            "p50_ms": pct(loaded, 50),
            "p99_ms": pct(loaded, 99),
            "statuses": loaded_status,
        },
        "viewer": {"statuses": viewer_status, "p50_ms": pct(viewer_ms, 50), "p99_ms": pct(viewer_ms, 99)},
    }


def import_genealogy(database_url: str, lots: int) -> list[str]:
    """The generated genealogy imported (bench/run.py's cached data); the bulk spice lots' codes."""
    import run as bench_run  # bench/run.py: the same generated data and import

    folder, _ = bench_run.dataset(lots, bench_run.SEED)
    log(f"importing {lots:,} lots")
    bench_run.import_data(database_url, folder)
    codes = (folder / "codes.txt").read_text().split()
    return [c for c in codes if "SPICE" in c] or codes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lots", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase's length")
    parser.add_argument("--rate", type=int, default=50, help="hot traces per second")
    parser.add_argument(
        "--heavy-calls", type=int, default=None, help="FLOWVIZ_HEAVY_CALLS (default: the setting's)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="flowviz-fairness-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="a-fairness-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json")  # fmt: skip
    if args.heavy_calls is not None:
        env["FLOWVIZ_HEAVY_CALLS"] = str(args.heavy_calls)
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in ("health", "lots", "genealogy", "qc"):
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    # make run keeps the keys it finds in its data folder: made here, so this script signs tokens.
    signing = keys.parse_private(
        "token.key", keys.write_keys(data / "keys")["FLOWVIZ_TOKEN_PRIVATE_KEY@lots"]
    )
    out = open(data / "run.log", "wb")  # noqa: SIM115 - closed at the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowviz.tools.cli", "run"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                print((data / "run.log").read_text()[-3000:])
                return 1
            time.sleep(0.2)
        state = json.loads((data / "running.json").read_text())
        roots = import_genealogy(state["database_url"], args.lots)
        figures = asyncio.run(measure(base, args, roots, signing))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        out.close()
    q, ld, v = figures["quiet"], figures["loaded"], figures["viewer"]
    assert isinstance(q, dict) and isinstance(ld, dict) and isinstance(v, dict)
    bound = args.heavy_calls if args.heavy_calls is not None else "default (4)"
    print(
        f"hot trace {HOT} at {args.rate}/s, {args.seconds:g}s per phase; FLOWVIZ_HEAVY_CALLS {bound}; {args.lots:,} lots"
    )
    print(f"{'phase':<8} {'n':>5} {'P50 ms':>8} {'P99 ms':>8}  statuses")
    for name, f in (("quiet", q), ("loaded", ld)):
        statuses = " ".join(f"{s}:{k}" for s, k in sorted(f["statuses"].items()))
        print(f"{name:<8} {f['n']:>5} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f}  {statuses}")
    ratio = ld["p99_ms"] / q["p99_ms"] if q["p99_ms"] else float("nan")
    print(f"loaded/quiet P99: {ratio:.2f}x (goal <= 2x)")
    viewer = " ".join(f"{s}:{k}" for s, k in sorted(v["statuses"].items()))
    print(
        f"viewer's {FLOOD}-wide graph traces: {viewer}; answered P50 {v['p50_ms']:.0f} ms, P99 {v['p99_ms']:.0f} ms"
    )
    if args.json:
        figures["ratio"] = ratio
        args.json.write_text(json.dumps(figures, default=dict, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
