"""Each service connects as its own PostgreSQL role with only its tables' grants (migration
0011): the only-writer rule and the append-only history are the database's, not a convention."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from flowviz.core.config import DATABASE_ROLES, OWNER_ROLE, ConfigError
from flowviz.tools import dbroles, local, migrate, seed
from flowviz.tools.embedded import PG_BIN, Postgres, Valkey, free_port
from tests.conftest import ROOT, Servers, System

# Who may INSERT into each table (the services' roles); a new table needs its writer here and a
# GRANT in its migration.
WRITERS = {
    "lots": {"lots", "genealogy"},  # raw lots; a run's outputs and received lots
    "streams": {"lots"},
    "phases": {"lots"},
    "users": {"lots"},
    "trading_partners": {"lots"},
    "locations": {"lots"},
    "production_runs": {"genealogy"},
    "lot_genealogy": {"genealogy"},
    "receipts": {"genealogy"},
    "shipments": {"genealogy"},
    "scenarios": {"genealogy"},
    "run_voids": {"genealogy"},
    "voided_edges": {"genealogy"},
    "lot_corrections": {"genealogy"},
    "import_overrides": {"genealogy"},
    "qc_gates": {"qc"},
    "qc_decisions": {"qc"},
    "qc_lot_blocks": {"qc"},
    "qc_lot_status": {"qc"},
    "audit_log": {"lots", "genealogy", "qc", "events"},
    "event_outbox": {"qc", "genealogy"},
    "event_subscriptions": {"events"},
    "event_deliveries": {"events"},
    "event_fanout_cursor": {"events"},
    "genealogy_event_blocks": {"genealogy"},
    "genealogy_event_cursor": {"genealogy"},
    "alembic_version": set(),
}


def _database(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _as(servers: Servers, service: str, url: str) -> psycopg.Connection:
    return psycopg.connect(servers.pg.service_url(service, _database(url)), autocommit=True)


def test_every_table_has_exactly_its_writers(servers: Servers, empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert tables == set(WRITERS), "a table without a writer here (and a GRANT in its migration)"
        for table in tables:
            for service, role in DATABASE_ROLES.items():
                may = {
                    p: conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, p)).fetchone()[0]  # type: ignore[index]
                    for p in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "SELECT")
                }
                assert may["INSERT"] == (service in WRITERS[table]), (table, role)
                assert not may["TRUNCATE"], (table, role)
                if service not in WRITERS[table]:
                    assert not (may["UPDATE"] or may["DELETE"]), (table, role)
                # Reading is shared, except for health (it asks SELECT 1).
                assert may["SELECT"] == (service != "health"), (table, role)


@pytest.mark.parametrize(
    ("service", "statement"),
    [
        ("genealogy", "INSERT INTO qc_decisions (lot_id, gate_id, decision, reason, decided_by) VALUES (1, 1, 'pass', '', 1)"),
        ("lots", "INSERT INTO lot_genealogy (parent_lot_id, child_lot_id, quantity, uom, run_id) VALUES (1, 2, 1, 'kg', 1)"),
        ("lots", "DELETE FROM lot_genealogy"),
        ("qc", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('X-1', 'RAW', 'x', 1, 'kg')"),
        ("qc", "UPDATE users SET role = 'admin'"),
        ("genealogy", "UPDATE users SET password_hash = '!'"),
        ("genealogy", "UPDATE lots SET lot_code = 'RENAMED'"),  # only quantity, unit, product (corrections)
        ("lots", "INSERT INTO qc_gates (code, name) VALUES ('G-X', 'x')"),
        ("health", "SELECT count(*) FROM users"),
    ],
)  # fmt: skip
def test_a_service_cannot_write_another_services_table(
    servers: Servers, empty_db_url: str, service: str, statement: str
) -> None:
    with _as(servers, service, empty_db_url) as conn, pytest.raises(errors.InsufficientPrivilege) as refused:
        conn.execute(statement)
    assert "permission denied for table" in str(refused.value)


@pytest.mark.parametrize("service", ["lots", "genealogy", "qc"])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET reason = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE qc_decisions SET reason = 'x'",
        "DELETE FROM qc_decisions",
        "TRUNCATE qc_decisions",
    ],
)
def test_no_service_may_change_the_history(
    servers: Servers, seeded_db_url: str, service: str, statement: str
) -> None:
    """Refused by the grants (before the append-only triggers, which say 'append-only')."""
    with _as(servers, service, seeded_db_url) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as refused:
            conn.execute(statement)
        assert "permission denied for table" in str(refused.value)
        # ... nor switch the triggers off, as the reviewer did as superuser.
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")


def test_the_services_seal_the_audit_chain_only_through_the_sealer(
    servers: Servers, empty_db_url: str
) -> None:
    """flowviz_audit_seal() (migration 0013) runs as the owner: the audit-writing services may
    EXECUTE it and still not UPDATE audit_log; health may not even call it."""
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute(
            "SELECT prosecdef, pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'flowviz_audit_seal'"
        ).fetchone()
        assert row == (True, OWNER_ROLE)
        for service, role in DATABASE_ROLES.items():
            may = conn.execute(
                "SELECT has_function_privilege(%s, 'flowviz_audit_seal(integer, boolean)', 'EXECUTE')",
                (role,),
            ).fetchone()
            assert may == (service != "health",), service
    with _as(servers, "qc", empty_db_url) as conn:
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_key) VALUES ('t', 'create', 'gate', 'G')"
        )
        conn.execute("CREATE TEMP TABLE audit_log (LIKE public.audit_log)")  # never the one sealed
        assert conn.execute("SELECT flowviz_audit_seal(10, false)").fetchone() == (1,)
        assert conn.execute("SELECT seq FROM public.audit_log").fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE public.audit_log SET seq = NULL, prev_hash = NULL, hash = NULL")
    with _as(servers, "health", empty_db_url) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT flowviz_audit_seal(10, false)")


def test_a_service_writes_its_own_tables(servers: Servers, seeded_db_url: str) -> None:
    """The grants are enough for what the services do (the end-to-end tests do all of it)."""
    with _as(servers, "qc", seeded_db_url) as conn:
        conn.execute(
            "INSERT INTO qc_gates (code, name, phase_id) SELECT 'G-ROLE', 'role test', min(id) FROM phases"
        )
        conn.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_key) VALUES ('t', 'create', 'gate', 'G-ROLE')"
        )


def test_the_roles_are_not_privileged_and_the_owner_owns_the_schema(
    servers: Servers, empty_db_url: str
) -> None:
    with psycopg.connect(empty_db_url) as conn:
        for role in [*DATABASE_ROLES.values(), OWNER_ROLE]:
            row = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
                "FROM pg_roles WHERE rolname = %s",
                (role,),
            ).fetchone()
            assert row is not None, role
            assert row[:2] == (False, False) and row[3:] == (False, False, True), (role, row)
            assert row[2] == (role == OWNER_ROLE), role  # the owner creates migration 0011's roles
        owners = {
            r[0]
            for r in conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        }
    assert owners == {OWNER_ROLE}
    # The passwords are their owner's only, as the superuser's is.
    assert servers.pg.roles_file.stat().st_mode & 0o077 == 0


def test_the_running_system_connects_as_the_service_roles(servers: Servers, system: System) -> None:
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        seen = dict(
            conn.execute(
                "SELECT DISTINCT application_name, usename FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'flowviz-%'"
            ).fetchall()
        )
    # genealogy's second pool, for the large answers it builds off its serving loop, too.
    expected = {f"flowviz-{s}": r for s, r in DATABASE_ROLES.items()}
    assert seen == expected | {"flowviz-genealogy-heavy": DATABASE_ROLES["genealogy"]}
    for service in DATABASE_ROLES:
        assert "not connected as this service's own role" not in system.log(service)
    # The gateway holds no database secret: not in its environment at all.
    gateway = system.procs["gateway"].pid
    environ = Path(f"/proc/{gateway}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if b"DATABASE_URL" in v or b"postgresql://" in v]


def test_the_migrate_job_sets_a_services_password_from_its_url(tmp_path: Path) -> None:
    """python -m flowviz.tools.dbroles as the owner (not a superuser), as the migrate job runs it, on a
    server of its own (roles are the whole server's: the session's must keep their passwords)."""
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    try:
        migrate.upgrade(pg.owner_url)  # the roles now exist, NOLOGIN
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.service_url("health")).close()
        url = dbroles.role_url(pg.url, DATABASE_ROLES["health"], "a-new-password-for-this-test-7")
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        env |= {"DATABASE_URL": pg.owner_url, "FLOWVIZ_HEALTH_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-m", "flowviz.tools.dbroles"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "flowviz_health (health): password set" in done.stdout
        assert "flowviz_lots (lots): no URL given" in done.stdout
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("flowviz_health",)
        with pytest.raises(psycopg.OperationalError):  # lots was not given a URL: still NOLOGIN
            psycopg.connect(pg.service_url("lots")).close()
    finally:
        pg.stop()


def test_the_migrate_job_refuses_a_url_naming_another_role(servers: Servers) -> None:
    wrong = dbroles.role_url(servers.pg.url, "flowviz_owner", "x" * 24)
    with pytest.raises(ConfigError, match="must connect as flowviz_qc"):
        dbroles.from_environment({"FLOWVIZ_QC_DATABASE_URL": wrong})
    placeholder = dbroles.role_url(servers.pg.url, "flowviz_qc", "flowviz-dev-password")
    with pytest.raises(ConfigError, match="placeholder"):
        dbroles.from_environment({"FLOWVIZ_QC_DATABASE_URL": placeholder})


def test_a_data_folder_migrated_by_the_superuser_is_handed_to_the_owner(tmp_path: Path) -> None:
    """make run's data folder from before the owner role: its tables become the owner's at the next
    start, and the owner migrates on from there."""
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    try:
        migrate.upgrade(pg.url, "0010")  # as the superuser, as make run did
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("ALTER DATABASE flowviz OWNER TO postgres")
            conn.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
            conn.execute("REASSIGN OWNED BY flowviz_owner TO postgres")
        pg.stop()
        pg.start(fast=True)
        migrate.upgrade(pg.owner_url)
        pg.enable_service_roles()
        with psycopg.connect(pg.url) as conn:
            owners = {
                r[0]
                for r in conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            }
            functions = conn.execute(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' AND p.proname LIKE 'flowviz%%' AND pg_get_userbyid(p.proowner) <> %s",
                (OWNER_ROLE,),
            ).fetchone()
        assert owners == {OWNER_ROLE} and functions == (0,)
        with psycopg.connect(pg.service_url("qc")) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_log")
    finally:
        pg.stop()


def test_the_deployments_path_init_script_migrate_job_and_services(tmp_path: Path) -> None:
    """What compose and the dev overlay do, on an embedded server: the postgres image's init
    script (deploy/k8s/overlays/dev/postgres-owner.sh, run with psql as the superuser) makes the
    owner; the migrate job migrates as the owner and sets the roles' passwords; a service's URL
    then connects with only its grants."""
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    try:
        with psycopg.connect(pg.url_of("postgres"), autocommit=True) as conn:  # a fresh server's state
            conn.execute("DROP DATABASE flowviz")
            conn.execute("DROP ROLE flowviz_owner")
        script = ROOT / "deploy/k8s/overlays/dev/postgres-owner.sh"
        env = {"PATH": f"{PG_BIN}:{os.environ['PATH']}", "POSTGRES_USER": "postgres", "PGHOST": "127.0.0.1",
               "PGPORT": str(pg.port), "PGPASSWORD": pg.password, "FLOWVIZ_OWNER_PASSWORD": "owner-pw-for-this-test-1"}  # fmt: skip
        done = subprocess.run(
            ["sh", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        owner = dbroles.role_url(pg.url, OWNER_ROLE, "owner-pw-for-this-test-1")
        services = {
            s: dbroles.role_url(pg.url, r, f"{s}-pw-for-this-test-1") for s, r in DATABASE_ROLES.items()
        }
        job = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
        job |= {"DATABASE_URL": owner, "PYTHONPATH": str(ROOT)}
        job |= {f"FLOWVIZ_{s.upper()}_DATABASE_URL": url for s, url in services.items()}
        for module in ("flowviz.tools.migrate", "flowviz.tools.dbroles", "flowviz.tools.seed"):
            done = subprocess.run(
                [sys.executable, "-m", module],
                env=job,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (module, done.stderr)
        with psycopg.connect(services["genealogy"]) as conn:
            assert conn.execute("SELECT count(*) > 0 FROM lots").fetchone() == (True,)
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("INSERT INTO qc_gates (code, name) VALUES ('G-X', 'x')")
        with psycopg.connect(owner) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (
                False,
            )
    finally:
        pg.stop()


def test_tls_urls_to_the_data_stores_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README's TLS note says works today: sslmode in DATABASE_URL, valkeys:// for Valkey."""
    from flowviz.core.config import settings
    from tests.conftest import PUBLIC_KEY_ENV

    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql://flowviz_lots:a-real-one-7@db.example:5432/flowviz?sslmode=verify-full"
    )
    monkeypatch.setenv("VALKEY_URL", "valkeys://:a-real-one-8@cache.example:6380/0")
    settings.cache_clear()
    try:
        assert settings().valkey_url.startswith("valkeys://")
        assert settings().database_url.endswith("?sslmode=verify-full")
    finally:
        settings.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_can_use_no_role(servers: Servers) -> None:
    """As `nobody`: no role logs in without its password, and the passwords are not readable."""
    entry = pwd.getpwnam("nobody")
    as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"}  # no PGPASSWORD, no .pgpass
    for role in [OWNER_ROLE, *DATABASE_ROLES.values()]:
        args = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(servers.pg.port), "-U", role, "-w",
                "-d", "flowviz", "-c", "select 1"]  # fmt: skip
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=30, check=False, **as_user
        )
        assert done.returncode != 0 and "password" in done.stderr, (role, done.stderr)
    read = subprocess.run(["cat", str(servers.pg.roles_file)], capture_output=True, check=False, **as_user)
    assert read.returncode != 0 and b"flowviz_owner" not in read.stdout


