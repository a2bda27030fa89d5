"""flowviz/core/passwords.py: Argon2id hashing and verifying, normalisation, the password policy."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher, Type, extract_parameters

from flowviz.core import passwords
from flowviz.core.errors import InvalidArgument

# --- passwords ---------------------------------------------------------------------------

FAST = passwords.make_hasher(time_cost=1, memory_cost_kib=8, parallelism=1)
GOOD = "plum-harbor-vivid-7-lantern"


def test_default_parameters() -> None:
    hasher = passwords.DEFAULT_HASHER
    assert hasher.type is Type.ID
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 19 * 1024, 1)
    assert passwords.MIN_LENGTH == 12 and passwords.MAX_LENGTH == 1024


def test_hash_and_verify() -> None:
    stored = passwords.hash_password(GOOD, hasher=FAST)
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert passwords.verify_password(stored, GOOD, hasher=FAST)
    assert not passwords.verify_password(stored, GOOD + "x", hasher=FAST)
    assert not passwords.verify_password(stored, "", hasher=FAST)
    assert passwords.hash_password(GOOD, hasher=FAST) != stored  # salted


def test_hash_with_default_parameters() -> None:
    stored = passwords.hash_password(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify_password(stored, GOOD)
    assert not passwords.needs_rehash(stored)


def test_passwords_are_nfkc_normalised() -> None:
    composed = "café-harbor-vivid-7"
    decomposed = "cafe\u0301-harbor-vivid-7"
    stored = passwords.hash_password(composed, hasher=FAST)
    assert passwords.verify_password(stored, decomposed, hasher=FAST)


@pytest.mark.parametrize(
    "bad_hash",
    [
        None,
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",
        "$2b$12$abcdefghijklmnopqrstuuK0mS1cY4rKZ2T8rN1xq7L0CH6o0z8bG",  # bcrypt
        "!disabled",
        42,
    ],
)
def test_verify_never_raises_on_bad_hashes(bad_hash: Any) -> None:
    assert passwords.verify_password(bad_hash, GOOD, hasher=FAST) is False


@pytest.mark.parametrize("bad_password", [None, 42, b"bytes", "\ud800lone-surrogate", "x" * 1025, ""])
def test_verify_never_raises_on_bad_passwords(bad_password: Any) -> None:
    stored = passwords.hash_password(GOOD, hasher=FAST)
    assert passwords.verify_password(stored, bad_password, hasher=FAST) is False
    assert passwords.verify_password(None, bad_password, hasher=FAST) is False


def test_hostile_stored_parameters_are_refused() -> None:
    # An argon2i hash, or one demanding 1 GiB, is not computed.
    argon2i = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=Type.I).hash(GOOD)
    assert not passwords.verify_password(argon2i, GOOD, hasher=FAST)
    stored = passwords.hash_password(GOOD, hasher=FAST)
    huge = stored.replace("m=8,", f"m={1024 * 1024},")
    assert not passwords.verify_password(huge, GOOD, hasher=FAST)


def test_unknown_user_runs_a_dummy_verify_with_the_same_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_verify = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str, password: str) -> Any:
        calls.append(hash)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    assert passwords.verify_password(None, GOOD, hasher=FAST) is False
    assert passwords.verify_password("garbage", GOOD, hasher=FAST) is False
    assert len(calls) == 2
    stored = passwords.hash_password(GOOD, hasher=FAST)
    for dummy in calls:
        assert extract_parameters(dummy) == extract_parameters(stored)
    passwords.warm_up(hasher=FAST)


def test_needs_rehash() -> None:
    stored = passwords.hash_password(GOOD, hasher=FAST)
    assert not passwords.needs_rehash(stored, hasher=FAST)
    stronger = passwords.make_hasher(time_cost=2, memory_cost_kib=16, parallelism=1)
    assert passwords.needs_rehash(stored, hasher=stronger)
    assert passwords.needs_rehash(stored)  # against the default parameters
    for garbage in ("", "nonsense", "$argon2id$v=19$", None):
        assert passwords.needs_rehash(garbage, hasher=FAST)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("short", None),
        ("elevenchars", None),
        ("x" * 1025, None),
        ("aaaaaaaaaaaaaaaa", None),
        ("abababababababab", None),
        ("Password1234", None),  # block list, case-insensitive
        ("123456789012", None),
        ("my-name-is-olga-smith", "olga"),
        ("control\x00chars-here", None),
        ("tab\tand-newline\n-here", None),
        ("\ud800lone-surrogate-xx", None),
        (None, None),
    ],
)
def test_policy_rejects(password: Any, username: str | None) -> None:
    with pytest.raises(InvalidArgument) as e:
        passwords.check_password_policy(password, username=username)
    assert e.value.reason == "PASSWORD_WEAK"
    assert "min_length" in e.value.metadata
    with pytest.raises(InvalidArgument):
        passwords.hash_password(password, username=username, hasher=FAST)


@pytest.mark.parametrize(
    "password",
    [
        "correct-horse-battery",
        "twelve chars",
        "Ünïcödé-Pässwörd",
        "x" * 1000 + "abcd",
        "日本語のパスワードですね",
    ],
)
def test_policy_accepts(password: str) -> None:
    passwords.check_password_policy(password, username="olga")
    assert passwords.verify_password(passwords.hash_password(password, hasher=FAST), password, hasher=FAST)


async def test_async_variants() -> None:
    stored = await passwords.hash_password_async(GOOD, hasher=FAST)
    assert await passwords.verify_password_async(stored, GOOD, hasher=FAST)
    assert not await passwords.verify_password_async(stored, "wrong-password-here", hasher=FAST)
    assert not await passwords.verify_password_async(None, GOOD, hasher=FAST)
    with pytest.raises(InvalidArgument):
        await passwords.hash_password_async("short", hasher=FAST)
