"""Hardening (issue 19): each test names the finding it covers and fails on the code before its fix."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowviz.core import auth, config, keys, logs, validation
from flowviz.core.config import ConfigError, settings
from flowviz.core.constraints import database_error
from flowviz.core.errors import DomainError
from flowviz.core.interceptors import interceptors
from flowviz.core.ratelimit import LoginThrottle
from flowviz.core.server import Resources
from flowviz.tools import supervisor
from services.lots import users
from tests.conftest import (
    CACHE_SECRET,
    PUBLIC_KEY_ENV,
    ROOT,
    SERVICE_KEYS,
    TOKEN_KEY,
    TRUSTED,
    Servers,
    System,
    bearer,
    own_keys,
    system_env,
    token,
)

# --- 8: validation matches the whole string; the database checks the same codes ---------------

RULES: list[tuple[Callable[[str], str], str]] = [
    (validation.lot_code, "SEC-NL"),
    (validation.kind, "RAW"),
    (validation.code, "DONER"),
    (validation.username, "eve"),
]


@pytest.mark.parametrize(("rule", "good"), RULES, ids=lambda r: getattr(r, "__name__", r))
def test_a_trailing_newline_fails_every_rule(rule: Callable[[str], str], good: str) -> None:
    assert rule(good) == good
    with pytest.raises(DomainError) as refused:
        rule(good + "\n")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT


LOT = {"kind": "RAW", "product": "x", "quantity": 1, "uom": "kg"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [("/api/lots", {**LOT, "lot_code": "SEC-NL\n"}, "lot_code"),
     ("/api/lots", {**LOT, "lot_code": "SEC-NL-KIND", "kind": "RAW\n"}, "kind"),
     ("/api/users", {"username": "eve\n", "role": "viewer", "password": "a-long-pass-phrase-2026"}, "username"),
     ("/api/streams", {"code": "SECNL\n", "name": "x"}, "code")],
)  # fmt: skip
def test_a_trailing_newline_is_a_400_naming_the_field(
    http: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == field
    if field == "lot_code":
        assert http.get("/api/lots/SEC-NL").status_code == 404


def test_a_code_with_a_newline_in_a_path_or_query_is_a_400(http: httpx.Client) -> None:
    assert http.get("/api/traceability/FG-DONER-X1%0A/export.csv").status_code == 400
    r = http.get("/api/lots", params={"lot_code_prefix": "FG\n"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "lot_code_prefix", r.text


BAD_ROWS = [
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('SEC-NL\n', 'RAW', 'x', 1, 'kg')"),
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('bad code', 'RAW', 'x', 1, 'kg')"),
    ("production_runs", "INSERT INTO production_runs (run_code) VALUES ('RUN-1\n')"),
    ("lots", f"INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('L{'x' * 64}', 'RAW', 'x', 1, 'kg')"),
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('-L1', 'RAW', 'x', 1, 'kg')"),
    ("lots", f"INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('SEC-K', 'R{'A' * 16}', 'x', 1, 'kg')"),
    ("lots", "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES ('SEC-K', '1RAW', 'x', 1, 'kg')"),
    ("production_runs", f"INSERT INTO production_runs (run_code) VALUES ('R{'x' * 64}')"),
    ("streams", "INSERT INTO streams (code, name) VALUES ('doner', 'x')"),
    ("phases", "INSERT INTO phases (stream_id, code, name, seq) SELECT id, 'MIX\n', 'x', 9 FROM streams"),
    ("qc_gates", "INSERT INTO qc_gates (code, name, phase_id) SELECT 'G 1', 'x', min(id) FROM phases"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "sql"), BAD_ROWS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(BAD_ROWS)])
def test_the_database_refuses_a_code_the_api_refuses(seeded_db_url: str, table: str, sql: str) -> None:
    with psycopg.connect(seeded_db_url) as conn, pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(sql)
    assert refused.value.diag.table_name == table


def test_the_database_takes_the_longest_codes_the_api_takes(seeded_db_url: str) -> None:
    with psycopg.connect(seeded_db_url) as conn:
        conn.execute(
            "INSERT INTO lots (lot_code, kind, product, quantity, uom) VALUES (%s, %s, 'x', 1, 'kg')",
            (f"L{'x' * 63}", f"R{'A' * 15}"),
        )
        conn.execute("INSERT INTO production_runs (run_code) VALUES (%s)", (f"R{'x' * 63}",))
        conn.rollback()


async def test_a_check_violation_is_a_400_naming_the_field(seeded_db_url: str) -> None:
    conn = await asyncpg.connect(seeded_db_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await conn.execute(BAD_ROWS[0][1])
    finally:
        await conn.close()
    error = database_error(refused.value)
    assert error is not None and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "lot_code" and error.message.startswith("lot_code ")


# --- 9: HTTP hardening ---------------------------------------------------------------------------

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def test_every_answer_carries_the_security_headers(http: httpx.Client, anonymous: httpx.Client) -> None:
    answers = [
        http.get("/api/lots/FG-DONER-X1"),  # 200 JSON
        http.get("/api/lots/NO-SUCH-LOT"),  # 404 from a service
        http.get("/no/such/route"),  # the router's 404
        http.post("/api/lots", json={"lot_code": "x"}),  # 400
        anonymous.get("/api/lots"),  # 401
        anonymous.get("/api/health"),
        anonymous.get("/api/openapi.json"),
        anonymous.get("/"),
        http.get("/api/traceability/FG-DONER-X1/export.csv"),  # streamed
    ]
    for r in answers:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, f"{r.request.url} {r.status_code}: {name}"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_authenticated_data_and_tokens_are_never_stored(http: httpx.Client, anonymous: httpx.Client) -> None:
    for r in (
        http.get("/api/lots/FG-DONER-X1"),
        http.get("/api/traceability/FG-DONER-X1"),
        http.get("/api/traceability/FG-DONER-X1/export.csv"),
        anonymous.post("/api/auth/token", json={"username": "ana", "password": "viewer-pass-2026"}),
    ):
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store", r.request.url
    assert anonymous.get("/").headers["cache-control"] == "no-cache"  # the page keeps its own


def test_a_trailing_slash_never_redirects_to_the_host_header(http: httpx.Client) -> None:
    r = http.get("/api/lots/", headers={"host": "evil.example"})
    assert r.status_code == 404, r.headers
    assert "location" not in r.headers


def test_metrics_are_not_on_the_public_port(http: httpx.Client, system: System) -> None:
    assert http.get("/metrics").status_code == 404
    own = f"http://127.0.0.1:{system.env['FLOWVIZ_GATEWAY_METRICS_PORT']}/metrics"
    assert "flowviz_http_requests_total" in httpx.get(own, timeout=5).text


@pytest.fixture
def qc_without_reflection(servers: Servers) -> Iterator[System]:
    sys_ = System(system_env(servers, servers.pg.url), servers.tmp / "logs")
    sys_.start("qc-no-reflection", "services.qc", {"FLOWVIZ_REFLECTION": "0", "FLOWVIZ_QC_METRICS_PORT": "0"})
    yield sys_
    sys_.stop()


def test_reflection_can_be_switched_off(qc_without_reflection: System) -> None:
    with grpc.insecure_channel(qc_without_reflection.addr("qc")) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=30, wait_for_ready=True
        )
        assert health.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(replies)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


# --- 10: log forging -----------------------------------------------------------------------------

FORGED = "ok\n\x1b[2K\r\x1b[33m      lots |\x1b[0m 12:00:00.000 INFO    admin signed in \x9b31m"


def _lines_and_escapes(text: str) -> tuple[int, list[str]]:
    """Lines, and the escape sequences other than the supervisor's own colour prefix."""
    own = [f"\x1b[{c}m" for c in supervisor.COLORS.values()] + ["\x1b[37m", "\x1b[0m"]
    for seq in own:
        text = text.replace(seq, "")
    return text.count("\n") + 1, [c for c in text if c in "\x1b\x9b\r"]


