"""What a client sees when `make run`'s PostgreSQL is killed (kill -9) under a steady load.

Starts `flowviz run` on free ports in a temporary data folder, sends a fixed rate of uncached
reads (a lot search) and cached reads (a trace), kills the embedded PostgreSQL's whole process
group, and prints per half-second window: requests, answers by status, P50 and P99 latency, for
each kind. The supervisor restarts PostgreSQL; the pools reconnect through their gates.

    .venv/bin/python bench/outage_bench.py [--rate 50] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core import auth, keys  # noqa: E402
from flowviz.core.config import DEFAULT_PORTS  # noqa: E402
from flowviz.tools.embedded import free_port  # noqa: E402

ROUTES = {"uncached": "/api/lots?lot_code_prefix=RAW", "cached": "/api/traceability/FG-DONER-X1"}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


def kill_postgres(data: Path) -> None:
    pid = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)


async def measure(
    base: str, token: str, data: Path, run: subprocess.Popen[bytes], args: argparse.Namespace
) -> list[tuple[float, str, int, float]] | None:
    samples: list[tuple[float, str, int, float]] = []
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=10
    ) as c:
        deadline = time.monotonic() + 180
        while True:
            try:
                if (await c.get("/api/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or run.poll() is not None:
                return None
            await asyncio.sleep(0.2)
        await c.get(ROUTES["cached"])

        async def one(kind: str, start: float) -> None:
            sent = time.monotonic()
            try:
                status = (await c.get(ROUTES[kind])).status_code
            except httpx.HTTPError:
                status = 0
            samples.append((sent - start, kind, status, (time.monotonic() - sent) * 1000))

        start = time.monotonic()
        tasks = []
        killed = False
        step = 1 / args.rate
        n = 0
        while (now := time.monotonic()) - start < args.seconds:
            if not killed and now - start >= args.kill_at:
                kill_postgres(data)
                killed = True
            for kind in ROUTES:
                tasks.append(asyncio.create_task(one(kind, start)))
            n += 1
            await asyncio.sleep(max(0.0, start + n * step - time.monotonic()))
        await asyncio.gather(*tasks)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=50, help="requests/s of each kind")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--kill-at", type=float, default=3.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="flowviz-outage-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="an-outage-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json")  # fmt: skip
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in ("health", "lots", "genealogy", "qc"):
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    # make run keeps the keys it finds in its data folder: made here, so this script can sign in.
    signing = keys.parse_private(
        "token.key", keys.write_keys(data / "keys")["FLOWVIZ_TOKEN_PRIVATE_KEY@lots"]
    )
    token = auth.issue_token("loadtest", "admin", key=signing, ttl_seconds=900)
    log = open(data / "run.log", "wb")  # noqa: SIM115 - closed at the end
    run = subprocess.Popen(
        [sys.executable, "-m", "flowviz.tools.cli", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    samples = None
    try:
        samples = asyncio.run(measure(base, token, data, run, args))
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        log.close()
    if samples is None:
        print((data / "run.log").read_text()[-3000:])
        return 1
    windows: dict[tuple[int, str], list[tuple[int, float]]] = defaultdict(list)
    for t, kind, status, ms in samples:
        windows[(int(t * 2), kind)].append((status, ms))
    print(f"PostgreSQL killed (kill -9) at t={args.kill_at:.1f}s; {args.rate} req/s of each kind")
    print(f"{'t (s)':>6} {'kind':>9} {'n':>4}  {'statuses':<22} {'P50 ms':>7} {'P99 ms':>7}")
    for (w, kind), got in sorted(windows.items()):
        counts = Counter(s for s, _ in got)
        ms = [m for _, m in got]
        statuses = " ".join(f"{s}:{k}" for s, k in sorted(counts.items()))
        print(
            f"{w / 2:>6.1f} {kind:>9} {len(got):>4}  {statuses:<22} {pct(ms, 50):>7.1f} {pct(ms, 99):>7.1f}"
        )
    restarted = [line for line in (data / "run.log").read_text().splitlines() if line.startswith("!!!")]
    print("\n".join(restarted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
