"""Webhooks under load (issue 16): QC decisions at --connections concurrent connections, each
writing its qc.decision.recorded event into the outbox, delivered to a loopback receiver.

Starts `flowviz run` on free ports in a temporary data folder, imports 2 x --decisions pending
lots, and records a pass decision on each: the first half with no subscriber (the outbox is
written, nothing is delivered), the second half with one subscriber receiving every decision.
Prints decisions/s and P50/P99 of each half, events delivered/s (first to last arrival), the
receiver's count of distinct webhook-ids (none lost), and the outbox INSERT's own cost measured
in PostgreSQL: P99 of a one-row transaction at --connections, with and without the event.
Not a test: it prints figures.

    .venv/bin/python bench/webhook_bench.py [--decisions 1500] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core import auth, outbox  # noqa: E402
from flowviz.core.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS  # noqa: E402
from flowviz.tools import local  # noqa: E402
from flowviz.tools.embedded import free_port  # noqa: E402

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


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


async def decisions(
    client: httpx.AsyncClient, lots: list[str], connections: int
) -> tuple[list[float], float]:
    queue = list(reversed(lots))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            code = queue.pop()
            started = time.perf_counter()
            r = await client.post(f"/api/lots/{code}/qc-decisions", json={"decision": "pass"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 201, r.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies, time.perf_counter() - started


SAME_STATEMENT = """
WITH c AS (INSERT INTO bench_change (x) VALUES ('x') RETURNING id)
INSERT INTO event_outbox (type, actor, data) SELECT 'bench.change', 'bench', jsonb_build_object('id', id) FROM c
"""


async def outbox_cost(url: str, connections: int, per_conn: int) -> list[float]:
    """P99 (ms) of a one-row transaction: bare, with the event as a second statement (as genealogy
    writes them), with the event in the same statement (as qc writes a decision's)."""
    pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_change (id bigserial PRIMARY KEY, x text)")
    found = []
    for variant in ("bare", "second", "same"):
        times: list[float] = []

        async def worker(variant: str = variant, times: list[float] = times) -> None:
            for _ in range(per_conn):
                started = time.perf_counter()
                async with pool.acquire() as conn, conn.transaction():
                    if variant == "same":
                        await conn.execute(SAME_STATEMENT)
                    else:
                        await conn.execute("INSERT INTO bench_change (x) VALUES ('x')")
                    if variant == "second":
                        await outbox.emit(conn, "bench.change", None, {"x": 1}, actor="bench")
                times.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(connections)))
        found.append(pct(times, 99))
    await pool.close()
    return found


async def measure(base: str, token: str, data: Path, args: argparse.Namespace) -> None:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    async with httpx.AsyncClient(
        base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=60, limits=limits
    ) as client:
        deadline = time.monotonic() + 120
        while True:
            try:
                if (await client.get("/api/health")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("system not healthy")
            await asyncio.sleep(0.2)
        codes = [f"RAW-WH-{i:05d}" for i in range(2 * args.decisions)]
        csv = "lot_code,kind,product,quantity,uom,produced_at\n" + "".join(
            f"{c},RAW,Bench salt,1,kg,\n" for c in codes
        )
        r = await client.post("/api/import", files={"lots": ("lots.csv", csv)})
        assert r.status_code == 200, r.text
        quiet, quiet_s = await decisions(client, codes[: args.decisions], args.connections)
        if args.root != ROOT:  # another checkout (a baseline without webhooks): its write path only
            print(f"{args.root}: QC decisions at {args.connections} connections: {args.decisions / quiet_s:.0f}/s, "
                  f"P50 {pct(quiet, 50):.1f} ms, P99 {pct(quiet, 99):.1f} ms")  # fmt: skip
            return
        r = await client.post(
            "/api/webhooks/subscriptions",
            json={"target_url": f"http://127.0.0.1:{port}/hook", "event_types": ["qc.decision.recorded"]},
        )
        assert r.status_code == 201, r.text
        started = time.perf_counter()
        loud, loud_s = await decisions(client, codes[args.decisions :], args.connections)
        until = time.monotonic() + 60
        while len(receiver.arrivals) < args.decisions and time.monotonic() < until:  # noqa: ASYNC110 - a bound wait
            await asyncio.sleep(0.05)
    server.close()
    delivered = len(receiver.arrivals)
    last = max(receiver.arrivals.values(), default=started)
    url = local.running_state(data)["database_url"]
    bare, second, same = await outbox_cost(url, args.connections, 40)
    n, c = args.decisions, args.connections
    print(f"QC decisions at {c} connections, {n} each half:")
    print(
        f"  no subscriber:  {n / quiet_s:.0f} decisions/s, P50 {pct(quiet, 50):.1f} ms, P99 {pct(quiet, 99):.1f} ms"
    )
    print(f"  one subscriber: {n / loud_s:.0f} decisions/s, P50 {pct(loud, 50):.1f} ms, P99 {pct(loud, 99):.1f} ms; "
          f"{delivered} of {n} events delivered ({receiver.requests} requests) at {delivered / (last - started):.0f}/s, "
          f"the last {1000 * (last - started - loud_s):.0f} ms after the last decision was answered")  # fmt: skip
    print(f"  outbox event in PostgreSQL, one-row transaction at {c} connections: P99 {bare:.2f} ms bare, "
          f"{second:.2f} ms with the event as a second statement (+{second - bare:.2f}), "
          f"{same:.2f} ms in the same statement (+{same - bare:.2f})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1500)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--root", type=Path, default=ROOT, help="run this checkout's system (baseline)")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="flowviz-webhooks-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_TOKEN_SECRET=SECRET, FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="a-webhook-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json", FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE="1", FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY="1")  # fmt: skip
    env["PYTHONPATH"] = str(args.root)
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in DEFAULT_METRICS_PORTS:
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    token = auth.issue_token("loadtest", "admin", secret=SECRET.encode(), ttl_seconds=900)
    log = open(data / "run.log", "wb")  # noqa: SIM115 - closed at the end
    run = subprocess.Popen([sys.executable, "-m", "flowviz.tools.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=args.root)  # fmt: skip
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