def test_the_readable_view_escapes_every_value() -> None:
    line = json.dumps(
        {"ts": "2026-12-02T12:00:00.000Z", "level": "info", "msg": FORGED, FORGED: FORGED, "n": 1}
    )
    out = supervisor.readable("lots", line)
    assert _lines_and_escapes(out) == (1, [])
    assert "\\x0a" in out and "\\x1b" in out  # shown, not dropped
    assert _lines_and_escapes(supervisor.readable("lots", FORGED)) == (1, [])  # not JSON
    # A traceback keeps its lines, each marked as this record's.
    exc = "Traceback\n  ValueError: " + FORGED
    tb = supervisor.readable("qc", json.dumps({"msg": "boom", "exc": exc}))
    lines = tb.split("\n")
    assert len(lines) == 1 + len(exc.split("\n")) and all(
        line.startswith("\x1b[35m       qc\x1b[0m |") for line in lines
    )
    assert _lines_and_escapes(tb) == (len(lines), [])


def test_the_text_log_format_escapes_the_message() -> None:
    formatter = logs.TextFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, "", 0, "login %s", (FORGED,), None)
    assert _lines_and_escapes(formatter.format(record)) == (1, [])


async def test_a_forged_grpc_request_id_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interceptor keeps a well-formed x-request-id and replaces any other, as the gateway does."""
    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    resources = Resources(settings=settings(), name="lots")
    settings.cache_clear()
    resources.ready = True
    method = "/flowviz.test.v1.Echo/RequestId"

    async def request_id(request: bytes, context: object) -> bytes:
        return logs.request_id.get().encode()

    handler = grpc.method_handlers_generic_handler(
        "flowviz.test.v1.Echo", {"RequestId": grpc.unary_unary_rpc_method_handler(request_id)}
    )
    server = grpc.aio.server(interceptors=interceptors(resources, {}, frozenset({method})))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(method)
            for sent, kept in (
                ("req-1.a_B", True),
                ("x" * 3000, False),
                ("id with spaces", False),
                ("", False),
            ):
                got = (await call(b"", metadata=(("x-request-id", sent),), timeout=5)).decode()
                assert (got == sent) == kept, (sent[:20], got)
                assert 1 <= len(got) <= 64 and got.isprintable()
    finally:
        await server.stop(None)


# --- 5: no default secret; known placeholders refused outside an explicit dev setting -------------


# The processes deploy/ runs: every one with a service identity.
DEPLOYED = list(keys.SERVICE_NAMES)


def _dev_overlay(kind: str = "secretGenerator", name: str = "flowviz-secrets") -> dict[str, str]:
    import yaml

    doc = yaml.safe_load((ROOT / "deploy/k8s/overlays/dev/kustomization.yaml").read_text())
    # flowviz-secrets with a service's DATABASE_URL (each service has a Secret of its own).
    names = (name, "flowviz-db-lots") if name == "flowviz-secrets" else (name,)
    literals = [item for g in doc[kind] if g["name"] in names for item in g["literals"]]
    config = next(g for g in doc["configMapGenerator"] if g["name"] == "flowviz-config")["literals"]
    assert "FLOWVIZ_DEV=1" in config  # the overlay says it is dev, so its values are accepted there
    return dict(item.split("=", 1) for item in literals)


def _dev_overlay_secrets() -> dict[str, str]:
    return _dev_overlay()


def test_an_unset_secret_refuses_to_start_saying_how_to_make_one(servers: Servers) -> None:
    with pytest.raises(ConfigError, match=r"FLOWVIZ_TOKEN_PUBLIC_KEY must be set .*flowviz keys DIR"):
        keys.required_public(keys.TOKEN_PUBLIC_ENV, {})
    # A whole process: no token key at all, and the lots service without its private half.
    env = system_env(servers, servers.pg.url)
    unset = {k: v for k, v in env.items() if k != keys.TOKEN_PUBLIC_ENV} | own_keys("qc")
    lots = env | {
        keys.SERVICE_KEY_ENV: own_keys("lots")[keys.SERVICE_KEY_ENV]
    }  # no FLOWVIZ_TOKEN_PRIVATE_KEY
    no_cache_secret = {k: v for k, v in env.items() if k != "FLOWVIZ_CACHE_SECRET"} | own_keys("qc")
    for module, environment, said in (
        ("services.qc", unset, "FLOWVIZ_TOKEN_PUBLIC_KEY must be set"),
        ("services.lots", lots, "FLOWVIZ_TOKEN_PRIVATE_KEY must be set"),
        ("services.qc", env, "FLOWVIZ_SERVICE_KEY must be set"),
        ("gateway", env, "FLOWVIZ_SERVICE_KEY must be set"),
        ("services.qc", no_cache_secret, "FLOWVIZ_CACHE_SECRET must be set"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", module],
            env=environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0 and said in done.stderr + done.stdout, (module, said, done.stderr[-500:])
        assert "flowviz keys DIR" in done.stderr or "make run makes one" in done.stderr


def test_the_shipped_placeholders_are_refused_unless_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    placeholders = _dev_overlay_secrets()
    secret = placeholders["FLOWVIZ_CACHE_SECRET"]
    with pytest.raises(ConfigError, match="placeholder"):
        config.load_cache_secret({"FLOWVIZ_CACHE_SECRET": secret})
    assert config.load_cache_secret({"FLOWVIZ_CACHE_SECRET": secret, "FLOWVIZ_DEV": "1"}) == secret.encode()
    # The dev keys, private and public: each refused, unless FLOWVIZ_DEV=1.
    dev_private = [_dev_overlay(name="flowviz-token-key")[keys.TOKEN_PRIVATE_ENV]]
    dev_private += [_dev_overlay(name=f"flowviz-service-key-{s}")[keys.SERVICE_KEY_ENV] for s in DEPLOYED]
    public = _dev_overlay("configMapGenerator", "flowviz-public-keys")
    for value in dev_private:
        with pytest.raises(ConfigError, match="known placeholder"):
            keys.parse_private("K", value, {})
        keys.parse_private("K", value, {"FLOWVIZ_DEV": "1"})
    with pytest.raises(ConfigError, match="known placeholder"):
        keys.parse_public(keys.TOKEN_PUBLIC_ENV, public[keys.TOKEN_PUBLIC_ENV], {})
    with pytest.raises(ConfigError, match="known placeholder"):
        keys.parse_service_publics(public[keys.SERVICE_PUBLIC_ENV], {})
    assert len(keys.parse_service_publics(public[keys.SERVICE_PUBLIC_ENV], {"FLOWVIZ_DEV": "1"})) == len(
        DEPLOYED
    )
    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", placeholders["DATABASE_URL"])
    monkeypatch.delenv("FLOWVIZ_DEV", raising=False)
    settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="password in DATABASE_URL is a known placeholder"):
            settings()
        monkeypatch.setenv("FLOWVIZ_DEV", "1")
        settings.cache_clear()
        assert settings().database_url == placeholders["DATABASE_URL"]
    finally:
        settings.cache_clear()


def test_a_service_with_the_placeholder_secret_does_not_start(servers: Servers) -> None:
    public = _dev_overlay("configMapGenerator", "flowviz-public-keys")
    env = (
        system_env(servers, servers.pg.url)
        | own_keys("qc")
        | {keys.TOKEN_PUBLIC_ENV: public[keys.TOKEN_PUBLIC_ENV]}
    )
    done = subprocess.run(
        [sys.executable, "-m", "services.qc"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (
        done.returncode != 0
        and "FLOWVIZ_TOKEN_PUBLIC_KEY is a known placeholder" in done.stderr + done.stdout
    )


def test_compose_has_no_default_secret() -> None:
    compose = (ROOT / "deploy/docker-compose.yml").read_text()
    uses = re.findall(
        r"\$\{(POSTGRES_PASSWORD|VALKEY_PASSWORD|FLOWVIZ_CACHE_SECRET|FLOWVIZ_[A-Z_]*KEYS?[A-Z_]*)([^}]*)\}",
        compose,
    )
    services = {f"FLOWVIZ_SERVICE_KEY_{s.upper()}" for s in DEPLOYED}
    assert {name for name, _ in uses} == {"POSTGRES_PASSWORD", "VALKEY_PASSWORD", "FLOWVIZ_CACHE_SECRET",
        keys.TOKEN_PUBLIC_ENV, keys.SERVICE_PUBLIC_ENV, keys.TOKEN_PRIVATE_ENV, *services}  # fmt: skip
    assert all(rest.startswith(":?") for _, rest in uses), uses  # unset: compose refuses to start
    assert not any(p in compose for p in config.KNOWN_PLACEHOLDERS)


# --- 6: login throttling: a delay, not a lock; addresses only from who may say them; shared --------


async def test_the_throttle_is_shared_by_replicas_through_valkey(servers: Servers) -> None:
    import valkey.asyncio as valkey

    clients = [valkey.from_url(servers.valkey.url) for _ in range(2)]  # type: ignore[no-untyped-call]
    one, two = (LoginThrottle(lambda c=c: c, free=2, base_delay=0.5) for c in clients)
    key = f"user:shared-{uuid.uuid4().hex}"
    try:
        assert await one.failure(key) is None
        assert await two.failure(key) == 0.5  # the second failure, counted on the other replica
        for throttle in (one, two):
            wait = await throttle.wait(key)
            assert wait is not None and 0 < wait <= 0.5
        await two.success(key)
        assert await one.wait(key) is None
        assert one.fallbacks == two.fallbacks == 0
    finally:
        for client in clients:
            await client.aclose()


async def test_without_valkey_the_throttle_still_counts_and_says_so() -> None:
    import valkey.asyncio as valkey

    from flowviz.tools.embedded import free_port

    client = valkey.from_url(f"valkey://127.0.0.1:{free_port()}/0")  # type: ignore[no-untyped-call]
    throttle = LoginThrottle(lambda: client, free=1)
    assert await throttle.failure("user:x") == 1.0
    assert (wait := await throttle.wait("user:x")) is not None and wait > 0
    assert throttle.fallbacks == 2
    await client.aclose()


def test_a_client_address_is_believed_only_from_the_gateway() -> None:
    verifier = auth.TokenVerifier(TRUSTED)
    gateway = auth.issue_service_token("gateway", SERVICE_KEYS["gateway"])
    other_service = auth.issue_service_token("genealogy", SERVICE_KEYS["genealogy"])
    user = auth.issue_token("ada", "admin", key=TOKEN_KEY, ttl_seconds=60)
    forged = auth.issue_service_token("gateway", keys.generate())
    by_the_user_key = auth.issue_service_token("gateway", TOKEN_KEY)
    by_another_service = auth.issue_service_token("gateway", SERVICE_KEYS["genealogy"])
    peer = "ipv4:10.1.2.3:5555"

    def seen(token: str | None) -> str:
        metadata = [("x-client-address", "203.0.113.9")]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        return users.client_address(metadata, peer, verifier)

    assert seen(gateway) == "203.0.113.9"
    others = (None, other_service, user, forged, by_the_user_key, by_another_service)
    assert [seen(t) for t in others] == [peer] * len(others)


def test_forwarded_for_is_believed_only_from_configured_proxies() -> None:
    from gateway.clients import client_address

    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("203.0.113.9", "1.2.3.4", proxies) == "203.0.113.9"  # not a proxy: ignored
    assert client_address("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"  # no proxies configured
    assert client_address("10.0.0.5", "1.2.3.4", proxies) == "1.2.3.4"
    # The client may prepend anything: the right-most address not a proxy is the client.
    assert client_address("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", proxies) == "1.2.3.4"
    assert client_address("10.0.0.5", "", proxies) == "10.0.0.5"


# --- 7: uploads: the role before the body, a size cap, streamed -----------------------------------


def _raw_post(
    base: str, path: str, headers: dict[str, str], body: bytes, timeout: float = 10
) -> tuple[int, bytes]:
    """A request whose Content-Length may promise more than is sent: the answer, read with a deadline."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(base)
    head = f"POST {path} HTTP/1.1\r\nhost: {where.hostname}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = conn.recv(65536)
            if not got:
                break
            answer += got
    status = int(answer.split(b" ", 2)[1])
    return status, answer


