"""Heavy queries cannot starve others: another user's hot trace while one viewer floods traces.

Starts `flowviz run` on free ports in a temporary data folder (the default settings, so the
per-user bound FLOWVIZ_HEAVY_CALLS is on unless --heavy-calls says otherwise), imports the
generated genealogy (flowviz.tools.generate, cached under bench/out/data/ like bench/run.py), then:

  quiet   one user's hot (cached) trace at --rate req/s for --seconds
  loaded  the same, while a viewer keeps 20 graph traces (both directions, from the bulk spice
          lots that reach thousands of lots) in flight at once for --seconds

and prints each phase's hot-trace P50/P99 as the client saw it and inside the gateway (its
access log: what is not in there was spent before the app got the request, waiting for a CPU),
the CPU seconds each part of the system (and each client) used in the phase, the loaded/quiet
P99 ratio (goal: <= 2x) and what the viewer's traces answered (200, 429 past the bound, 504 past
the deadline). The viewer runs in a process of its own, as another user's browser would: in one
process, reading its answers took the CPU from the hot trace's own timing. Nothing is asserted.
About 2 x --seconds of load after the import; --heavy-calls 4,2 runs it all for each bound.

`--viewer notify` floods with recall notification lists instead, `--viewer biggest` with the
largest graph trace there is (10,000 lots), each built anew rather than read from the cache.

    .venv/bin/python bench/fairness_bench.py [--lots 100000] [--seconds 10] [--heavy-calls 4,2]
        [--viewer graph|notify|biggest]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil
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


class KeepAlive:
    """A minimal HTTP/1.1 client for the hot trace: keep-alive connections, one GET at a time on
    each. httpx spends about 3 ms of CPU a request; on a busy machine the measuring client then
    lags behind its own schedule and its lag is counted as the server's. This one spends a
    fraction of that, so the hot figures are the server's."""

    def __init__(self, base: str, token: str) -> None:
        url = httpx.URL(base)
        self.host, self.port = url.host, url.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> int:
        """The status of GET `path` (its body read and dropped)."""
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return 0
        self.idle.append((reader, writer))
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def hot_load(client: KeepAlive, rate: int, seconds: float) -> tuple[list[float], Counter[int]]:
    """The hot trace at a fixed arrival rate (open loop: a slow answer does not slow the sending)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def one() -> None:
        sent = time.monotonic()
        status = await client.get(HOT)
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


# What the viewer floods with. graph: graph traces (cached after the first of each lot).
# notify: recall notification lists; biggest: the graph trace of the spice lot that reaches most
# lots, up to 10,000 of them (4.8 MB of JSON on 100,000 lots). Those two with a max_nodes of
# their own each, so that every one is built, not read from the cache (as right after a hold on
# a spice lot, which drops those answers).
VIEWS = ("graph", "notify", "biggest")


def view(rng: random.Random, kind: str, lot: str) -> tuple[str, dict[str, Any]]:
    if kind == "notify":
        return f"/api/recall/{lot}/notifications", {"max_nodes": rng.randint(5_000, 10_000)}
    if kind == "biggest":
        return f"/api/traceability/{lot}/graph", {
            "direction": "both",
            "max_nodes": rng.randint(9_000, 10_000),
        }
    return f"/api/traceability/{lot}/graph", {"direction": "both"}


async def flood(
    client: httpx.AsyncClient, roots: list[str], stop: EventLike, started: EventLike, kind: str = "graph"
) -> tuple[Counter[int], list[float], int]:
    """FLOOD workers, each sending the next heavy call as soon as the last one answered."""
    statuses: Counter[int] = Counter()
    ok_ms: list[float] = []
    received = [0]
    rng = random.Random(1)

    async def worker() -> None:
        while not stop.is_set():
            lot = rng.choice(roots)
            sent = time.monotonic()
            started.set()
            try:
                path, params = view(rng, kind, lot)
                r = await client.get(path, params=params)
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            statuses[status] += 1
            if status == 200:
                ok_ms.append((time.monotonic() - sent) * 1000)
                received[0] += len(r.content)
            elif status == 429:
                # What a well-behaved client does with Retry-After (1 s); a flood that ignores
                # it only costs itself: a 429 is answered before any query runs.
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    await asyncio.gather(*(worker() for _ in range(FLOOD)))
    return statuses, ok_ms, received[0]


class EventLike(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...


def viewer_process(
    base: str, token: str, roots: list[str], stop: EventLike, started: EventLike, out: Any, kind: str
) -> None:
    """The viewer in a process of its own, as another user's browser would be: reading its large
    answers must not take the hot trace's client's CPU (in one process, the hot trace's timing
    measured this script's own event loop as much as the server)."""

    async def run() -> tuple[Counter[int], list[float], int]:
        limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=FLOOD)
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as viewer:
            return await flood(viewer, roots, stop, started, kind)

    statuses, ok_ms, received = asyncio.run(run())
    used = os.times()
    out.put((dict(statuses), ok_ms, received, used.user + used.system))


