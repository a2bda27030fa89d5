"""Configuration from the environment, read once and validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Default ports; deploy/ manifests and tests/deploy mirror these.
DEFAULT_PORTS = {
    "health": 50050,
    "lots": 50051,
    "genealogy": 50052,
    "qc": 50053,
    "events": 50054,
    "gateway": 8000,
}
# The gateway's metrics are on a port of their own too, never on the public HTTP port.
DEFAULT_METRICS_PORTS = {
    "health": 9150,
    "lots": 9151,
    "genealogy": 9152,
    "qc": 9153,
    "gateway": 9154,
    "events": 9155,
}
# grpc.health.v1 service names each process reports (besides "" for the process as a whole).
HEALTH_SERVICE_NAMES = {
    "lots": "flowviz.lots.v1.LotsService",
    "genealogy": "flowviz.genealogy.v1.GenealogyService",
    "qc": "flowviz.qc.v1.QcService",
    "events": "flowviz.events.v1.EventsService",
    "health": "flowviz.health.v1.SystemHealthService",
}
UPSTREAMS = ("lots", "genealogy", "qc", "health", "events")
# The PostgreSQL role each service connects as (grants: migration 0011); the gateway has none.
# Migrations, the seed and the command line run as OWNER_ROLE, which owns the schema.
DATABASE_ROLES = {
    "lots": "flowviz_lots",
    "genealogy": "flowviz_genealogy",
    "qc": "flowviz_qc",
    "health": "flowviz_health",
    "events": "flowviz_events",
}
OWNER_ROLE = "flowviz_owner"


def service_database_urls(environ: Mapping[str, str]) -> dict[str, str]:
    """FLOWVIZ_<SERVICE>_DATABASE_URL of each service that has one: what the migrate job gives
    each role as its password (a service's own pods get that URL as their DATABASE_URL)."""
    found = {s: environ.get(f"FLOWVIZ_{s.upper()}_DATABASE_URL", "") for s in DATABASE_ROLES}
    return {s: url for s, url in found.items() if url}


class ConfigError(ValueError):
    """A setting is missing or malformed; the process refuses to start."""


# Secrets that ship in deploy/ (the dev overlay's generated Secret), and words that mark a
# placeholder: refused unless FLOWVIZ_DEV=1 says this is a developer's own throw-away stack.
KNOWN_PLACEHOLDERS = frozenset(
    {
        "dev-only-insecure-cache-secret-do-not-use-in-production",
        "flowviz-dev-password",
        "flowviz-dev-valkey-password",
        # The public halves of the dev overlay's Ed25519 keys (token, then each service's).
        "hz_VL2k8e5_AZMiaR7DzI2ZWPK6w2dr-U16bYwN844Q",
        "p8WzKa6W1IpAB8lHn_AcNn_NzYxbGx7KYs9_fL0c-uU",
        "X3w9tm1aXPGJaHLZJCs4WfvbUtifMirpd4_ia0x4sVA",
        "RNRw9tQRNUr6W5OUmUXl0WPq_AKyyxffPrCxY67C80E",
        "CUPFg6zlAukBnqLBH0aS1VRZLyiWxAMF_GUBTKUALm4",
        "VyOqV-wLz8a6KbHPBjYNbIG229QEMF_wMtKHHfOlW_s",
        "Yvm8gsgzWXKdyI4SY_65J3ibKXV2QNyjCejDa-3wqIE",
    }
)
_PLACEHOLDER_WORDS = re.compile(r"insecure|do-not-use|change-?me|placeholder|dev-password", re.IGNORECASE)
DEV_ENV = "FLOWVIZ_DEV"


def refuse_placeholder(name: str, value: str, environ: Mapping[str, str], hint: str) -> None:
    """Refuse a known or obvious placeholder secret outside an explicit dev setting."""
    if environ.get(DEV_ENV) == "1":
        return
    if value in KNOWN_PLACEHOLDERS or _PLACEHOLDER_WORDS.search(value):
        raise ConfigError(
            f"{name} is a known placeholder, not a secret ({hint}); only a developer's own stack may "
            f"use one, with {DEV_ENV}=1"
        )


CACHE_SECRET_ENV = "FLOWVIZ_CACHE_SECRET"
MIN_SECRET_BYTES = 32


def load_cache_secret(environ: Mapping[str, str]) -> bytes | None:
    """FLOWVIZ_CACHE_SECRET (UTF-8, at least 32 bytes): the key of the cached values' HMAC, held by
    the services (never by Valkey, nor the gateway). None when unset; serve() requires it."""
    raw = environ.get(CACHE_SECRET_ENV, "").strip()
    hint = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    if not raw:
        return None
    secret = raw.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{CACHE_SECRET_ENV} must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)} ({hint})"
        )
    if len(set(secret)) < 10:
        raise ConfigError(f"{CACHE_SECRET_ENV} looks like a placeholder, not a random secret ({hint})")
    refuse_placeholder(CACHE_SECRET_ENV, raw, environ, hint)
    return secret


