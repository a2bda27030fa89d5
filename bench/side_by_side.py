"""`make bench-monolith` (and the last step of `make bench`): flowviz against the monolith, one run.

Starts flowviz as bench/run.py does (`flowviz.tools.cli run`: its own embedded PostgreSQL and Valkey,
migrated and seeded, the bench's ports) and the monolith it replaced, re-created in
bench/monolith/ (FastAPI + async SQLAlchemy + asyncpg, one uvicorn worker, its own venv from
bench/monolith/requirements.txt) on a database of its own in the same PostgreSQL, loaded with
the same seed file. Checks that both answer every seed lot's trace with the same lot, parents
and children, then loads each with the same wrk command on `GET /api/traceability/FG-DONER-X1`,
flowviz first and the monolith right after, twice, and prints req/s, P50, P99 and the ratio.
Figures only, never asserted; exit code 2 when the harness fails (a tool missing, a server
that does not start, answers that differ), 130 when interrupted.

    .venv/bin/python bench/side_by_side.py [--seconds 8] [--rounds 2] [--port-offset N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from run import (
    BASE_PORTS,
    BENCH,
    FLOWVIZ,
    OUT,
    ROOT,
    HarnessError,
    Sampler,
    System,
    busy_cpu_seconds,
    children_cpu_seconds,
    ensure_tools,
    fmt_ms,
    http,
    log,
    machine,
    port_in_use,
    run_wrk,
)

HOT = "FG-DONER-X1"
ROUTE = f"/api/traceability/{HOT}"
SEED_LOTS = ("RAW-BEEF-001", "RAW-SPICE-001", "MIX-BATCH-88", HOT)  # flowviz/tools/seed.sql's lots
SEED_EDGES = 3  # and its genealogy: beef and spice into the mix, the mix into the cone
MONO = BENCH / "monolith"
MONO_VENV = MONO / ".venv"
MONO_PY = MONO_VENV / "bin" / "python"
MONO_STAMP = MONO_VENV / ".installed"
MONO_DB = "monolith"
MONO_PORT = 18010  # beside the bench's gateway (18000) and floors (18001)


def ensure_monolith_venv() -> str:
    """bench/monolith/.venv with the exact versions of bench/monolith/requirements.txt."""
    reqs = MONO / "requirements.txt"
    if not MONO_STAMP.exists() or MONO_STAMP.stat().st_mtime < reqs.stat().st_mtime:
        log(f"installing {reqs.relative_to(ROOT)} into {MONO_VENV.relative_to(ROOT)}")
        try:
            if not MONO_PY.exists():
                subprocess.run([sys.executable, "-m", "venv", str(MONO_VENV)], check=True, timeout=300)
            pip = subprocess.run(
                [str(MONO_PY), "-m", "pip", "install", "--quiet", "-r", str(reqs)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if pip.returncode != 0:
                raise HarnessError(f"pip install -r {reqs} failed: {(pip.stderr or pip.stdout)[-800:]}")
        except (subprocess.SubprocessError, OSError) as exc:
            raise HarnessError(f"cannot build the monolith's venv: {exc}") from exc
        MONO_STAMP.touch()
    out = subprocess.run(
        [str(MONO_PY), "-c", "import fastapi, sqlalchemy, asyncpg, uvicorn as u; "
         "print(fastapi.__version__, sqlalchemy.__version__, asyncpg.__version__, u.__version__)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        raise HarnessError(f"the monolith's venv is broken: {out.stderr[-400:]}")
    fa, sa, apg, uv = out.stdout.split()
    return f"FastAPI {fa}, SQLAlchemy {sa}, asyncpg {apg}, uvicorn {uv}"


class Monolith:
    """The re-created monolith: a fresh database beside flowviz's, then one uvicorn worker."""

    def __init__(self, system: System, port: int, log_dir: Path, sampler: Sampler) -> None:
        self.system = system
        self.port = port
        self.log_dir = log_dir
        self.sampler = sampler
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        url = self.system.database_url.rsplit("/", 1)[0] + f"/{MONO_DB}"
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        return {
            **{k: os.environ[k] for k in keep if k in os.environ},
            "MONOLITH_DATABASE_URL": url.replace("postgresql://", "postgresql+asyncpg://", 1),
            "PYTHONUNBUFFERED": "1",
        }

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.system.database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {MONO_DB}")
            conn.execute(f"CREATE DATABASE {MONO_DB}")
        done = subprocess.run(
            [str(MONO_PY), str(MONO / "setup_db.py"), str(ROOT / "flowviz" / "tools" / "seed.sql")],
            cwd=MONO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise HarnessError(f"monolith setup_db.py failed: {done.stderr[-800:]}")
        with psycopg.connect(self.system.database_url.rsplit("/", 1)[0] + f"/{MONO_DB}") as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchone()
            lots = conn.execute("SELECT count(*) FROM lots").fetchone()
        log(f"monolith database: {tables[0] if tables else 0} tables, {lots[0] if lots else 0} lots")

    def start(self, timeout: float = 60) -> None:
        import psutil

        if port_in_use(self.port):
            raise HarnessError(f"port {self.port} in use (another bench running? try --port-offset 100)")
        out = open(self.log_dir / "monolith.log", "wb")  # noqa: SIM115 (the child owns it)
        # Access log off (and no SQLAlchemy echo), unlike flowviz's gateway, which writes its JSON
        # access line per request as in production: this favours the monolith, never flowviz.
        cmd = [str(MONO_PY), "-m", "uvicorn", "app:app", "--app-dir", str(MONO), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1", "--no-access-log", "--log-level", "warning"]  # fmt: skip
        log(f"starting the monolith ({' '.join(cmd[1:4])} ..., {self.base})")
        self.proc = subprocess.Popen(
            cmd, cwd=MONO, env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.sampler.extra["monolith"] = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = (self.log_dir / "monolith.log").read_text(errors="replace")[-800:]
                raise HarnessError(f"the monolith exited with {self.proc.returncode}:\n{tail}")
            try:
                if http("GET", f"{self.base}/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"the monolith's /api/health not 200 after {timeout:.0f}s")
            time.sleep(0.3)
        log("the monolith is up (/api/health 200)")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                log("the monolith did not stop: killing it")
                self.proc.kill()
                self.proc.wait(5)


def trace_key(doc: dict[str, Any]) -> dict[str, Any]:
    """What both answers must agree on: the lot, and each parent and child with its edge."""

    def lot(d: dict[str, Any]) -> tuple[Any, ...]:
        return (d.get("lot_code"), d.get("kind"), d.get("product"), float(d.get("quantity", 0)), d.get("uom"))

    def linked(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        # A linked lot is the lot's fields and its edge's side by side, or the lot nested under "lot".
        return sorted(
            (*lot(i.get("lot", i)), round(float(i.get("edge_quantity", 0)), 3), i.get("edge_uom"),
             i.get("run_code") or "")
            for i in items
        )  # fmt: skip

    try:
        return {
            "lot": lot(doc["lot"]),
            "parents": linked(doc.get("parents", [])),
            "children": linked(doc.get("children", [])),
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HarnessError(f"not a trace answer ({exc!r}): {json.dumps(doc)[:600]}") from exc


def sanity_check(system: System, mono: Monolith, token: str) -> dict[str, Any]:
    """The monolith's answers are correct traces: for every seed lot (the hot one included), the
    same lot, parents and children, edges and runs as flowviz's; an unknown lot is a 404."""
    keys: dict[str, Any] = {}
    for code in SEED_LOTS:
        answers = {}
        for side, base in (("flowviz", system.base), ("monolith", mono.base)):
            status, doc = http("GET", f"{base}/api/traceability/{code}", token=token)
            if status != 200:
                raise HarnessError(f"{side} GET /api/traceability/{code}: HTTP {status} {str(doc)[:300]}")
            (OUT / "run-side-by-side" / f"trace-{code}-{side}.json").write_text(json.dumps(doc, indent=2))
            answers[side] = trace_key(doc)
        if answers["flowviz"] != answers["monolith"]:
            raise HarnessError(
                f"the two traces of {code} differ:\n  flowviz  {answers['flowviz']}\n"
                f"  monolith {answers['monolith']}"
            )
        keys[code] = answers["flowviz"]
    edges = sum(len(k["parents"]) for k in keys.values())
    if edges != SEED_EDGES or not keys[HOT]["parents"]:
        raise HarnessError(
            f"{edges} parent edges over the seed lots, not {SEED_EDGES}: not the seed's genealogy"
        )
    status, _ = http("GET", f"{mono.base}/api/traceability/NO-SUCH-LOT", token=token)
    if status != 404:
        raise HarnessError(f"the monolith answers an unknown lot with HTTP {status}, not 404")
    log(
        f"same traces on both for {', '.join(SEED_LOTS)} ({edges} edges); {HOT}: parents "
        f"{[p[0] for p in keys[HOT]['parents']]}, children {[c[0] for c in keys[HOT]['children']]}"
    )
    return keys[HOT]


def load(
    side: str, url: str, token: str, seconds: int, sampler: Sampler, comps: tuple[str, ...]
) -> dict[str, Any]:
    """One wrk run with the machine's CPU beside it: the server's, wrk's and everyone else's."""
    load_avg = os.getloadavg()[0]
    snap, busy, kids, t0 = sampler.snapshot(), busy_cpu_seconds(), children_cpu_seconds(), time.monotonic()
    figures = run_wrk(url, token, seconds)
    wall = time.monotonic() - t0
    cpu = Sampler.cpu_delta(snap, sampler.snapshot())
    server = sum(v for k, v in cpu.items() if k in comps)
    wrk = children_cpu_seconds() - kids
    other = max(0.0, busy_cpu_seconds() - busy - sum(cpu.values()) - wrk)
    figures.pop("extra", None)
    figures.update(
        side=side,
        load_avg_1m=round(load_avg, 2),
        cpu_pct_server=round(100 * server / wall),
        cpu_pct_pg=round(100 * cpu.get("postgres", 0.0) / wall),
        cpu_pct_wrk=round(100 * wrk / wall),
        cpu_pct_other=round(100 * other / wall),
    )
    log(
        f"  {side:<8} {figures['rps']:>7,.0f} req/s  P50 {fmt_ms(figures['p50_ms'])}  "
        f"P99 {fmt_ms(figures['p99_ms'])} ms  errors {figures['errors']}  other CPU {figures['cpu_pct_other']}%"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="each wrk run (wrk -t2 -c50 -d<seconds>s)")
    parser.add_argument("--rounds", type=int, default=2, help="flowviz then the monolith, this many times")
    parser.add_argument("--port-offset", type=int, default=0, help="added to every port the bench uses")
    args = parser.parse_args(argv)
    os.chdir(ROOT)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    ports = {k: v + args.port_offset for k, v in BASE_PORTS.items()}
    run_dir = OUT / "run-side-by-side"
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(f"/tmp/flowviz-bench-sbs-{ports['pg']}")
    sampler = Sampler()
    system = System(ports, data_dir, run_dir, sampler)
    mono = Monolith(system, MONO_PORT + args.port_offset, run_dir, sampler)
    report: dict[str, Any] = {"route": ROUTE, "seconds": args.seconds, "rounds": args.rounds}
    try:
        report["tools"] = ensure_tools()
        report["monolith_stack"] = ensure_monolith_venv()
        report["machine"] = machine()
        if data_dir.exists():
            shutil.rmtree(data_dir)  # a fresh seeded database each run
        sampler.start()
        try:
            system.start()  # flowviz.tools.cli run: migrate, seed, serve
            mono.create_database()
            mono.start()
            token = system.token()
            report["trace"] = sanity_check(system, mono, token)
            flowviz_url, mono_url = system.base + ROUTE, mono.base + ROUTE
            # Unmeasured warm-up: connections, pools, flowviz's cache entry for the hot lot.
            run_wrk(flowviz_url, token, 2)
            run_wrk(mono_url, token, 2)
            rows = []
            for n in range(1, args.rounds + 1):
                log(f"round {n}: wrk -t2 -c50 -d{args.seconds}s {ROUTE}, flowviz then the monolith")
                # The same command for both, bearer token included (the monolith ignores it).
                f = load("flowviz", flowviz_url, token, args.seconds, sampler, FLOWVIZ)
                m = load("monolith", mono_url, token, args.seconds, sampler, ("monolith",))
                rows.append(
                    {"round": n, "flowviz": f, "monolith": m, "ratio": f["rps"] / max(m["rps"], 1e-9)}
                )
        finally:
            try:
                mono.stop()
            finally:
                try:
                    system.stop()
                finally:
                    sampler.stop()
    except (HarnessError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # RuntimeError: wrk failed (run_wrk); OSError: a server stopped answering.
        log(f"harness failure: {type(exc).__name__}: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    report["rows"] = rows
    (OUT / "results-side-by-side.json").write_text(json.dumps(report, indent=2, default=str))
    print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    mach = report["machine"]
    print()
    print(
        f"side by side: GET {report['route']} (seed data), wrk -t2 -c50 -d{report['seconds']}s, flowviz then "
        f"the monolith, {report['rounds']} rounds; {mach['cpus']} cores {mach['cpu_model']}, "
        f"{mach['memory_gb']} GB; {report['tools']['wrk']}"
    )
    print(f"monolith: {report['monolith_stack']}, one uvicorn worker (bench/monolith/)")
    head = (
        f"{'round':<7}{'system':<10}{'req/s':>9}{'P50':>8}{'P99':>8}{'err':>6}{'load':>7}"
        f"{'CPU srv':>9}{'pg':>6}{'wrk':>6}{'other':>7}"
    )
    print()
    print(head)
    print("-" * len(head))
    for row in report["rows"]:
        for side in ("flowviz", "monolith"):
            r = row[side]
            print(
                f"{row['round']:<7}{side:<10}{r['rps']:>9,.0f}{fmt_ms(r['p50_ms']):>8}{fmt_ms(r['p99_ms']):>8}"
                f"{r['errors']:>6}{r['load_avg_1m']:>7.1f}{r['cpu_pct_server']:>8}%{r['cpu_pct_pg']:>5}%{r['cpu_pct_wrk']:>5}%"
                f"{r['cpu_pct_other']:>6}%"
            )
        print(f"{'':<7}{'ratio':<10}{row['ratio']:>8.2f}x  (flowviz req/s / monolith req/s)")
    ratios = [row["ratio"] for row in report["rows"]]
    print(
        f"\nflowviz / monolith: {min(ratios):.2f}x-{max(ratios):.2f}x (goal >= 5x, flowviz P99 <= 25 ms); "
        "latencies in ms; load = 1-min load average before the run; CPU as % of one core: the server's "
        "processes (flowviz: gateway + 4 services), PostgreSQL (both databases), wrk, and the rest "
        "of the machine (other > 0: figures understate both sides)"
    )
    print(f"JSON: {OUT / 'results-side-by-side.json'}   logs: {OUT / 'run-side-by-side'}/")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