BOUNDARY = "flowvizboundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def test_a_viewer_upload_is_refused_before_its_body_is_read(system: System) -> None:
    # 50 MB promised, a few bytes sent: only an answer given before reading the body arrives in time.
    headers = {
        **MULTIPART,
        "authorization": f"Bearer {token('ana')}",
        "content-length": str(50 * 1024 * 1024),
    }
    status, answer = _raw_post(system.base, "/api/import", headers, f"--{BOUNDARY}\r\n".encode())
    assert status == 403, answer
    assert b"operator" in answer


def test_an_upload_over_the_cap_is_413_before_it_is_read(system: System) -> None:
    headers = {
        **MULTIPART,
        "authorization": f"Bearer {token('omar')}",
        "content-length": str(201 * 1024 * 1024),
    }
    status, answer = _raw_post(system.base, "/api/import", headers, f"--{BOUNDARY}\r\n".encode())
    assert status == 413, answer


@pytest.fixture
def capped_gateway(system: System) -> Iterator[System]:
    """A second gateway in front of the same services, taking uploads of at most 100 kB."""
    from flowviz.tools.embedded import free_port

    env = system.env | {"FLOWVIZ_GATEWAY_PORT": str(free_port()), "FLOWVIZ_GATEWAY_METRICS_PORT": "0",
                        "FLOWVIZ_MAX_UPLOAD_BYTES": "100000"}  # fmt: skip
    capped = System(env, system.logs)
    capped.start("gateway-capped", "gateway")
    capped.wait_healthy()
    yield capped
    capped.stop()