def _int(name: str, default: int, lo: int = 0, hi: int = 2**31) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={value} must not be negative")
    return value


def _fraction(name: str, default: float) -> float:
    value = _float(name, default)
    if value > 1:
        raise ConfigError(f"{name}={value} is a fraction: 0..1 (0.02 = 2 %)")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    if raw not in ("0", "1"):
        raise ConfigError(f"{name}={raw!r} must be 0 or 1")
    return raw == "1"


def _networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    found = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {item.strip()!r} is not an address or network") from None
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    database_url: str
    valkey_url: str
    bind_host: str
    ports: dict[str, int]
    metrics_ports: dict[str, int]
    # gRPC targets of each upstream, e.g. "127.0.0.1:50051" or "dns:///lots-headless:50051".
    addrs: dict[str, str]
    pool_min: int
    pool_max: int
    drain_seconds: float
    # Deadline for gateway -> service and service -> service calls.
    rpc_timeout: float
    # Bound on every cache operation: past it the read goes to PostgreSQL.
    cache_timeout: float
    cache_ttl: int
    health_interval: float
    cors_origins: tuple[str, ...]
    log_format: str
    # Ed25519 keys (flowviz/core/keys.py; make run generates them): the user-token public key
    # every process verifies with (required), its private half (only the lots service has it),
    # this process's own service key, and the public keys of every service's identity.
    token_public_key: Ed25519PublicKey
    token_private_key: Ed25519PrivateKey | None
    service_key: Ed25519PrivateKey | None
    service_public_keys: dict[str, Ed25519PublicKey]
    # HMAC key of cached values (FLOWVIZ_CACHE_SECRET); the services need it, the gateway not.
    cache_secret: bytes | None
    token_ttl: int
    # FLOWVIZ_SESSION_MAX_HOURS: a token is refreshed without the password only this long after
    # the password was given.
    session_max_hours: int = 12
    # FLOWVIZ_METRICS_PORT (deploy manifests): this process's metrics port, over metrics_ports[name].
    metrics_port: int | None = None
    # A drill accounts for its root lot when |unaccounted| <= this fraction of it (BRC/SQF use 2 %).
    drill_tolerance: float = 0.02
    # FLOWVIZ_SIGN_HOLDS=1: a hold needs the signer's password too (release and reject always do).
    sign_holds: bool = False

    # gRPC server reflection (FLOWVIZ_REFLECTION, on by default for ghz and grpcurl; production: 0).
    reflection: bool = True
    # FLOWVIZ_MAX_UPLOAD_BYTES: the largest import the gateway takes (streamed, never spooled).
    max_upload_bytes: int = 200 * 1024 * 1024
    # FLOWVIZ_TRUSTED_PROXIES: addresses/networks whose X-Forwarded-For the gateway believes.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # FLOWVIZ_STATEMENT_CACHE: asyncpg's prepared statements per connection; 0 behind PgBouncer in
    # transaction mode, where a prepared statement may land on another server connection.
    statement_cache: int = 1024
    # FLOWVIZ_HEAVY_CALLS: a user's concurrent traces, recalls, exports and drills (across every
    # replica, via Valkey); past it 429 with Retry-After. 0: no bound.
    heavy_calls: int = 4
    # FLOWVIZ_HEAVY_MIN_MS: each heavy call holds its place in that bound for at least this long
    # (ms), so a user starts at most FLOWVIZ_HEAVY_CALLS / this many heavy calls a second. 0: none.
    heavy_min_ms: int = 250
    # FLOWVIZ_SHUTDOWN_DELAY: seconds between NOT_SERVING and no longer accepting calls on SIGTERM
    # (the clients' health watches see it in milliseconds; DNS or a Service endpoint takes longer).
    shutdown_delay: float = 0.5
    # FLOWVIZ_REPLICAS: processes per service under `flowviz run` (ports: README "Replicas").
    replicas: int = 1
    # Webhooks (issue 16). FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE=1: targets may be loopback, private or
    # link-local addresses (tests, a plant's own network); metadata addresses never are.
    webhooks_allow_private: bool = False
    # FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY=1: targets must be loopback addresses, and no name is looked up
    # in DNS (the tests, and any machine whose only network is loopback).
    webhooks_loopback_only: bool = False
    # FLOWVIZ_WEBHOOKS_TIMEOUT: one delivery attempt's bound (connect + answer), seconds.
    webhooks_timeout: float = 10.0
    # Retries wait FLOWVIZ_WEBHOOKS_RETRY_BASE x 2^attempt (jittered), at most
    # FLOWVIZ_WEBHOOKS_RETRY_MAX, and stop FLOWVIZ_WEBHOOKS_RETRY_FOR after the event (24 h).
    webhooks_retry_base: float = 1.0
    webhooks_retry_max: float = 3600.0
    webhooks_retry_for: float = 86400.0
    # FLOWVIZ_WEBHOOKS_CONCURRENCY: attempts in flight per subscription (of different lots).
    webhooks_concurrency: int = 4
    # FLOWVIZ_EVENTS_RETENTION_DAYS: events done with (every delivery delivered or given up, or
    # none wanted) are pruned from the outbox with their delivery log this many days after; 0 keeps
    # them forever.
    events_retention_days: int = 30