def test_backup_and_restore_from_make_runs_state_on_a_handed_over_folder(tmp_path: Path) -> None:
    """The command line finds make run's owner URL; a restore uses its superuser (an older data
    folder's pg_trgm belongs to the superuser, and a restore replaces it)."""
    pg = Postgres(tmp_path / "pg", free_port())
    vk = Valkey(tmp_path / "valkey", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    vk.start()
    try:
        migrate.upgrade(pg.url, "0010")  # as the superuser, as make run did
        pg.stop()
        pg.start(fast=True)
        migrate.upgrade(pg.owner_url)
        pg.enable_service_roles()
        seed.load(pg.owner_url)
        local.write_state(
            tmp_path / "data", database_url=pg.owner_url, valkey_url=vk.url, admin_database_url=pg.url
        )
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VALKEY_URL")}
        env |= {"FLOWVIZ_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
        for command in ("backup", "restore"):
            done = subprocess.run(
                [sys.executable, "-m", "flowviz.tools.cli", command, str(tmp_path / "flowviz.dump")],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (command, done.stderr)
        with psycopg.connect(pg.service_url("lots")) as conn:  # the grants came back with the data
            assert conn.execute("SELECT count(*) > 0 FROM lots").fetchone() == (True,)
    finally:
        local.clear_state(tmp_path / "data")
        vk.stop()
        pg.stop()