def test_a_streamed_upload_over_the_cap_is_413_and_imports_nothing(capped_gateway: System) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    head = f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="lots"; filename="lots.csv"\r\n\r\n'
    data = head + "lot_code,kind,product,quantity,uom,produced_at\n"
    i = 0
    while len(data) <= 100_000:  # just over the cap: the server finds it with the last bytes, so
        data += f"CAP-{tag}-{i:06d},RAW,x,1,kg,\n"  # its early answer cannot race our sending
        i += 1
    body = (data + f"\r\n--{BOUNDARY}--\r\n").encode()

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap is found while streaming
        for i in range(0, len(body), 16384):
            yield body[i : i + 16384]

    with httpx.Client(base_url=capped_gateway.base, timeout=30, headers=bearer("omar")) as client:
        r = client.post("/api/import", content=chunked(), headers=MULTIPART)
        assert r.status_code == 413 and r.json()["error"]["reason"] == "BODY_TOO_LARGE", r.text
        assert client.get(f"/api/lots/CAP-{tag}-000000").status_code == 404
        small = "lot_code,kind,product,quantity,uom,produced_at\n" + f"CAP-{tag}-OK,RAW,x,1,kg,\n"
        r = client.post("/api/import", files={"lots": ("lots.csv", small)})
        assert r.status_code == 200 and r.json()["lots_imported"] == 1, r.text


