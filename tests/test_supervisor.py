"""`make run` supervises its embedded PostgreSQL and Valkey: a crashed one is restarted, the
services reconnect on their own, and the log says what happened. Stale lock files of a dead
postmaster are removed only once no process holds the data folder; a process of another
program that got the dead postmaster's pid is never signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import valkey

from flowviz.core import auth, keys
from flowviz.core.config import DEFAULT_PORTS
from flowviz.tools.embedded import EmbeddedError, Postgres, free_port
from tests.conftest import ROOT


def kill_group(pid: int) -> None:
    """kill -9 a server and its children (each embedded server leads its own process group)."""
    os.killpg(pid, signal.SIGKILL)


def test_a_stale_lock_is_cleared_once_no_process_holds_it_and_a_stranger_is_left_alone(
    tmp_path: Path,
) -> None:
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    assert pg.proc is not None
    kill_group(pg.proc.pid)
    pg.proc.wait(10)
    pid_file = pg.data_dir / "postmaster.pid"
    assert pid_file.exists()  # the dead postmaster's lock is left behind
    # Its pid now belongs to another program (pid reuse): PostgreSQL alone would refuse to start.
    stranger = subprocess.Popen(["sleep", "300"])
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
    # A leftover process still in the data folder (as an orphaned backend would be): kept.
    holder = subprocess.Popen(["sleep", "300"], cwd=pg.data_dir)
    try:
        with pytest.raises(EmbeddedError, match=str(holder.pid)):
            pg.clear_stale_lock(wait=0.3)
        assert pid_file.exists()
        holder.kill()
        holder.wait(10)
        pg.start(fast=True)  # the lock is cleared, the server starts on the same folder
        assert pg.proc is not None and pg.proc.poll() is None
        assert int(pid_file.read_text().split()[0]) == pg.proc.pid
        assert stranger.poll() is None  # never signalled
    finally:
        for proc in (stranger, holder):
            proc.kill()
            proc.wait(10)
        pg.stop()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout}s"
        time.sleep(0.1)


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_make_run_restarts_a_crashed_postgres_and_valkey(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWVIZ_")}
    env.pop("DATABASE_URL", None)
    env.pop("VALKEY_URL", None)
    pg_port, valkey_port = free_port(), free_port()
    env.update(
        FLOWVIZ_DATA_DIR=str(tmp_path / "data"),
        FLOWVIZ_PG_PORT=str(pg_port),
        FLOWVIZ_VALKEY_PORT=str(valkey_port),
        FLOWVIZ_ADMIN_USER="root-admin",
        FLOWVIZ_ADMIN_PASSWORD="a-long-admin-pass-2026",
        FLOWVIZ_DRAIN_SECONDS="1",
        FLOWVIZ_HEALTH_INTERVAL="0.2",
        PYTHONPATH=str(ROOT),
    )
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in ("health", "lots", "genealogy", "qc"):
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    env["FLOWVIZ_TOKEN_TTL"] = "3600"  # the test's tokens live an hour
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    # make run keeps the keys it finds in its data folder: made here, so the test can sign tokens.
    made = keys.write_keys(tmp_path / "data" / "keys")
    signing = keys.parse_private("token.key", made["FLOWVIZ_TOKEN_PRIVATE_KEY@lots"])
    admin = {
        "authorization": f"Bearer {auth.issue_token('root-admin', 'admin', key=signing, ttl_seconds=3600)}"
    }
    log_path = tmp_path / "run.log"
    pg_pids: list[int] = []  # the postmaster before and after the crash
    valkey_pids: list[int] = []
    with open(log_path, "wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "flowviz.tools.cli", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def log() -> str:
        return log_path.read_text(errors="replace")

    def postmaster() -> int:
        return int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])

    def valkey_pid() -> int:
        # make run's Valkey asks for the password it wrote into its mode-0600 config.
        conf = (tmp_path / "data" / "valkey" / "valkey.conf").read_text()
        password = conf.split("requirepass ", 1)[1].split()[0]
        with valkey.Valkey(port=valkey_port, password=password, socket_timeout=2) as client:
            return int(client.info("server")["process_id"])

    try:
        wait_for("healthy", lambda: answers(base + "/api/health"), timeout=180)
        assert answers(base + "/api/lots/RAW-BEEF-001", admin)

        pg_pids.append(postmaster())
        kill_group(pg_pids[0])
        wait_for("restarted", lambda: "!!! postgres restarted" in log())
        assert f"!!! postgres (pid {pg_pids[0]}) exited" in log()
        pg_pids.append(postmaster())
        assert pg_pids[1] != pg_pids[0]
        # The services reconnect on their own: an uncached read answers again.
        wait_for("reading the database again", lambda: answers(base + "/api/lots/RAW-SPICE-001", admin), 30)

        valkey_pids.append(valkey_pid())
        os.kill(valkey_pids[0], signal.SIGKILL)
        wait_for("restarted", lambda: "!!! valkey restarted" in log())
        assert f"!!! valkey (pid {valkey_pids[0]}) exited" in log()
        valkey_pids.append(valkey_pid())
        wait_for("healthy again", lambda: answers(base + "/api/health"), 30)
        assert answers(base + "/api/traceability/FG-DONER-X1", admin)

        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, log()
        assert "stopped; data kept for the next run" in log()
    finally:
        if run.poll() is None:  # a failed assertion: stop it as Ctrl-C would, by force if need be
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait(10)
                with contextlib.suppress(OSError, ValueError):
                    kill_group(postmaster())
                with contextlib.suppress(OSError, valkey.ValkeyError):
                    os.kill(valkey_pid(), signal.SIGKILL)
