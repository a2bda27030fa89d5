"""Webhooks under load (issue 16): what the outbox adds to the QC-decision write path, and how
fast its events go out. A/B, interleaved in one run (ABBA rounds, so drift in a shared machine's
load falls on both sides alike).

Starts `flowviz run` on free ports in a temporary data folder, imports pending lots of two
products, subscribes a loopback receiver to one of them, then:

Each part runs two ways. *closed*: every connection sends its next call as soon as the last is
answered, so the machine is saturated and the figure is the ceiling (calls/s); added work shows
multiplied by the queue (50 calls waiting on 2 cores). *paced*: calls are offered at a fixed rate
(`--rate`, `--sql-rate`) below that ceiling, each timed from when it was due; this is what a call
costs a plant whose decisions do not all arrive at once.

1. **Over HTTP** (gateway -> qc -> PostgreSQL), `--connections` concurrent connections, rounds of
   `--per-round` pass decisions: *off*, lots no subscription wants (the event is written and
   fanned out, nothing is delivered), or *on*, lots the subscriber gets (every event delivered
   while the next decisions are written). After each *on* round the bench waits for its events
   at the receiver, so a round's deliveries never spill into the next. qc always writes the
   event (in the decision's own INSERT): the code has no switch to write none, so over HTTP the
   A/B is "delivered" against "not delivered".
2. **In PostgreSQL**, at the same connections (closed, then paced) and then at one: qc's
   decision statement as qc runs it against the same statement without its event CTE (so no
   event written), ABBA rounds of `--sql-per-conn` per connection (at one connection, 10 x
   that). This is the cost of writing the event itself: the write path's added latency.

Prints P50/P99 per side (and each round's P99), decisions/s, events delivered, and the load
average at the start and end. Not a test: it prints figures.

    .venv/bin/python bench/webhook_bench.py [--rounds 4] [--per-round 150] [--connections 50]
        [--rate 40] [--sql-rate 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core import auth, keys  # noqa: E402
from flowviz.core.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS  # noqa: E402
from flowviz.tools import local  # noqa: E402
from flowviz.tools.embedded import free_port  # noqa: E402
from services.qc.repository import INSERT_DECISION  # noqa: E402

ON, OFF = "Bench salt on", "Bench salt off"
# qc's statement without the event CTE (its $9, $10 feed only the event).
WITHOUT_EVENT, _n = re.subn(r"\), event AS \(.*?\n\)\nSELECT", ")\nSELECT", INSERT_DECISION, flags=re.S)
assert _n == 1 and "event_outbox" not in WITHOUT_EVENT and "event_outbox" in INSERT_DECISION


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def abba(rounds: int) -> list[str]:
    """off on on off, off on on off, ...: each side first and last equally often."""
    return [side for i in range(rounds) for side in (("off", "on") if i % 2 == 0 else ("on", "off"))]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Receiver:
    """A minimal HTTP/1.1 keep-alive receiver: 204 to every POST, arrival time per webhook-id."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                headers = dict(
                    line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
                )
                lowered = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(lowered.get("content-length", "0")))
                self.requests += 1
                self.arrivals.setdefault(lowered.get("webhook-id", ""), time.perf_counter())
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """This client's garbage collector off while a round is timed: with thousands of calls pending
    its pauses reach tens of ms (measured: paced P99 13-20 ms with it, 2.3 ms without), and they
    are the bench's, not the system's."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def concurrently(
    connections: int, work: list[Callable[[], Awaitable[None]]]
) -> tuple[list[float], float]:
    """Run `work` over `connections` workers; each call's latency (ms) and the wall time (s)."""
    queue = list(reversed(work))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            call = queue.pop()
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    with client_gc_paused():
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return latencies, time.perf_counter() - started


async def paced(
    connections: int, rate: float, work: list[Callable[[], Awaitable[None]]]
) -> tuple[list[float], float]:
    """Open loop: call i is due at i/rate s and starts then, or once one of `connections` is free.
    Its latency counts from when it was due, so waiting for a connection counts too. Below
    saturation this is what a call costs; `concurrently` (closed loop) measures the ceiling."""
    free = asyncio.Semaphore(connections)
    latencies: list[float] = []

    async def one(i: int, call: Callable[[], Awaitable[None]]) -> None:
        due = started + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        async with free:
            await call()
        latencies.append((time.perf_counter() - due) * 1000)

    with client_gc_paused():
        started = time.perf_counter()
        await asyncio.gather(*(one(i, call) for i, call in enumerate(work)))
        return latencies, time.perf_counter() - started