def test_the_gateway_asks_the_role_the_service_asks_for_an_import() -> None:
    from gateway.routes import UPLOAD_ROLES
    from services.genealogy.servicer import POLICY

    assert POLICY["/flowviz.genealogy.v1.GenealogyService/ImportGenealogy"] == UPLOAD_ROLES


# --- 3: CSV formula injection ----------------------------------------------------------------------

FORMULA_CELLS = [c + 'HYPERLINK("http://evil.example","x")' for c in ("=", "+", "-", "@", "\t", "\r")]


@pytest.mark.parametrize("cell", FORMULA_CELLS, ids=["eq", "plus", "minus", "at", "tab", "cr"])
def test_a_cell_a_spreadsheet_would_evaluate_is_neutralised(cell: str) -> None:
    from services.genealogy.renderings import csv_line as _csv_line

    row = next(csv.reader(io.StringIO(_csv_line(["FG-1", cell, "a=b", 1.5, -2.0]).decode(), newline="")))
    assert row == ["FG-1", "'" + cell, "a=b", "1.5", "-2.0"]  # text quoted, numbers and inner = kept


def test_the_trace_csv_neutralises_a_formula_product(http: httpx.Client) -> None:
    code = f"CSV-INJ-{uuid.uuid4().hex[:8].upper()}"
    product = '=HYPERLINK("http://evil.example","click")'
    lot = {"lot_code": code, "kind": "RAW", "product": product, "quantity": 1, "uom": "kg"}
    assert http.post("/api/lots", json=lot).status_code == 201
    out = f"{code}-OUT"
    run = {"run_code": f"RUN-{code}", "inputs": [{"lot_code": code, "quantity": 1, "uom": "kg"}],
           "outputs": [{"lot_code": out, "kind": "MIX", "product": "@SUM(A1)", "quantity": 1, "uom": "kg"}]}  # fmt: skip
    assert http.post("/api/production-runs", json=run).status_code == 201
    r = http.get(f"/api/traceability/{out}/export.csv")
    assert r.status_code == 200, r.text
    cells = {c for row in csv.reader(io.StringIO(r.text)) for c in row}
    assert "'" + product in cells and "'@SUM(A1)" in cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)


