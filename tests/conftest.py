"""Real servers for the tests: embedded PostgreSQL and Valkey on free ports, and (for the
end-to-end tests) every service and the gateway as real processes."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flowviz.core import auth, keys, passwords
from flowviz.core.config import DATABASE_ROLES, DEFAULT_METRICS_PORTS, DEFAULT_PORTS, OWNER_ROLE
from flowviz.tools import dbroles, migrate, seed
from flowviz.tools.embedded import Postgres, Valkey, free_port

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "flowviz_template"
# Keys made for this test session: the user-token key (its private half only the lots process
# gets), one service key per process, and the cache's HMAC secret (the services get it). From a
# random seed kept in the environment: pytest imports this file as `conftest` and the tests as
# `tests.conftest`, and both must hold the same keys.
_SEED = os.environ.setdefault("FLOWVIZ_TEST_KEY_SEED", secrets.token_hex(32))


def _session_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{_SEED}:{name}".encode()).digest())


TOKEN_KEY = _session_key("token")
SERVICE_KEYS = {name: _session_key(name) for name in keys.SERVICE_NAMES}
TRUSTED = auth.TrustedKeys(TOKEN_KEY.public_key(), {n: k.public_key() for n, k in SERVICE_KEYS.items()})
CACHE_SECRET = "test-cache-" + "0123456789abcdefghijklmnopqrstuvwxyz"
PUBLIC_KEY_ENV = {
    keys.TOKEN_PUBLIC_ENV: keys.text(TOKEN_KEY.public_key()),
    keys.SERVICE_PUBLIC_ENV: ",".join(f"{n}={keys.text(k.public_key())}" for n, k in SERVICE_KEYS.items()),
}


def own_keys(service: str) -> dict[str, str]:
    """The private settings of process `service` (lots, ..., gateway): its own service key, and
    for lots the user-token key."""
    env = {keys.SERVICE_KEY_ENV: keys.text(SERVICE_KEYS[service])}
    if service == "lots":
        env[keys.TOKEN_PRIVATE_ENV] = keys.text(TOKEN_KEY)
    return env


# One user per role, created in the session database, with password f"{role}-pass-2026".
USERS = {"ana": "viewer", "omar": "operator", "quinn": "qc", "ada": "admin"}


def token(
    username: str,
    role: str | None = None,
    ttl: int = 3600,
    generation: int = 0,
    session_start: int | None = None,
) -> str:
    return auth.issue_token(
        username,
        role or USERS[username],
        key=TOKEN_KEY,
        ttl_seconds=ttl,
        generation=generation,
        session_start=session_start,
    )


def current_token(system: System, username: str, role: str | None = None) -> str:
    """A token for `username` at their current token generation (as a sign-in now would give)."""
    import valkey

    from flowviz.core import revocation

    with valkey.Valkey.from_url(system.env["VALKEY_URL"]) as client:
        raw = client.get(revocation.key(system.env["DATABASE_URL"], username))
    return token(username, role, generation=int(raw or 0))


def bearer(username: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(username)}"}


@dataclass
class Servers:
    pg: Postgres
    valkey: Valkey
    tmp: Path

    def url(self, database: str) -> str:
        return self.pg.url_of(database)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url("postgres"), autocommit=True)


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("servers")
    pg = Postgres(tmp / "pg", free_port())
    pg.init(fast=True)
    pg.start(fast=True)
    vk = Valkey(tmp / "valkey", free_port())
    vk.start()
    s = Servers(pg, vk, tmp)
    (tmp / "logs").mkdir()
    with s.admin() as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}" OWNER {OWNER_ROLE}')
    # As make run does: migrations as the owner, then the service roles they made may log in.
    migrate.upgrade(pg.owner_url_of(TEMPLATE))
    migrate.upgrade(pg.owner_url)
    pg.enable_service_roles()
    seed.load(pg.url)
    add_users(pg.url)
    yield s
    vk.stop()
    pg.stop()


_db_numbers = itertools.count()


@pytest.fixture
def empty_db_url(servers: Servers) -> Iterator[str]:
    """A fresh database of its own, migrated to head, with no rows."""
    name = f"t{os.getpid()}_{next(_db_numbers)}"
    with servers.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    yield servers.url(name)
    with servers.admin() as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def seeded_db_url(empty_db_url: str) -> str:
    """A fresh database of its own holding the seed data."""
    seed.load(empty_db_url)
    return empty_db_url


@dataclass
class System:
    """Every service and the gateway as processes, on free ports."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.env['FLOWVIZ_GATEWAY_PORT']}"

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.env[f'FLOWVIZ_{name.upper()}_PORT']}"

    def start(self, name: str, module: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run `module` with its own keys; a service connects as its own role
        (FLOWVIZ_<SVC>_DATABASE_URL, from system_env), the gateway gets no DATABASE_URL, as under
        make run; `env` on top."""
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        child = {k: v for k, v in self.env.items() if not k.endswith("_DATABASE_URL")}
        service = module.removeprefix("services.")
        if own := self.env.get(f"FLOWVIZ_{service.upper()}_DATABASE_URL"):
            child["DATABASE_URL"] = own
        if module == "gateway":
            child.pop("DATABASE_URL", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**child, **own_keys(module.rsplit(".", 1)[-1]), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                r = httpx.get(self.base + "/api/health", timeout=1)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"system not healthy after {timeout}s: {last}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def system_env(servers: Servers, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWVIZ_")}
    env.update(
        DATABASE_URL=database_url,
        VALKEY_URL=servers.valkey.url,
        FLOWVIZ_DRAIN_SECONDS="2",
        FLOWVIZ_HEALTH_INTERVAL="0.2",
        FLOWVIZ_LOG_FORMAT="json",
        FLOWVIZ_CACHE_SECRET=CACHE_SECRET,
        **PUBLIC_KEY_ENV,
        FLOWVIZ_TOKEN_TTL="3600",  # the tests' own tokens live an hour (token()); longer are refused
        # The tests' receivers are on loopback; nothing else is a target, and no name is looked up.
        FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE="1",
        FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY="1",
        # The tests fire a user's exports and traces back to back far faster than a person (and
        # schemathesis by the thousand): only the concurrency bound, not the minimum hold
        # (default 250 ms), which tests/test_heavy_calls.py tests on its own.
        FLOWVIZ_HEAVY_MIN_MS="0",
        PYTHONPATH=str(ROOT),
    )
    # Each service's own role on the same database (System.start picks it); the roles' passwords
    # are `servers.pg`'s (enable_service_roles()).
    if database_url:
        passwords = servers.pg.role_passwords()
        for name, role in DATABASE_ROLES.items():
            env[f"FLOWVIZ_{name.upper()}_DATABASE_URL"] = dbroles.role_url(
                database_url, role, passwords[role]
            )
    for name in DEFAULT_PORTS:
        env[f"FLOWVIZ_{name.upper()}_PORT"] = str(free_port())
    for name in DEFAULT_METRICS_PORTS:
        env[f"FLOWVIZ_{name.upper()}_METRICS_PORT"] = str(free_port())
    return env


@contextlib.contextmanager
def running_system(
    servers: Servers,
    database_url: str,
    suffix: str = "",
    env: dict[str, str] | None = None,
    valkey_db: int = 0,
) -> Iterator[System]:
    """Every service and the gateway, on free ports, over `database_url` (and `env` on top), with
    Valkey database `valkey_db` (a system that fails many logins keeps its throttle counts to itself)."""
    sys_ = System({**system_env(servers, database_url), **(env or {})}, servers.tmp / "logs")
    sys_.env["VALKEY_URL"] = servers.valkey.url.rsplit("/", 1)[0] + f"/{valkey_db}"
    for name in ("lots", "genealogy", "qc", "health", "events"):
        sys_.start(name + suffix, f"services.{name}")
    sys_.start("gateway" + suffix, "gateway")
    try:
        sys_.wait_healthy()
        yield sys_
    finally:
        sys_.stop()


def add_users(database_url: str) -> None:
    """One user per role (USERS), with password f"{role}-pass-2026"."""
    with psycopg.connect(database_url) as conn:
        for name, role in USERS.items():
            conn.execute(
                "INSERT INTO users (username, display_name, role, password_hash) VALUES (%s, %s, %s, %s)",
                (name, name.title(), role, passwords.hash_password(f"{role}-pass-2026")),
            )


@pytest.fixture(scope="session")
def system(servers: Servers) -> Iterator[System]:
    """The whole system on the session's seeded database."""
    with running_system(servers, servers.pg.url) as sys_:
        yield sys_


@pytest.fixture
def http(system: System) -> Iterator[httpx.Client]:
    """An HTTP client to the gateway, signed in as the admin."""
    with httpx.Client(base_url=system.base, timeout=10, headers=bearer("ada")) as client:
        yield client


@pytest.fixture
def anonymous(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base, timeout=10) as client:
        yield client


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds a bearer token to every call of a channel (the gateway does this for HTTP clients)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def _add(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), ("authorization", self.value)]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._add(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._add(details), request)


def grpc_channel(address: str, username: str | None = "ada") -> grpc.Channel:
    """A channel to a service, signed in as `username` (None: no token)."""
    channel = grpc.insecure_channel(address)
    if username is None:
        return channel
    return grpc.intercept_channel(channel, _Bearer(f"Bearer {token(username)}"))
