"""`flowviz backup FILE` / `flowviz restore FILE` with the embedded PostgreSQL's pg_dump and
pg_restore: a round trip on the running system yields identical traces (served through the
cache: a restore orphans every cached answer), into the same database and into an empty one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from flowviz.tools import auditchain
from flowviz.tools.embedded import Valkey, free_port
from tests.conftest import ROOT, Servers, add_users, bearer, running_system
from tests.test_production import decide, lot, run


def flowviz(*args: str, database_url: str, valkey_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "VALKEY_URL": valkey_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flowviz.tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def traces(c: httpx.Client, codes: list[str]) -> dict[str, tuple[object, object, object]]:
    """Every lot's graph both ways, recall and own QC status, as the API answers them."""
    out = {}
    for code in codes:
        graph = c.get(f"/api/traceability/{code}/graph", params={"direction": "both"})
        recall = c.get(f"/api/recall/{code}")
        status = c.get(f"/api/lots/{code}/qc-status")
        assert graph.status_code == recall.status_code == status.status_code == 200, graph.text
        out[code] = (graph.json(), recall.json(), status.json())
    return out


def rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as db:
        return [
            *db.execute("SELECT lot_code, kind, product, quantity, uom FROM lots ORDER BY id"),
            *db.execute(
                "SELECT parent_lot_id, child_lot_id, quantity, run_id FROM lot_genealogy ORDER BY id"
            ),
            *db.execute("SELECT seq, encode(hash, 'hex') FROM audit_log ORDER BY seq"),
        ]


def test_a_backup_restored_yields_identical_traces(
    servers: Servers, seeded_db_url: str, tmp_path: Path
) -> None:
    add_users(seeded_db_url)
    vk = Valkey(tmp_path / "valkey", free_port())  # our own cache: its answers are about this database
    vk.start()
    file = tmp_path / "flowviz.dump"
    try:
        with (
            running_system(Servers(servers.pg, vk, servers.tmp), seeded_db_url, suffix="-backup") as sys_,
            httpx.Client(base_url=sys_.base, headers=bearer("ada"), timeout=30) as c,
        ):
            lot(c, "RAW-BK-1", "RAW", 10)
            assert run(c, "RUN-BK-1", [("RAW-BK-1", 2, "kg")], [("MIX-BK-1", "MIX", 2)]).status_code == 201
            with psycopg.connect(seeded_db_url) as db:
                codes = [r[0] for r in db.execute("SELECT lot_code FROM lots ORDER BY id")]
            before = traces(c, codes)  # and now cached
            done = flowviz("backup", str(file), database_url=seeded_db_url, valkey_url=vk.url)
            assert done.returncode == 0 and "backed up to" in done.stdout, done.stderr
            saved = rows(seeded_db_url)

            # Changed after the backup: a run and a hold, seen at once (the cache follows writes).
            assert run(c, "RUN-BK-2", [("MIX-BK-1", 1, "kg")], [("FG-BK-2", "FG", 1)]).status_code == 201
            assert decide(c, "RAW-BK-1", "hold", "after the backup").status_code == 201
            assert traces(c, codes) != before

            done = flowviz("restore", str(file), database_url=seeded_db_url, valkey_url=vk.url)
            assert done.returncode == 0 and "restored from" in done.stdout, done.stderr
            assert traces(c, codes) == before  # identical, and no answer cached before the restore
            assert c.get("/api/lots/FG-BK-2").status_code == 404
            assert rows(seeded_db_url) == saved
            assert auditchain.verify(seeded_db_url).ok
            # Writes go on after it (sequences restored too).
            assert run(c, "RUN-BK-3", [("MIX-BK-1", 1, "kg")], [("FG-BK-3", "FG", 1)]).status_code == 201
    finally:
        vk.stop()

    # Into an empty database: the same rows, the same chain.
    with servers.admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS restored WITH (FORCE)")
        admin.execute("CREATE DATABASE restored")
    empty = servers.url("restored")
    done = flowviz("restore", str(file), database_url=empty, valkey_url=servers.valkey.url)
    assert done.returncode == 0, done.stderr
    assert rows(empty) == saved
    assert auditchain.verify(empty).ok


def test_a_failed_restore_changes_nothing(empty_db_url: str, tmp_path: Path, servers: Servers) -> None:
    bad = tmp_path / "bad.dump"
    bad.write_bytes(b"PGDMP not really a dump")
    before = rows(empty_db_url)
    done = flowviz("restore", str(bad), database_url=empty_db_url, valkey_url=servers.valkey.url)
    assert done.returncode != 0 and "nothing was changed" in done.stderr
    assert rows(empty_db_url) == before
    missing = flowviz("backup", str(tmp_path / "no" / "such" / "dir.dump"), database_url=empty_db_url,
                      valkey_url=servers.valkey.url)  # fmt: skip
    assert missing.returncode != 0 and not list(tmp_path.glob("**/*.partial"))
