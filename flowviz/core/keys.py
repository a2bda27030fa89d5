"""Ed25519 keys for access tokens and service identity (issue 19).

Two kinds of key, never the same one:

- the **user-token key**: its private half signs users' tokens and only the lots service (which
  signs users in) holds it (FLOWVIZ_TOKEN_PRIVATE_KEY); every process verifies with the public
  half (FLOWVIZ_TOKEN_PUBLIC_KEY);
- one **service key per process** (FLOWVIZ_SERVICE_KEY: this process's own), signing its
  `service:<name>` identity for calls to the others, which verify it with that service's public
  key from FLOWVIZ_SERVICE_PUBLIC_KEYS (`gateway=KEY,lots=KEY,...`). A leaked user-token key
  cannot mint a service identity, and one service's key cannot pass for another service.

A key setting is the key itself, either 43 characters of unpadded base64url (the raw 32 bytes,
what `flowviz keys` prints, easy to keep in an .env file) or PEM text (PKCS#8 / SubjectPublicKeyInfo,
as `openssl genpkey -algorithm ed25519` writes), or else the path of a file holding either.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flowviz.core.config import ConfigError, refuse_placeholder
from flowviz.core.config import environ as process_environ

# Every process with a service identity of its own.
SERVICE_NAMES = ("gateway", "lots", "genealogy", "qc", "health", "events")
TOKEN_PRIVATE_ENV = "FLOWVIZ_TOKEN_PRIVATE_KEY"
TOKEN_PUBLIC_ENV = "FLOWVIZ_TOKEN_PUBLIC_KEY"
SERVICE_KEY_ENV = "FLOWVIZ_SERVICE_KEY"
SERVICE_PUBLIC_ENV = "FLOWVIZ_SERVICE_PUBLIC_KEYS"
# Where FLOWVIZ_DEV is looked up when a caller gives no environment (a placeholder key is refused).
_PROCESS = process_environ()
HINT = "generate the keys with: flowviz keys DIR (writes them mode 0600 and prints the settings)"

_RAW = re.compile(r"[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


def generate() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The raw key as 43 characters of unpadded base64url (a private key's 32-byte seed)."""
    raw = key.private_bytes_raw() if isinstance(key, Ed25519PrivateKey) else key.public_bytes_raw()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _material(name: str, value: str) -> str:
    value = value.strip()
    if _RAW.fullmatch(value) or value.startswith("-----BEGIN"):
        return value
    try:
        return Path(value).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{name}: not a key and not a readable key file ({exc.strerror}; {HINT})") from None