def component(proc: psutil.Process) -> str:
    """Which part of the running system a process is."""
    line = " ".join(proc.cmdline())
    for name in ("gateway", "lots", "genealogy", "qc", "health", "events"):
        if f"-m {name}" in line or f"services.{name}" in line:
            return name
    if "postgres" in line:
        return "postgres"
    return "valkey" if "valkey" in line else "other"


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part of the system under `root`."""
    used: Counter[str] = Counter()
    for proc in psutil.Process(root).children(recursive=True):
        try:
            times = proc.cpu_times()
            used[component(proc)] += times.user + times.system
        except psutil.Error:
            continue
    return dict(used)


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in sorted(after)}


def served_ms(log_file: Path, path: str, since: float, until: float) -> list[float]:
    """How long the gateway itself took (its access log) over `path` in [since, until) (epoch):
    the part of a request's time spent inside the app, not queued for a CPU before it."""
    found = []
    for line in log_file.read_text(errors="replace").splitlines():
        if '"gateway.access"' not in line or path not in line:
            continue
        entry = json.loads(line)
        at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
        if since <= at < until and entry["path"] == path:
            found.append(float(entry["duration_ms"]))
    return found


async def biggest(base: str, token: str, roots: list[str]) -> str:
    """The lot among `roots` whose 10,000-lot graph trace is the largest."""
    sizes = []
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for lot in roots:
            r = await client.get(
                f"/api/traceability/{lot}/graph", params={"direction": "both", "max_nodes": 10_000}
            )
            sizes.append((len(r.content), lot))
    size, lot = max(sizes)
    log(f"biggest: {lot}, a {size / 1e6:.1f} MB graph")
    return lot


async def measure(
    base: str,
    args: argparse.Namespace,
    roots: list[str],
    signing: Ed25519PrivateKey,
    root: int,
    log_file: Path,
) -> dict[str, object]:
    hot_token = auth.issue_token("loadtest", "admin", key=signing, ttl_seconds=600)
    viewer_token = auth.issue_token("viewer1", "viewer", key=signing, ttl_seconds=600)
    hot = KeepAlive(base, hot_token)
    try:
        for _ in range(20):
            await hot.get(HOT)  # warm: the hot lot's cache entry
        log(f"quiet: hot trace at {args.rate}/s for {args.seconds:g}s")
        cpu0, mine0, t0 = cpu_seconds(root), sum(os.times()[:2]), time.time()
        quiet, quiet_status = await hot_load(hot, args.rate, args.seconds)
        cpu1, mine1, t1 = cpu_seconds(root), sum(os.times()[:2]), time.time()
        if args.viewer == "biggest":
            roots = [await biggest(base, viewer_token, roots[:30])]
        log(f"loaded: the same while a viewer (its own process) keeps {FLOOD} {args.viewer} calls in flight")
        ctx = multiprocessing.get_context("spawn")
        stop, started, out = ctx.Event(), ctx.Event(), ctx.Queue()
        viewer = ctx.Process(
            target=viewer_process, args=(base, viewer_token, roots, stop, started, out, args.viewer)
        )
        viewer.start()
        await asyncio.to_thread(started.wait, 60)
        await asyncio.sleep(1.0)  # the flood under way before the measured window
        cpu2, mine2, t2 = cpu_seconds(root), sum(os.times()[:2]), time.time()
        loaded, loaded_status = await hot_load(hot, args.rate, args.seconds)
        cpu3, mine3, t3 = cpu_seconds(root), sum(os.times()[:2]), time.time()
        stop.set()
        statuses, viewer_ms, received, viewer_cpu = await asyncio.to_thread(out.get, True, 120)
        await asyncio.to_thread(viewer.join, 30)
    finally:
        hot.close()
    viewer_status: Counter[int] = Counter(statuses)
    served_quiet = served_ms(log_file, HOT, t0, t1)
    served_loaded = served_ms(log_file, HOT, t2, t3)
    return {
        "quiet": {
            "n": len(quiet),
            "p50_ms": pct(quiet, 50),
            "p99_ms": pct(quiet, 99),
            "statuses": quiet_status,
            "served_p50_ms": pct(served_quiet, 50),
            "served_p99_ms": pct(served_quiet, 99),
            "cpu_s": {**cpu_delta(cpu0, cpu1), "bench client": round(mine1 - mine0, 2)},
        },
        "loaded": {
            "n": len(loaded),
            "p50_ms": pct(loaded, 50),
            "p99_ms": pct(loaded, 99),
            "statuses": loaded_status,
            "served_p50_ms": pct(served_loaded, 50),
            "served_p99_ms": pct(served_loaded, 99),
            # The viewer's whole run (from just before this phase to just after).
            "cpu_s": {
                **cpu_delta(cpu2, cpu3),
                "bench client": round(mine3 - mine2, 2),
                "viewer": round(viewer_cpu, 2),
            },
        },
        "viewer": {
            "statuses": viewer_status,
            "p50_ms": pct(viewer_ms, 50),
            "p99_ms": pct(viewer_ms, 99),
            "mean_answer_bytes": received // max(1, len(viewer_ms)),
        },
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
        "--heavy-calls",
        default=None,
        help="FLOWVIZ_HEAVY_CALLS (default: the setting's); a list (4,2) runs the whole bench for each, one after the other",
    )
    parser.add_argument(
        "--heavy-min-ms",
        default=None,
        help="FLOWVIZ_HEAVY_MIN_MS (default: the setting's); a list (0,250) runs the whole bench for each",
    )
    parser.add_argument("--viewer", choices=VIEWS, default="graph", help="what the viewer floods with")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    bounds: list[int | None] = [int(b) for b in args.heavy_calls.split(",")] if args.heavy_calls else [None]
    holds: list[int | None] = [int(m) for m in args.heavy_min_ms.split(",")] if args.heavy_min_ms else [None]
    every = {}
    for bound in bounds:
        for hold in holds:
            figures = one(args, bound, hold)
            if figures is None:
                return 1
            every[f"{bound}/{hold}"] = figures
            report(args, bound, hold, figures)
    if args.json:
        args.json.write_text(json.dumps(every, default=dict, indent=1))
    return 0