def test_the_web_apps_table_csv_neutralises_too() -> None:
    script = (
        "import { Model } from './web/js/model.js';"
        "const m = Object.create(Model.prototype); m.nodes = new Map();"
        f"const cells = {json.dumps(FORMULA_CELLS)};"
        "cells.forEach((p, i) => m.nodes.set(`L${i}`, {lot_code: `L${i}`, kind: 'RAW', product: p, quantity: -1,"
        " uom: 'kg', status: 'passed', effective: 'passed', blockedBy: [], side: 'root', depth: 0}));"
        "process.stdout.write(m.csv());"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout.decode(), newline="")))[1:]
    assert [r[2] for r in rows] == ["'" + c for c in FORMULA_CELLS]
    assert {r[3] for r in rows} == {"-1"}  # a number is not a formula


# --- 2: Valkey authentication; cached values carry an HMAC ----------------------------------------


def test_valkey_refuses_a_client_without_the_password(servers: Servers) -> None:
    import valkey as sync_valkey
    from valkey.exceptions import AuthenticationError, ResponseError

    anonymous = sync_valkey.Valkey(host="127.0.0.1", port=servers.valkey.port)
    try:
        with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
            anonymous.get("fv:epoch")
    finally:
        anonymous.close()
    # The password is in a file only its owner reads, not on the server's command line.
    conf = servers.valkey.data_dir / "valkey.conf"
    assert conf.stat().st_mode & 0o077 == 0
    assert servers.valkey.proc is not None
    cmdline = Path(f"/proc/{servers.valkey.proc.pid}/cmdline").read_bytes()
    assert servers.valkey.password.encode() not in cmdline