def _raw(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=")


def _refuse_known(name: str, public: Ed25519PublicKey, environ: Mapping[str, str]) -> None:
    refuse_placeholder(name, text(public), environ, HINT)


def parse_private(name: str, value: str, environ: Mapping[str, str] = _PROCESS) -> Ed25519PrivateKey:
    material = _material(name, value)
    try:
        if _RAW.fullmatch(material):
            key = Ed25519PrivateKey.from_private_bytes(_raw(material))
        else:
            loaded = serialization.load_pem_private_key(material.encode(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ConfigError(f"{name} must be an Ed25519 key ({HINT})")
            key = loaded
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{name} is not an Ed25519 private key ({HINT})") from None
    _refuse_known(name, key.public_key(), environ)
    return key


def parse_public(name: str, value: str, environ: Mapping[str, str] = _PROCESS) -> Ed25519PublicKey:
    material = _material(name, value)
    try:
        if _RAW.fullmatch(material):
            key = Ed25519PublicKey.from_public_bytes(_raw(material))
        else:
            loaded = serialization.load_pem_public_key(material.encode())
            if not isinstance(loaded, Ed25519PublicKey):
                raise ConfigError(f"{name} must be an Ed25519 key ({HINT})")
            key = loaded
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"{name} is not an Ed25519 public key ({HINT})") from None
    _refuse_known(name, key, environ)
    return key


def parse_service_publics(value: str, environ: Mapping[str, str] = _PROCESS) -> dict[str, Ed25519PublicKey]:
    """`gateway=KEY,lots=KEY,...` (each KEY as for any key setting)."""
    found: dict[str, Ed25519PublicKey] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        service, sep, key = item.strip().partition("=")
        if not sep or not _NAME.fullmatch(service):
            raise ConfigError(f"{SERVICE_PUBLIC_ENV} is a list of name=KEY separated by commas ({HINT})")
        found[service] = parse_public(f"{SERVICE_PUBLIC_ENV} ({service})", key, environ)
    return found


def optional_private(name: str, environ: Mapping[str, str]) -> Ed25519PrivateKey | None:
    raw = environ.get(name, "")
    return parse_private(name, raw, environ) if raw.strip() else None


def required_public(name: str, environ: Mapping[str, str]) -> Ed25519PublicKey:
    raw = environ.get(name, "")
    if not raw.strip():
        raise ConfigError(f"{name} must be set ({HINT})")
    return parse_public(name, raw, environ)


def write_keys(folder: Path, services: tuple[str, ...] = SERVICE_NAMES) -> dict[str, str]:
    """Keys for one system in `folder` (made once, kept; files mode 0600): `token.key` and one
    `service-<name>.key` per service. Returns the public settings every process gets and, under
    `<ENV>@<name>`, each process's own private ones."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)

    def key(file: str) -> Ed25519PrivateKey:
        path = folder / file
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(private_pem(generate()))
        return parse_private(file, str(path), {})

    token = key("token.key")
    env = {TOKEN_PUBLIC_ENV: text(token.public_key()), f"{TOKEN_PRIVATE_ENV}@lots": str(folder / "token.key")}
    publics = []
    for service in services:
        own = key(f"service-{service}.key")
        publics.append(f"{service}={text(own.public_key())}")
        env[f"{SERVICE_KEY_ENV}@{service}"] = str(folder / f"service-{service}.key")
    env[SERVICE_PUBLIC_ENV] = ",".join(publics)
    # The public settings as an env file (kubectl create configmap --from-env-file).
    (folder / "public.env").write_text(
        f"{TOKEN_PUBLIC_ENV}={env[TOKEN_PUBLIC_ENV]}\n{SERVICE_PUBLIC_ENV}={env[SERVICE_PUBLIC_ENV]}\n"
    )
    return env


def compose_env(env: Mapping[str, str]) -> dict[str, str]:
    """write_keys' answer as docker compose variables: the keys themselves (raw), each service's
    own as FLOWVIZ_SERVICE_KEY_<NAME> (deploy/docker-compose.yml hands it to that service only)."""
    found: dict[str, str] = {}
    for name, value in env.items():
        setting, _, service = name.partition("@")
        if not service:
            found[setting] = value
            continue
        key = text(parse_private(setting, value, {}))
        found[setting if setting == TOKEN_PRIVATE_ENV else f"{setting}_{service.upper()}"] = key
    return found


def process_env(env: Mapping[str, str], service: str) -> dict[str, str]:
    """The settings of `service` from write_keys' answer: the public ones and its own private ones."""
    own = {k.partition("@")[0]: v for k, v in env.items() if k.endswith(f"@{service}")}
    return {**{k: v for k, v in env.items() if "@" not in k}, **own}


def own_service_key(
    key: Ed25519PrivateKey | None, publics: Mapping[str, Ed25519PublicKey], service: str
) -> Ed25519PrivateKey:
    """This process's service key, required, and (when the others know one) the one they trust."""
    if key is None:
        raise ConfigError(f"{SERVICE_KEY_ENV} must be set: {service}'s own service key ({HINT})")
    known = publics.get(service)
    if known is not None and known.public_bytes_raw() != key.public_key().public_bytes_raw():
        raise ConfigError(
            f"{SERVICE_KEY_ENV} is not the key {SERVICE_PUBLIC_ENV} names for {service}: the other "
            "services would refuse its calls"
        )
    return key


def token_signing_key(key: Ed25519PrivateKey | None, public: Ed25519PublicKey) -> Ed25519PrivateKey:
    """The user-token private key (the lots service only), required, matching the public one."""
    if key is None:
        raise ConfigError(f"{TOKEN_PRIVATE_ENV} must be set for the service that signs users in ({HINT})")
    if key.public_key().public_bytes_raw() != public.public_bytes_raw():
        raise ConfigError(f"{TOKEN_PRIVATE_ENV} is not the private half of {TOKEN_PUBLIC_ENV}")
    return key