@cache
def settings() -> Settings:
    env = os.environ
    database_url = env.get("DATABASE_URL", "")
    valkey_url = env.get("VALKEY_URL", "")
    # Empty is allowed here (the gateway needs neither); serve() requires both for a service.
    if database_url and not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL must be a postgresql:// URL")
    if valkey_url and not valkey_url.startswith(
        ("valkey://", "valkeys://", "redis://", "rediss://", "unix://")
    ):
        raise ConfigError("VALKEY_URL must be a valkey:// URL (valkeys:// for TLS)")
    for name, url in (("DATABASE_URL", database_url), ("VALKEY_URL", valkey_url)):
        if password := urlsplit(url).password:
            hint = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
            refuse_placeholder(f"the password in {name}", password, env, hint)
    ports = {
        name: _int(f"FLOWVIZ_{name.upper()}_PORT", port, 1, 65535) for name, port in DEFAULT_PORTS.items()
    }
    metrics_ports = {
        name: _int(f"FLOWVIZ_{name.upper()}_METRICS_PORT", port, 0, 65535)
        for name, port in DEFAULT_METRICS_PORTS.items()
    }
    addrs = {name: env.get(f"FLOWVIZ_{name.upper()}_ADDR", f"127.0.0.1:{ports[name]}") for name in UPSTREAMS}
    log_format = env.get("FLOWVIZ_LOG_FORMAT", "json")
    if log_format not in ("json", "text"):
        raise ConfigError("FLOWVIZ_LOG_FORMAT must be json or text")
    pool_min = _int("FLOWVIZ_POOL_MIN", 2, 1, 100)
    pool_max = _int("FLOWVIZ_POOL_MAX", 10, 1, 200)
    if pool_max < pool_min:
        raise ConfigError("FLOWVIZ_POOL_MAX must be >= FLOWVIZ_POOL_MIN")
    from flowviz.core import keys  # keys imports ConfigError from here

    cors = tuple(o.strip() for o in env.get("FLOWVIZ_CORS_ORIGINS", "").split(",") if o.strip())
    return Settings(
        database_url=database_url,
        valkey_url=valkey_url,
        bind_host=env.get("FLOWVIZ_BIND_HOST", "127.0.0.1"),
        ports=ports,
        metrics_ports=metrics_ports,
        addrs=addrs,
        pool_min=pool_min,
        pool_max=pool_max,
        drain_seconds=_float("FLOWVIZ_DRAIN_SECONDS", 10.0),
        rpc_timeout=_float("FLOWVIZ_RPC_TIMEOUT", 5.0),
        cache_timeout=_float("FLOWVIZ_CACHE_TIMEOUT", 0.2),
        cache_ttl=_int("FLOWVIZ_CACHE_TTL", 3600, 1),
        statement_cache=_int("FLOWVIZ_STATEMENT_CACHE", 1024, 0, 100_000),
        health_interval=_float("FLOWVIZ_HEALTH_INTERVAL", 1.0),
        cors_origins=cors,
        log_format=log_format,
        token_public_key=keys.required_public(keys.TOKEN_PUBLIC_ENV, env),
        token_private_key=keys.optional_private(keys.TOKEN_PRIVATE_ENV, env),
        service_key=keys.optional_private(keys.SERVICE_KEY_ENV, env),
        service_public_keys=keys.parse_service_publics(env.get(keys.SERVICE_PUBLIC_ENV, ""), env),
        cache_secret=load_cache_secret(env),
        session_max_hours=_int("FLOWVIZ_SESSION_MAX_HOURS", 12, 1, 24 * 30),
        token_ttl=_int("FLOWVIZ_TOKEN_TTL", 900, 60, 24 * 3600),
        reflection=_flag("FLOWVIZ_REFLECTION", True),
        trusted_proxies=_networks("FLOWVIZ_TRUSTED_PROXIES"),
        max_upload_bytes=_int("FLOWVIZ_MAX_UPLOAD_BYTES", 200 * 1024 * 1024, 1, 2**40),
        metrics_port=_int("FLOWVIZ_METRICS_PORT", 0, 0, 65535) if env.get("FLOWVIZ_METRICS_PORT") else None,
        drill_tolerance=_fraction("FLOWVIZ_DRILL_TOLERANCE", 0.02),
        sign_holds=_int("FLOWVIZ_SIGN_HOLDS", 0, 0, 1) == 1,
        heavy_calls=_int("FLOWVIZ_HEAVY_CALLS", 4, 0, 10_000),
        heavy_min_ms=_int("FLOWVIZ_HEAVY_MIN_MS", 250, 0, 60_000),
        shutdown_delay=_float("FLOWVIZ_SHUTDOWN_DELAY", 0.5),
        replicas=_int("FLOWVIZ_REPLICAS", 1, 1, 9),
        webhooks_allow_private=_flag("FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE", False),
        webhooks_loopback_only=_flag("FLOWVIZ_WEBHOOKS_LOOPBACK_ONLY", False),
        webhooks_timeout=max(0.1, _float("FLOWVIZ_WEBHOOKS_TIMEOUT", 10.0)),
        webhooks_retry_base=max(0.01, _float("FLOWVIZ_WEBHOOKS_RETRY_BASE", 1.0)),
        webhooks_retry_max=max(0.01, _float("FLOWVIZ_WEBHOOKS_RETRY_MAX", 3600.0)),
        webhooks_retry_for=_float("FLOWVIZ_WEBHOOKS_RETRY_FOR", 86400.0),
        webhooks_concurrency=_int("FLOWVIZ_WEBHOOKS_CONCURRENCY", 4, 1, 64),
        events_retention_days=_int("FLOWVIZ_EVENTS_RETENTION_DAYS", 30, 0, 36_500),
    )


