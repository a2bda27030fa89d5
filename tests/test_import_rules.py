"""Bulk import against the running system: the production-run rules over HTTP, the admin-only
historical mode, the CLI import clearing the cache of a running system, and the CLI's messages
(a wrong DATABASE_URL, an unknown user, make run's database found on its own, reset-password)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import valkey

from flowviz.tools import accounts, local
from flowviz.tools.embedded import free_port
from tests.conftest import ROOT, Servers, System, bearer, system_env
from tests.test_production import decide, lot

LOTS = "lot_code,kind,product,quantity,uom,produced_at\n"
EDGES = "parent_lot_code,child_lot_code,quantity,uom,run_code\n"


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def upload(client: httpx.Client, lots: str, edges: str, **params: str) -> httpx.Response:
    files = {"lots": ("lots.csv", lots), "genealogy": ("genealogy.csv", edges)}
    return client.post("/api/import", files=files, params=params)


def as_user(system: System, username: str) -> httpx.Client:
    return httpx.Client(base_url=system.base, timeout=30, headers=bearer(username))


def held_raw_lot(http: httpx.Client, t: str) -> tuple[str, str]:
    """A 10 kg raw lot on hold, and a lots file of one new mix."""
    lot(http, f"RAW-{t}", "RAW", 10)
    assert decide(http, f"RAW-{t}", "hold", "supplier recall").status_code == 201
    return f"RAW-{t}", LOTS + f"MIX-{t},MIX,Mix,30,kg,\n"


def test_an_import_that_consumes_a_held_lot_is_refused_naming_the_row(
    http: httpx.Client, system: System
) -> None:
    t = tag()
    raw, lots = held_raw_lot(http, t)
    with as_user(system, "omar") as operator:
        r = upload(operator, lots, EDGES + f"{raw},MIX-{t},30,kg,RUN-{t}\n")
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["ok"] is False and body["lots_imported"] == 0
        by_rule = {e["rule"]: e for e in body["errors"]}
        assert set(by_rule) == {"LOT_BLOCKED", "INSUFFICIENT_QUANTITY"}
        blocked = by_rule["LOT_BLOCKED"]
        assert (blocked["file"], blocked["row"], blocked["field"], blocked["value"]) == (
            "genealogy", 1, "parent_lot_code", raw
        )  # fmt: skip
        assert blocked["reason"].startswith(f"input {raw} is on_hold (decision ")
        over = by_rule["INSUFFICIENT_QUANTITY"]
        assert (over["field"], over["value"]) == ("quantity", "30 kg")
        assert (
            f"{raw} holds 10 kg not yet consumed or shipped (of 10)" in over["reason"]
            and "30 kg" in over["reason"]
        )
        assert operator.get(f"/api/lots/MIX-{t}").status_code == 404


@pytest.mark.parametrize("username", ["ana", "omar", "quinn"])
def test_only_an_admin_may_import_historically(system: System, username: str) -> None:
    t = tag()
    with as_user(system, username) as client:
        r = upload(client, LOTS + f"L-{t},RAW,Salt,1,kg,\n", EDGES, mode="historical")
        assert r.status_code == 403, r.text
        if username == "omar":  # may import, by the rules: told which role historical mode needs
            assert "historical import needs the role admin" in r.json()["error"]["message"]
        assert client.get(f"/api/lots/L-{t}").status_code in (403, 404)


def test_a_large_historical_upload_by_an_operator_is_refused_with_the_reason(system: System) -> None:
    # The service refuses on the first chunk while the gateway is still sending the rest: the
    # answer must still be the refusal (a grpc aio client could report INTERNAL instead).
    t = tag()
    rows = "".join(f"L-{t}-{i},RAW,Salt,1,kg,\n" for i in range(100_000))
    with as_user(system, "omar") as client:
        r = upload(client, LOTS + rows, EDGES, mode="historical")
        assert r.status_code == 403, r.text
        assert "historical import needs the role admin" in r.json()["error"]["message"]
        assert client.get(f"/api/lots/L-{t}-0").status_code == 404


def test_an_unknown_mode_is_refused_naming_the_field(http: httpx.Client) -> None:
    r = upload(http, LOTS, EDGES, mode="lenient")
    assert r.status_code == 400
    assert r.json()["error"]["details"] == {"field": "mode"} and "historical" in r.json()["error"]["message"]


def test_historical_import_loads_it_with_warnings_an_audit_trail_and_the_flag(
    http: httpx.Client, servers: Servers
) -> None:
    t = tag()
    raw, lots = held_raw_lot(http, t)
    r = upload(http, lots, EDGES + f"{raw},MIX-{t},30,kg,RUN-{t}\n", mode="historical")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["ok"], body["lots_imported"], body["edges_imported"], body["errors"]) == (True, 1, 1, [])
    assert [(w["row"], w["rule"]) for w in body["warnings"]] == [
        (1, "INSUFFICIENT_QUANTITY"),
        (1, "LOT_BLOCKED"),
    ]
    # The edge is there as it was, and both its lots say so in their mass balance.
    parents = http.get(f"/api/traceability/MIX-{t}").json()["parents"]
    assert [(p["lot_code"], p["edge_quantity"]) for p in parents] == [(raw, 30.0)]
    balance = http.get(f"/api/lots/{raw}/mass-balance").json()
    assert {"OVERCONSUMED", "HISTORICAL_IMPORT"} <= set(balance["flags"]) and balance["remaining"] == -20
    assert "HISTORICAL_IMPORT" in http.get(f"/api/lots/MIX-{t}/mass-balance").json()["flags"]
    with psycopg.connect(servers.pg.url) as conn:
        audit = conn.execute(
            "SELECT actor, details ->> 'rule' FROM audit_log WHERE action = 'import_override' AND entity_key = %s"
            " ORDER BY id",
            (raw,),
        ).fetchall()
    assert audit == [("ada", "INSUFFICIENT_QUANTITY"), ("ada", "LOT_BLOCKED")]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`flowviz ...` as a user runs it, in a process of its own."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VALKEY_URL", "FLOWVIZ_DATA_DIR")
    }
    return subprocess.run(
        [sys.executable, "-m", "flowviz.tools.cli", *args],
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_a_cached_trace_shows_the_edge_of_a_cli_import_at_once(
    http: httpx.Client, servers: Servers, tmp_path: Path
) -> None:
    t = tag()
    lot(http, f"RAW-{t}", "RAW", 10)
    assert http.get(f"/api/traceability/RAW-{t}").json()["children"] == []
    # The answer is in Valkey now (stored just after it was sent), so a stale one could be served.
    cache = valkey.Valkey.from_url(servers.valkey.url)
    deadline = time.monotonic() + 10
    while not any(cache.hexists(k, "neighbours") for k in cache.scan_iter(match=f"fv:*:lot:RAW-{t}")):
        assert time.monotonic() < deadline, "the trace was never cached"
        time.sleep(0.01)
    (tmp_path / "lots.csv").write_text(LOTS + f"MIX-{t},MIX,Mix,4,kg,\n")
    (tmp_path / "edges.csv").write_text(EDGES + f"RAW-{t},MIX-{t},4,kg,RUN-{t}\n")
    env = {"DATABASE_URL": servers.pg.url, "VALKEY_URL": servers.valkey.url}
    done = cli("import", "-q", str(tmp_path / "lots.csv"), str(tmp_path / "edges.csv"), env=env)
    assert done.returncode == 0, done.stderr
    children = http.get(f"/api/traceability/RAW-{t}").json()["children"]
    assert [(c["lot_code"], c["run_code"]) for c in children] == [(f"MIX-{t}", f"RUN-{t}")]


BAD_URLS = [
    "postgresql://nobody@127.0.0.1:1/nothing",  # nothing listens there
    "postgresql://nobody@no-such-host.invalid/nothing",
    "mysql://root@127.0.0.1/flowviz",
]


@pytest.mark.parametrize("url", BAD_URLS, ids=["refused", "unknown-host", "not-postgresql"])
@pytest.mark.parametrize(
    "args", [("migrate",), ("seed",), ("user", "add", "x", "--role", "viewer", "--password-stdin")], ids=str
)
def test_a_wrong_database_url_is_one_line_without_a_traceback(
    url: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    done = cli(
        *args, env={"DATABASE_URL": url, "FLOWVIZ_DATA_DIR": str(tmp_path)}, stdin="a long password 1\n"
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("flowviz: ") and "DATABASE_URL" in done.stderr


def test_the_import_with_a_wrong_database_url_and_a_bad_file(tmp_path: Path) -> None:
    (tmp_path / "lots.csv").write_text(LOTS)
    env = {"DATABASE_URL": BAD_URLS[0], "FLOWVIZ_DATA_DIR": str(tmp_path)}
    done = cli("import", "-q", str(tmp_path / "lots.csv"), env=env)
    assert (done.returncode, "Traceback" in done.stderr) == (1, False)
    assert done.stderr.strip().splitlines()[-1].startswith("flowviz: cannot use the database at ")
    missing = cli("import", str(tmp_path / "nope.csv"), env=env)
    assert missing.returncode != 0 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_without_database_url_or_make_run_the_message_says_what_to_set(tmp_path: Path) -> None:
    done = cli("user", "reset-password", "ada", "--password-stdin", env={"FLOWVIZ_DATA_DIR": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "DATABASE_URL is not set and no `make run`" in done.stderr
    assert f"postgresql://postgres:$(cat {tmp_path}/postgres-password)@127.0.0.1:5433/flowviz" in done.stderr


def test_reset_password_finds_make_runs_database_and_the_user_can_sign_in(
    system: System, servers: Servers, tmp_path: Path
) -> None:
    name = f"rp{tag().lower()}"
    assert accounts.add_user(servers.pg.url, name, "viewer", "the old password 2026")
    # What `make run` leaves in its data folder while it runs (here: this test process, alive).
    local.write_state(tmp_path, database_url=servers.pg.url, valkey_url=servers.valkey.url)
    env = {"FLOWVIZ_DATA_DIR": str(tmp_path)}
    done = cli("user", "reset-password", name, "--password-stdin", env=env, stdin="a brand new password 7\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"password of {name} reset"
    login = httpx.post(
        system.base + "/api/auth/token", json={"username": name, "password": "a brand new password 7"}
    )
    assert login.status_code == 200, login.text
    with psycopg.connect(servers.pg.url) as conn:
        rows = conn.execute(
            "SELECT actor, action FROM audit_log WHERE entity = 'user' AND entity_key = %s ORDER BY id",
            (name,),
        ).fetchall()
    assert rows == [("cli", "create"), ("cli", "reset_password")]
    unknown = cli(
        "user", "reset-password", "nobody-here", "--password-stdin", env=env, stdin="a brand new password 7\n"
    )
    assert unknown.returncode == 1 and unknown.stderr.strip() == (
        "flowviz: there is no user nobody-here; to create one: flowviz user add nobody-here --role ROLE"
    )
    taken = cli(
        "user", "add", name, "--role", "viewer", "--password-stdin", env=env, stdin="another password 99\n"
    )
    assert taken.returncode == 1 and f"flowviz user reset-password {name}" in taken.stderr


def test_a_stopped_make_run_is_not_found(tmp_path: Path) -> None:
    local.write_state(tmp_path, database_url="postgresql://postgres@127.0.0.1:5433/flowviz")
    assert local.running_state(tmp_path)["database_url"].endswith("/flowviz")
    state = tmp_path / local.STATE_FILE
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    state.write_text(state.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {gone.stdout.strip()}'))
    assert local.running_state(tmp_path) == {}


def test_the_cli_finds_the_database_of_a_running_make_run(servers: Servers, tmp_path: Path) -> None:
    # As a newcomer's shell: no data-store URL and no keys (make run makes its own).
    env = {
        k: v
        for k, v in system_env(servers, "").items()
        if k not in ("DATABASE_URL", "VALKEY_URL")
        and not k.startswith(("FLOWVIZ_TOKEN_", "FLOWVIZ_SERVICE_"))
    }
    env.update(
        FLOWVIZ_DATA_DIR=str(tmp_path / "data"),
        FLOWVIZ_PG_PORT=str(free_port()),
        FLOWVIZ_VALKEY_PORT=str(free_port()),
        FLOWVIZ_ADMIN_USER="admin",
        FLOWVIZ_ADMIN_PASSWORD="the first boss password 1",
    )
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "flowviz.tools.cli", "run"], env=env, stdout=log, stderr=log, cwd=ROOT
        )
    base = f"http://127.0.0.1:{env['FLOWVIZ_GATEWAY_PORT']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        # The first admin's password is lost: reset it with no DATABASE_URL given.
        cli_env = {"FLOWVIZ_DATA_DIR": env["FLOWVIZ_DATA_DIR"], "FLOWVIZ_PG_PORT": env["FLOWVIZ_PG_PORT"]}
        done = cli(
            "user",
            "reset-password",
            "admin",
            "--password-stdin",
            env=cli_env,
            stdin="a new boss password 2\n",
        )
        assert done.returncode == 0, done.stderr
        login = httpx.post(
            base + "/api/auth/token", json={"username": "admin", "password": "a new boss password 2"}
        )
        assert login.status_code == 200, login.text
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(60)
    assert not (tmp_path / "data" / local.STATE_FILE).exists()
    gone = cli(
        "user", "reset-password", "admin", "--password-stdin", env=cli_env, stdin="a new boss password 3\n"
    )
    assert gone.returncode == 1 and "no `make run` of this checkout is running" in gone.stderr