def decision(client: httpx.AsyncClient, code: str) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        r = await client.post(f"/api/lots/{code}/qc-decisions", json={"decision": "pass"})
        assert r.status_code == 201, r.text

    return call


async def wait_healthy(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if (await client.get("/api/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("system not healthy")
        await asyncio.sleep(0.2)


Runner = Callable[[int, list[Callable[[], Awaitable[None]]]], Awaitable[tuple[list[float], float]]]


def runners(rate: float) -> dict[str, Runner]:
    """closed: every connection busy (the ceiling); paced: `rate` calls/s (what a call costs)."""
    return {"closed": concurrently, "paced": lambda c, work: paced(c, rate, work)}


async def over_http(base: str, token: str, args: argparse.Namespace) -> str:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c, n = args.connections, args.per_round
    sides = abba(args.rounds)
    modes = runners(args.rate)
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    found: dict[tuple[str, str], list[list[float]]] = {(m, s): [] for m in modes for s in ("off", "on")}
    walls = dict.fromkeys(found, 0.0)
    lags: list[float] = []
    per_side = n * args.rounds * len(modes)
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=120, limits=limits
    ) as client:
        await wait_healthy(client)
        warmup = [f"RAW-WH-W{i:05d}" for i in range(2 * c)]
        lots = {
            side: iter([f"RAW-WH-{side.upper()}{i:05d}" for i in range(per_side)]) for side in ("off", "on")
        }
        rows = [(code, OFF) for code in warmup] + [
            (f"RAW-WH-{side.upper()}{i:05d}", ON if side == "on" else OFF)
            for side in ("off", "on")
            for i in range(per_side)
        ]
        csv = "lot_code,kind,product,quantity,uom,produced_at\n" + "".join(
            f"{code},RAW,{product},1,kg,\n" for code, product in rows
        )
        r = await client.post("/api/import", files={"lots": ("lots.csv", csv)})
        assert r.status_code == 200, r.text
        r = await client.post(
            "/api/webhooks/subscriptions",
            json={
                "target_url": f"http://127.0.0.1:{port}/hook",
                "event_types": ["qc.decision.recorded"],
                "product": ON,
            },
        )
        assert r.status_code == 201, r.text
        sub = r.json()["subscription"]["id"]
        await concurrently(c, [decision(client, code) for code in warmup])  # connections, caches
        for mode, run in modes.items():
            for side in sides:
                before = len(receiver.arrivals)
                latencies, wall = await run(c, [decision(client, next(lots[side])) for _ in range(n)])
                answered = time.perf_counter()
                found[mode, side].append(latencies)
                walls[mode, side] += wall
                if side == "on":  # its events out before the next round
                    until = time.monotonic() + 120
                    while len(receiver.arrivals) < before + n and time.monotonic() < until:  # noqa: ASYNC110 - bounded
                        await asyncio.sleep(0.01)
                    if mode == "closed":
                        lags.append((max(receiver.arrivals.values()) - answered) * 1000)
        r = await client.delete(f"/api/webhooks/subscriptions/{sub}")  # the SQL part delivers nothing
        assert r.status_code == 200, r.text
    server.close()
    total = n * args.rounds
    report = []
    for mode in modes:
        report.append(
            f"  {mode}: "
            + ("every connection busy" if mode == "closed" else f"{args.rate:g} decisions/s offered")
        )
        for side, what in (
            ("off", "written, no subscriber wants them"),
            ("on", "written, one subscriber gets each"),
        ):
            every = [x for r in found[mode, side] for x in r]
            rounds = ", ".join(f"{pct(r, 99):.1f}" for r in found[mode, side])
            report.append(
                f"    {side:3} ({what}): {total} decisions, {total / walls[mode, side]:.0f}/s, "
                f"P50 {pct(every, 50):.1f} ms, P99 {pct(every, 99):.1f} ms (each round's P99: {rounds})"
            )
        on = [x for r in found[mode, "on"] for x in r]
        off = [x for r in found[mode, "off"] for x in r]
        report.append(
            f"    on - off: P50 {pct(on, 50) - pct(off, 50):+.1f} ms, P99 {pct(on, 99) - pct(off, 99):+.1f} ms"
        )
    lags.sort()
    report.append(
        f"  delivered {len(receiver.arrivals)} of {2 * total} ({receiver.requests} requests); a closed round's last "
        f"event out {lags[len(lags) // 2]:.0f} ms (median; max {lags[-1]:.0f}) after its last decision was answered"
    )
    return "\n".join(report)


async def in_postgres(
    url: str, args: argparse.Namespace, c: int, run: Runner
) -> dict[str, list[list[float]]]:
    """qc's decision statement with and without its event, ABBA rounds at `c` connections."""
    pool = await asyncpg.create_pool(url, min_size=c, max_size=c)
    lot_ids = [
        r["id"] for r in await pool.fetch("SELECT id FROM lots WHERE lot_code LIKE 'RAW-WH-%' ORDER BY id")
    ]
    found: dict[str, list[list[float]]] = {"without": [], "with": []}
    turn = 0

    def statement(side: str) -> Callable[[], Awaitable[None]]:
        nonlocal turn
        turn += 1
        lot = lot_ids[turn % len(lot_ids)]
        params = [lot, None, "pass", "bench", "loadtest", None, None, None]

        async def call() -> None:
            async with pool.acquire() as conn:
                if side == "with":
                    await conn.fetchrow(INSERT_DECISION, *params, "passed", "passed")
                else:
                    await conn.fetchrow(WITHOUT_EVENT, *params)

        return call

    await concurrently(c, [statement(s) for s in ("with", "without") * max(c, 10)])  # warm up
    for side in abba(args.rounds):
        s = "with" if side == "on" else "without"
        latencies, _ = await run(c, [statement(s) for _ in range(sql_count(args, c))])
        found[s].append(latencies)
    await pool.close()
    return found


def sql_count(args: argparse.Namespace, c: int) -> int:
    return max(c, 10) * args.sql_per_conn


async def measure(base: str, token: str, data: Path, args: argparse.Namespace) -> None:
    start_load = load()
    http_report = await over_http(base, token, args)
    url = local.running_state(data)["database_url"]
    c, sides = args.connections, abba(args.rounds)
    modes = runners(args.sql_rate)
    sqls = {
        (mode, conns): await in_postgres(url, args, conns, modes[mode])
        for mode, conns in (("closed", c), ("paced", c), ("closed", 1))
    }
    print(f"load average at start: {start_load}")
    print(
        f"QC decisions over HTTP at {c} connections, {len(sides)} rounds of {args.per_round} each way ({' '.join(sides)}):"
    )
    print(http_report)
    for (mode, conns), sql in sqls.items():
        how = "every connection busy" if mode == "closed" else f"{args.sql_rate:g} statements/s offered"
        print(
            f"qc's decision statement in PostgreSQL at {conns} connection(s), {how}, "
            f"{len(sides)} rounds of {sql_count(args, conns)}:"
        )
        for side, what in (
            ("without", "without its event CTE (no event)"),
            ("with", "as qc runs it (with the event)"),
        ):
            every = [x for r in sql[side] for x in r]
            rounds = ", ".join(f"{pct(r, 99):.2f}" for r in sql[side])
            print(
                f"  {what}: P50 {pct(every, 50):.2f} ms, P99 {pct(every, 99):.2f} ms (each round's P99: {rounds})"
            )
        w = [x for r in sql["with"] for x in r]
        wo = [x for r in sql["without"] for x in r]
        print(
            f"  the event adds: P50 {pct(w, 50) - pct(wo, 50):+.2f} ms, P99 {pct(w, 99) - pct(wo, 99):+.2f} ms"
        )
    print(f"load average at end: {load()}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4, help="ABBA pairs of rounds (each: off+on)")
    parser.add_argument("--per-round", type=int, default=150, help="decisions per HTTP round")
    parser.add_argument(
        "--sql-per-conn", type=int, default=20, help="statements per connection per SQL round"
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=float, default=40, help="paced HTTP rounds: decisions/s offered")
    parser.add_argument("--sql-rate", type=float, default=400, help="paced SQL rounds: statements/s offered")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="flowviz-webhooks-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="a-webhook-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json", FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE="1", FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY="1")  # fmt: skip
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in DEFAULT_METRICS_PORTS:
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    # make run keeps the keys it finds in its data folder: made here, so this script can sign in.
    signing = keys.parse_private(
        "token.key", keys.write_keys(data / "keys")["FLOWVIZ_TOKEN_PRIVATE_KEY@lots"]
    )
    token = auth.issue_token("loadtest", "admin", key=signing, ttl_seconds=900)
    log = open(data / "run.log", "wb")  # noqa: SIM115 - closed at the end
    run = subprocess.Popen([sys.executable, "-m", "flowviz.tools.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    try:
        asyncio.run(measure(base, token, data, args))
    except Exception:
        print((data / "run.log").read_text()[-3000:])
        raise
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