# --- the environment as a whole, and the settings of the command-line tools -----------------


def environ() -> Mapping[str, str]:
    """The process's environment, for the readers here that take a mapping (service_database_urls,
    refuse_placeholder, flowviz.core.keys) and for a child process's environment. A setting is
    read by a function of this module, never looked up in it elsewhere."""
    return os.environ


def tracing_requested() -> bool:
    """OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) set: trace this process (the
    OpenTelemetry exporter reads the rest of the OTEL_* settings itself)."""
    env = os.environ
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def sampler_chosen() -> bool:
    """OTEL_TRACES_SAMPLER set: the SDK samples as it says, not by flowviz's server-roots rule."""
    return bool(os.environ.get("OTEL_TRACES_SAMPLER"))


# The embedded servers' ports under `make run` (FLOWVIZ_PG_PORT, FLOWVIZ_VALKEY_PORT).
DEFAULT_PG_PORT = 5433
DEFAULT_VALKEY_PORT = 6379


@dataclass(frozen=True)
class ToolSettings:
    """What the command-line tools read (flowviz run, migrate, seed, user, the first admin). Read
    on each call, not once: `flowviz run` sets DATABASE_URL and VALKEY_URL for itself and its
    children after it has started the embedded servers."""

    # DATABASE_URL / VALKEY_URL; empty: the embedded servers (`flowviz run`), or the running
    # `make run`'s (the other commands).
    database_url: str
    valkey_url: str
    # FLOWVIZ_DATA_DIR: where `make run` keeps its servers' data, keys and state; empty: .data/.
    data_dir: str
    pg_port: int
    valkey_port: int
    gateway_port: int
    drain_seconds: float
    # FLOWVIZ_ADMIN_USER / FLOWVIZ_ADMIN_PASSWORD: the first admin (else generated, printed once).
    admin_user: str
    admin_password: str
    # FLOWVIZ_CACHE_SECRET as given (validated by load_cache_secret in the services); empty:
    # `make run` keeps one in its data folder.
    cache_secret: str
    # FLOWVIZ_TOKEN_PUBLIC_KEY as given; set: the keys come from outside, `flowviz run` makes none.
    token_public_key: str


def tool_settings() -> ToolSettings:
    env = os.environ
    return ToolSettings(
        database_url=env.get("DATABASE_URL", ""),
        valkey_url=env.get("VALKEY_URL", ""),
        data_dir=env.get("FLOWVIZ_DATA_DIR", ""),
        pg_port=_int("FLOWVIZ_PG_PORT", DEFAULT_PG_PORT, 1, 65535),
        valkey_port=_int("FLOWVIZ_VALKEY_PORT", DEFAULT_VALKEY_PORT, 1, 65535),
        gateway_port=_int("FLOWVIZ_GATEWAY_PORT", DEFAULT_PORTS["gateway"], 1, 65535),
        drain_seconds=_float("FLOWVIZ_DRAIN_SECONDS", 10.0),
        admin_user=env.get("FLOWVIZ_ADMIN_USER", ""),
        admin_password=env.get("FLOWVIZ_ADMIN_PASSWORD", ""),
        cache_secret=env.get(CACHE_SECRET_ENV, ""),
        token_public_key=env.get("FLOWVIZ_TOKEN_PUBLIC_KEY", ""),
    )