def one(args: argparse.Namespace, heavy_calls: int | None, min_ms: int | None) -> dict[str, object] | None:
    """The bench on a system of its own with FLOWVIZ_HEAVY_CALLS `heavy_calls` and
    FLOWVIZ_HEAVY_MIN_MS `min_ms` (None: the default)."""
    data = Path(tempfile.mkdtemp(prefix="flowviz-fairness-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="a-fairness-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json")  # fmt: skip
    if heavy_calls is not None:
        env["FLOWVIZ_HEAVY_CALLS"] = str(heavy_calls)
    if min_ms is not None:
        env["FLOWVIZ_HEAVY_MIN_MS"] = str(min_ms)
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in ("health", "lots", "genealogy", "qc", "events", "gateway"):
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
                return None
            time.sleep(0.2)
        state = json.loads((data / "running.json").read_text())
        # The import ends with a CHECKPOINT: the superuser's URL (make run keeps it beside the owner's).
        roots = import_genealogy(state.get("admin_database_url", state["database_url"]), args.lots)
        figures = asyncio.run(measure(base, args, roots, signing, proc.pid, data / "run.log"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        out.close()
    return figures


def report(
    args: argparse.Namespace, heavy_calls: int | None, min_ms: int | None, figures: dict[str, object]
) -> None:
    q, ld, v = figures["quiet"], figures["loaded"], figures["viewer"]
    assert isinstance(q, dict) and isinstance(ld, dict) and isinstance(v, dict)
    bound = heavy_calls if heavy_calls is not None else "default (4)"
    hold = min_ms if min_ms is not None else "default"
    print(
        f"hot trace {HOT} at {args.rate}/s, {args.seconds:g}s per phase; FLOWVIZ_HEAVY_CALLS {bound}; "
        f"FLOWVIZ_HEAVY_MIN_MS {hold}; {args.lots:,} lots"
    )
    print(f"{'phase':<8} {'n':>5} {'P50 ms':>8} {'P99 ms':>8}  statuses")
    for name, f in (("quiet", q), ("loaded", ld)):
        statuses = " ".join(f"{s}:{k}" for s, k in sorted(f["statuses"].items()))
        print(f"{name:<8} {f['n']:>5} {f['p50_ms']:>8.1f} {f['p99_ms']:>8.1f}  {statuses}")
    print("inside the gateway (its access log; the rest of a request's time is spent before it):")
    for name, f in (("quiet", q), ("loaded", ld)):
        print(f"{name:<8} {'':>5} {f['served_p50_ms']:>8.1f} {f['served_p99_ms']:>8.1f}")
    print(f"CPU seconds used in each {args.seconds:g}s phase (2 cores: at most {2 * args.seconds:g}):")
    for name, f in (("quiet", q), ("loaded", ld)):
        used = f["cpu_s"]
        assert isinstance(used, dict)
        print(
            f"{name:<8} total {sum(used.values()):.1f}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(used.items(), key=lambda kv: -kv[1]))
        )
    ratio = ld["p99_ms"] / q["p99_ms"] if q["p99_ms"] else float("nan")
    print(f"loaded/quiet P99: {ratio:.2f}x (goal <= 2x)")
    viewer = " ".join(f"{s}:{k}" for s, k in sorted(v["statuses"].items()))
    print(
        f"viewer's {FLOOD}-wide {args.viewer} calls: {viewer}; answered P50 {v['p50_ms']:.0f} ms, P99 {v['p99_ms']:.0f} ms,"
        f" {v['mean_answer_bytes'] / 1e6:.2f} MB each"
    )
    figures["ratio"] = ratio


if __name__ == "__main__":
    sys.exit(main())