async def test_a_cached_value_that_fails_its_hmac_is_a_counted_miss(servers: Servers) -> None:
    from flowviz.core.cache import Cache, signing_key

    url = servers.valkey.url.rsplit("/", 1)[0] + "/6"
    cache = Cache(url, key=signing_key(CACHE_SECRET.encode()), timeout=1, ttl=60)
    loads: list[bytes] = []

    async def load() -> bytes:
        loads.append(b"truth")
        return b"truth"

    try:
        assert await cache.lot_answer("FG-1", "trace", load) == b"truth"
        await cache.settled()
        assert await cache.lot_answer("FG-1", "trace", load) == b"truth" and len(loads) == 1  # a hit
        [key] = [k async for k in cache.client.scan_iter("fv:*:lot:FG-1")]
        stored = await cache.client.hget(key, "trace")
        for forged in (b"lie", stored[:32] + b"lie", bytes(32) + b"truth"):
            await cache.client.hset(key, "trace", forged)
            rejected = cache.rejected
            assert await cache.lot_answer("FG-1", "trace", load) == b"truth"
            assert cache.rejected == rejected + 1
            await cache.settled()
        assert len(loads) == 4  # each forgery cost a load, never an answer
        # A value sealed for another lot or field is not accepted here either.
        await cache.client.hset(key, "other", stored)
        assert await cache.lot_answer("FG-1", "other", load) == b"truth" and len(loads) == 5
    finally:
        await cache.client.flushdb()
        await cache.client.aclose()


