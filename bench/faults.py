"""`make faults`: the issue-15 fault suite on a running system, with a time bound.

Starts `flowviz run` (FLOWVIZ_REPLICAS=2 unless --replicas says otherwise) on free ports in a
temporary data folder and keeps a fixed load on it: 80 % reads (traces and recalls of seed
lots), 20 % production runs, each with its own Idempotency-Key and retried with the same key
on failure (a 503, a 5xx, a dropped connection) until acknowledged or the phase is long over.
Phases, each a few seconds, one after the other:

  baseline       nothing happens
  valkey-kill    Valkey killed (SIGKILL); the supervisor restarts it
  valkey-freeze  Valkey stopped (SIGSTOP) for 3 s, then continued
  rolling        one replica of each service in turn SIGTERMed (make run restarts it)
  pg-kill        PostgreSQL killed (kill -9 of its process group) mid-write; restarted

A phase ends when its time is up and its fault is over; the next fault waits until every request
sent in the phase has its answer (so a request sent just before PostgreSQL is killed counts
against pg-kill, not the phase before).

Prints per phase: requests, the rate they were sent at (below --rate when the machine, or this
script's own loop, cannot keep up), failures (answers that are not 2xx/404, retried writes'
earlier attempts counted), P50, P99; then every acknowledged write checked through the API and in
PostgreSQL: lost, duplicated, partial (a run without all its outputs), and stale reads (the
run read back right after its acknowledgement answered 404). Nothing is asserted; the exit
code is 0 when the harness ran.

    .venv/bin/python bench/faults.py [--rate 100] [--phase-seconds 6]
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
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowviz.core import auth, keys  # noqa: E402
from flowviz.core.config import DEFAULT_PORTS  # noqa: E402
from flowviz.tools.embedded import free_port  # noqa: E402
from flowviz.tools.supervisor import SERVICES  # noqa: E402

READS = ("/api/traceability/FG-DONER-X1", "/api/recall/RAW-BEEF-001", "/api/traceability/RAW-BEEF-001")
PHASES = ("baseline", "valkey-kill", "valkey-freeze", "rolling", "pg-kill")


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


@dataclass
class Phase:
    name: str
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    ms: list[float] = field(default_factory=list)
    in_flight: int = 0  # attempts sent in this phase, not yet answered
    seconds: float = 0.0  # how long the load was sent in this phase
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def sent(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def answered(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()


@dataclass
class Write:
    run_code: str
    outputs: list[str]
    acknowledged: bool = False
    stale: bool = False


class Faults:
    def __init__(self, data: Path, env: dict[str, str], proc: subprocess.Popen[bytes]) -> None:
        self.data, self.env, self.proc = data, env, proc
        self.phase = Phase("starting")
        self.phases: list[Phase] = []
        self.writes: list[Write] = []
        self.input_lot = f"RAW-FLT-{uuid.uuid4().hex[:6].upper()}"
        self.users: list[dict[str, str]] = []
        # make run keeps the keys it finds in its data folder: made here, so this script signs tokens.
        self.key = keys.parse_private(
            "token.key", keys.write_keys(data / "keys")["FLOWVIZ_TOKEN_PRIVATE_KEY@lots"]
        )

    def processes(self, needle: str) -> list[psutil.Process]:
        found = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if needle in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    # - the faults -

    async def kill_valkey(self) -> None:
        for p in self.processes("valkey-server"):
            p.kill()

    async def freeze_valkey(self) -> None:
        procs = self.processes("valkey-server")
        for p in procs:
            p.suspend()
        await asyncio.sleep(3)
        for p in procs:
            p.resume()

    async def rolling(self) -> None:
        for name in SERVICES:
            victims = self.processes(f"services.{name}")
            if not victims:
                continue
            victim = victims[0]
            port = victim.environ()[f"FLOWVIZ_{name.upper()}_PORT"]
            victim.send_signal(signal.SIGTERM)
            await asyncio.to_thread(victim.wait, 30)
            await self.until_serving(f"127.0.0.1:{port}")  # make run restarts it

    @staticmethod
    async def until_serving(address: str) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 30
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

    async def kill_pg(self) -> None:
        pid = int((self.data / "postgres" / "postmaster.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)

    # - the load -

    @staticmethod
    def reason(r: httpx.Response) -> str:
        try:
            return " " + str(r.json()["error"]["reason"])
        except Exception:
            return ""

    async def read(self, c: httpx.AsyncClient) -> None:
        phase = self.phase
        phase.sent()
        sent = time.monotonic()
        try:
            r = await c.get(random.choice(READS), headers=random.choice(self.users))
            status: int | str = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        phase.answered()
        phase.requests += 1
        phase.ms.append((time.monotonic() - sent) * 1000)
        if status != 200:
            phase.failures[f"read {status}{self.reason(r) if isinstance(status, int) else ''}"] += 1

    async def write(self, c: httpx.AsyncClient) -> None:
        tag = uuid.uuid4().hex[:10].upper()
        w = Write(f"RUN-FLT-{tag}", [f"MIX-FLT-{tag}"])
        self.writes.append(w)
        body = {
            "run_code": w.run_code,
            "stream_code": "DONER",
            "phase_code": "MIXING",
            "operator": "faults",
            "inputs": [{"lot_code": self.input_lot, "quantity": 0.001, "uom": "kg"}],
            "outputs": [
                {"lot_code": w.outputs[0], "kind": "MIX", "product": "mix", "quantity": 0.001, "uom": "kg"}
            ],
        }
        key = f"faults-{tag}"
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            phase = self.phase
            phase.sent()
            sent = time.monotonic()
            try:
                headers = {"idempotency-key": key, **random.choice(self.users)}
                r = await c.post("/api/production-runs", json=body, headers=headers)
                status: int | str = r.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            phase.answered()
            phase.requests += 1
            phase.ms.append((time.monotonic() - sent) * 1000)
            if status in (200, 201):
                w.acknowledged = True
                back = await c.get(f"/api/production-runs/{w.run_code}")
                w.stale = back.status_code == 404
                return
            phase.failures[f"write {status}{self.reason(r) if isinstance(status, int) else ''}"] += 1
            if isinstance(status, int) and 400 <= status < 500 and status != 429:
                return  # refused for what it is: a retry would be refused again
            await asyncio.sleep(0.2)

    async def drive(self, base: str, args: argparse.Namespace) -> None:
        token = auth.issue_token("loadtest", "admin", key=self.key, ttl_seconds=600)
        # A plant's users, not one: the per-user bound on heavy calls is not what is measured.
        self.users = [
            {
                "authorization": f"Bearer {auth.issue_token(f'op{i}', 'operator', key=self.key, ttl_seconds=600)}"
            }
            for i in range(8)
        ]
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=10, limits=limits
        ) as c:
            r = await c.post(
                "/api/lots",
                json={
                    "lot_code": self.input_lot,
                    "kind": "RAW",
                    "product": "beef",
                    "quantity": 100000,
                    "uom": "kg",
                },
            )
            if r.status_code != 201:
                raise RuntimeError(f"could not create the input lot: {r.status_code} {r.text}")
            tasks: set[asyncio.Task[None]] = set()
            faults = {
                "baseline": None,
                "valkey-kill": self.kill_valkey,
                "valkey-freeze": self.freeze_valkey,
                "rolling": self.rolling,
                "pg-kill": self.kill_pg,
            }
            for name in args.phases.split(","):
                self.phase = Phase(name)
                self.phases.append(self.phase)
                log(f"phase {name}")
                fault = faults[name]
                injected = asyncio.create_task(fault()) if fault else None
                start, n = time.monotonic(), 0
                while time.monotonic() - start < args.phase_seconds or (injected and not injected.done()):
                    n += 1
                    job = self.write(c) if random.random() < 0.2 else self.read(c)
                    task = asyncio.create_task(job)
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
                    if time.monotonic() - start > args.phase_seconds * 6:
                        break  # the time bound, whatever the fault does
                if injected:
                    await injected
                self.phase.seconds = time.monotonic() - start
                # Each phase's own answers before the next fault: a request sent just before
                # PostgreSQL is killed must not count against the phase before.
                if self.phase.in_flight:
                    await asyncio.wait_for(self.phase.idle.wait(), 30)
            log("waiting for the writes still being retried")
            await asyncio.wait_for(asyncio.gather(*tasks), 90)

    def check(self) -> dict[str, int]:
        import psycopg

        url = json.loads((self.data / "running.json").read_text())["database_url"]
        acked = [w for w in self.writes if w.acknowledged]
        with psycopg.connect(url) as db:
            runs = dict(
                db.execute(
                    "SELECT run_code, count(*) FROM production_runs WHERE run_code LIKE 'RUN-FLT-%' GROUP BY run_code"
                ).fetchall()
            )
            outputs = dict(
                db.execute(
                    "SELECT lot_code, count(*) FROM lots WHERE lot_code LIKE 'MIX-FLT-%' GROUP BY lot_code"
                ).fetchall()
            )
        return {
            "writes acknowledged": len(acked),
            "writes never acknowledged": len(self.writes) - len(acked),
            "lost": sum(1 for w in acked if w.run_code not in runs),
            "duplicated": sum(1 for n in runs.values() if n > 1) + sum(1 for n in outputs.values() if n > 1),
            "partial": sum(
                1 for w in self.writes if w.run_code in runs and any(o not in outputs for o in w.outputs)
            ),
            "stale reads": sum(1 for w in acked if w.stale),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=100, help="requests/s (80 % reads, 20 % writes)")
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--phases", default=",".join(PHASES))
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="flowviz-faults-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWVIZ_") and k not in ("DATABASE_URL", "VALKEY_URL")
    }
    env.update(FLOWVIZ_DATA_DIR=str(data), FLOWVIZ_PG_PORT=str(free_port()), FLOWVIZ_VALKEY_PORT=str(free_port()),
               FLOWVIZ_ADMIN_USER="loadtest", FLOWVIZ_ADMIN_PASSWORD="a-faults-admin-pass-2026",
               FLOWVIZ_LOG_FORMAT="json", FLOWVIZ_REPLICAS=str(args.replicas), FLOWVIZ_DRAIN_SECONDS="5")  # fmt: skip
    # Replica i listens on port + 1000 i: free ports below 64000 leave room for that.
    for name in DEFAULT_PORTS:
        port = free_port()
        while port + 1000 * args.replicas > 65000:
            port = free_port()
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(port)
    for name in (*SERVICES, "gateway"):
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = "0"
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    keys.write_keys(data / "keys")  # before make run, which keeps them (Faults signs with them)
    out = open(data / "run.log", "wb")  # noqa: SIM115 - closed at the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowviz.tools.cli", "run"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    faults = Faults(data, env, proc)
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
        asyncio.run(faults.drive(base, args))
        totals = faults.check()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        out.close()
    print(
        f"{args.rate} req/s (80 % reads, 20 % runs with Idempotency-Key), {args.replicas} replicas of each service"
    )
    print(
        f"{'phase':<14} {'requests':>8} {'req/s':>6} {'failures':>8} {'P50 ms':>8} {'P99 ms':>8}  failures by kind"
    )
    for p in faults.phases:
        kinds = " ".join(f"{k}:{n}" for k, n in sorted(p.failures.items()))
        print(
            f"{p.name:<14} {p.requests:>8} {p.requests / max(p.seconds, 0.001):>6.0f} {sum(p.failures.values()):>8} {pct(p.ms, 50):>8.1f} {pct(p.ms, 99):>8.1f}  {kinds}"
        )
    print("  ".join(f"{k}: {v}" for k, v in totals.items()))
    print(
        "\n".join(
            line
            for line in (data / "run.log").read_text(errors="replace").splitlines()
            if line.startswith("!!!")
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
