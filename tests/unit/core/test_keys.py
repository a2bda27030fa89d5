"""flowviz/core/keys.py: the Ed25519 key settings (raw, PEM or a file), refused with how to make
one, and the key files `flowviz keys` writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from flowviz.core import keys
from flowviz.core.config import ConfigError

KEY = keys.generate()  # the user-token key
OTHER_KEY = keys.generate()
GATEWAY_KEY = keys.generate()
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUBLIC_RAW = KEY.public_key().public_bytes_raw()

# --- keys --------------------------------------------------------------------------------


def test_key_settings_take_raw_pem_or_a_file(tmp_path: Path) -> None:
    pem = keys.private_pem(KEY)
    (tmp_path / "token.key").write_text(pem)
    for value in (keys.text(KEY), pem, str(tmp_path / "token.key")):
        assert keys.text(keys.parse_private("K", value, {})) == keys.text(KEY)
    public = PUBLIC_PEM.decode()
    for value in (keys.text(KEY.public_key()), public):
        assert keys.parse_public("K", value, {}).public_bytes_raw() == PUBLIC_RAW
    both = keys.parse_service_publics(f"gateway={keys.text(GATEWAY_KEY.public_key())}, lots={public}", {})
    assert set(both) == {"gateway", "lots"}


def test_an_unset_or_bad_key_refuses_to_start_saying_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FLOWVIZ_TOKEN_PUBLIC_KEY must be set .*flowviz keys DIR"):
        keys.required_public(keys.TOKEN_PUBLIC_ENV, {})
    for bad in (
        "not-a-key",
        str(tmp_path / "missing.pem"),
        "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(ConfigError, match="flowviz keys DIR"):
            keys.parse_public("K", bad, {})
    with pytest.raises(ConfigError, match="name=KEY"):
        keys.parse_service_publics("gateway", {})
    with pytest.raises(ConfigError, match="must be set"):
        keys.own_service_key(None, {}, "qc")
    with pytest.raises(ConfigError, match="not the key"):
        keys.own_service_key(OTHER_KEY, {"qc": KEY.public_key()}, "qc")
    with pytest.raises(ConfigError, match="private half"):
        keys.token_signing_key(OTHER_KEY, KEY.public_key())
    assert keys.token_signing_key(KEY, KEY.public_key()) is KEY


def test_write_keys_makes_owner_only_files_once(tmp_path: Path) -> None:
    first = keys.write_keys(tmp_path / "keys")
    assert keys.write_keys(tmp_path / "keys") == first  # kept across runs
    files = sorted(p.name for p in (tmp_path / "keys").iterdir() if p.suffix == ".key")
    assert files == sorted(["token.key", *(f"service-{s}.key" for s in keys.SERVICE_NAMES)])
    assert all(((tmp_path / "keys" / f).stat().st_mode & 0o777) == 0o600 for f in files)
    assert ((tmp_path / "keys").stat().st_mode & 0o777) == 0o700
    lots, gateway = keys.process_env(first, "lots"), keys.process_env(first, "gateway")
    assert keys.TOKEN_PRIVATE_ENV in lots and keys.TOKEN_PRIVATE_ENV not in gateway
    assert lots[keys.SERVICE_KEY_ENV] != gateway[keys.SERVICE_KEY_ENV]
    assert lots[keys.TOKEN_PUBLIC_ENV] == gateway[keys.TOKEN_PUBLIC_ENV]