def test_a_poisoned_cached_trace_is_not_served(http: httpx.Client, system: System) -> None:
    import valkey as sync_valkey

    code = f"POISON-{uuid.uuid4().hex[:8].upper()}"
    lot = {"lot_code": code, "kind": "RAW", "product": "Paprika", "quantity": 1, "uom": "kg"}
    assert http.post("/api/lots", json=lot).status_code == 201
    assert (
        http.post(f"/api/lots/{code}/qc-decisions", json={"decision": "hold", "reason": "test"}).status_code
        == 201
    )
    first = http.get(f"/api/traceability/{code}")
    assert first.status_code == 200 and first.json()["lot"]["effective_status"] == "on_hold"
    client = sync_valkey.Valkey.from_url(system.env["VALKEY_URL"])
    try:
        keys = list(client.scan_iter(f"fv:*:lot:{code}"))
        assert keys, "the trace was cached"
        for key in keys:
            for field, value in client.hgetall(key).items():
                client.hset(key, field, value.replace(b"on_hold", b"released"))
    finally:
        client.close()
    again = http.get(f"/api/traceability/{code}")
    assert again.status_code == 200 and again.json() == first.json()
    metrics = httpx.get(
        f"http://127.0.0.1:{system.env['FLOWVIZ_GENEALOGY_METRICS_PORT']}/metrics", timeout=5
    ).text
    assert re.search(r'flowviz_cache_rejected_total\{cache="genealogy"\} [1-9]', metrics), metrics


def test_compose_requires_valkey_auth_and_publishes_on_loopback_only() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    published = [str(p) for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert "--requirepass" in " ".join(services["valkey"]["command"])
    assert compose["x-app"]["environment"]["VALKEY_URL"].startswith("valkey://:${VALKEY_PASSWORD:?")


# --- 4 (in part): a token living longer than this system issues is refused ------------------------


def _minted(subject: str, role: str, lifetime: int) -> str:
    """A token signed with the right key but with a lifetime of the minter's choosing."""
    import time

    import jwt

    now = int(time.time())
    claims = {"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": subject, "role": role, "iat": now, "nbf": now,
              "exp": now + lifetime, "jti": uuid.uuid4().hex, "sst": now}  # fmt: skip
    if role == auth.SERVICE:
        name = subject.removeprefix(auth.SERVICE_PREFIX)
        return jwt.encode(claims, SERVICE_KEYS[name], algorithm=auth.ALGORITHM, headers={"kid": subject})
    return jwt.encode(claims, TOKEN_KEY, algorithm=auth.ALGORITHM, headers={"kid": auth.USER_KEY_ID})


def test_a_token_living_longer_than_the_configured_ttl_is_refused(anonymous: httpx.Client) -> None:
    ten_years = _minted("ada", "admin", 10 * 365 * 24 * 3600)
    with pytest.raises(auth.Unauthenticated, match="lives longer"):
        auth.verify_token(ten_years, keys=TRUSTED)
    verifier = auth.TokenVerifier(TRUSTED, max_lifetime=900)
    assert verifier.verify(_minted("ada", "admin", 900)).subject == "ada"
    with pytest.raises(auth.Unauthenticated):
        verifier.verify(_minted("ada", "admin", 901))
    with pytest.raises(auth.Unauthenticated):  # service tokens live minutes, whatever users get
        verifier.verify(_minted("service:genealogy", "service", 600))
    # The running system (FLOWVIZ_TOKEN_TTL=3600 in the tests) refuses the ten-year token.
    r = anonymous.get("/api/lots/FG-DONER-X1", headers={"authorization": f"Bearer {ten_years}"})
    assert r.status_code == 401, r.text
    ok = anonymous.get(
        "/api/lots/FG-DONER-X1", headers={"authorization": f"Bearer {_minted('ada', 'admin', 3600)}"}
    )
    assert ok.status_code == 200
