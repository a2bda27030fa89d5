"""Password hashing (Argon2id), verification and the password policy.

Parameters: Argon2id, t=2, m=19 MiB, p=1 -- the OWASP Password Storage Cheat Sheet's first
recommended set (equivalent to m=46 MiB/t=1). On this project's 2-core machines one hash or
verify costs ~30 ms. 64 MiB was measured at 90-150 ms per verify here (t=1..2), outside the
20-50 ms budget, and would use 64 MiB per concurrent login; 19 MiB keeps a burst of logins
(bounded to `HASH_WORKERS` at a time) under ~40 MiB. Raise `TIME_COST` before `MEMORY_COST_KIB`
when hardware allows; stored hashes with older parameters are upgraded at the next login
(`needs_rehash`).

Use:
    check_password_policy(pw, username=name)     # when a password is set (hash_password does it)
    stored = await hash_password_async(pw, username=name)
    ok = await verify_password_async(stored_or_None, pw)  # None for unknown users: same cost
    if ok and needs_rehash(stored): store(await hash_password_async(pw))

Passwords are NFKC-normalised before hashing, so the same password typed on different
keyboards/platforms (composed vs decomposed accents, full-width digits) verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import hash_secret

from flowviz.core.errors import InvalidArgument

# Argon2id parameters (RFC 9106 / OWASP). Changing them makes `needs_rehash` true for old hashes.
TIME_COST: Final = 2
MEMORY_COST_KIB: Final = 19 * 1024
PARALLELISM: Final = 1
HASH_LEN: Final = 32
SALT_LEN: Final = 16

# Policy (NIST SP 800-63B: length over composition rules, a block list, no forced rotation).
MIN_LENGTH: Final = 12
# Bounds the hashing cost of a single request and the request size; counted in code points.
MAX_LENGTH: Final = 1024
MIN_DISTINCT_CHARS: Final = 4
# Stored hashes that claim more than this are refused rather than computed (a hash row
# edited to m=4 GiB must not take the service down).
MAX_STORED_MEMORY_KIB: Final = 256 * 1024
MAX_STORED_TIME_COST: Final = 16

# Concurrent hashes at most: one per core. Each holds MEMORY_COST_KIB while it runs.
HASH_WORKERS: Final = max(1, min(os.cpu_count() or 2, 4))

REASON_WEAK: Final = "PASSWORD_WEAK"

# Common passwords of at least MIN_LENGTH characters (compared case-insensitively).
_BLOCKLIST: Final = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456789012345",
        "1234567890qwerty",
        "1q2w3e4r5t6y",
        "1q2w3e4r5t6y7u8i",
        "administrator",
        "changemechangeme",
        "correcthorsebatterystaple",
        "correct horse battery staple",
        "flowvizflowviz",
        "iloveyou1234",
        "letmeinletmein",
        "password1234",
        "password12345",
        "password123!",
        "passwordpassword",
        "qwertyuiop12",
        "qwertyuiopasdf",
        "qwertyuiopasdfgh",
        "qwerty123456",
        "welcome12345",
        "welcome123456",
    }
)


def make_hasher(
    *,
    time_cost: int = TIME_COST,
    memory_cost_kib: int = MEMORY_COST_KIB,
    parallelism: int = PARALLELISM,
) -> PasswordHasher:
    """An Argon2id hasher; tests pass tiny costs to stay fast."""
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_cost_kib,
        parallelism=parallelism,
        hash_len=HASH_LEN,
        salt_len=SALT_LEN,
        type=Type.ID,
    )


DEFAULT_HASHER: Final = make_hasher()


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


# Control characters (Unicode category Cc) as one character class: the policy and the OpenAPI
# pattern (flowviz.core.validation) are built from it.
CONTROL_CLASS: Final = "\\x00-\\x1f\\x7f-\\x9f"
# Lone surrogates too, which JSON cannot carry here (the gateway's parser refuses them) and
# schema validators' regex engines cannot name.
_CONTROL: Final = re.compile(f"[{CONTROL_CLASS}\\ud800-\\udfff]")
# Rules a JSON Schema cannot state (the document says them in words); `rule` in the error's details.
RULE_DISTINCT: Final = "distinct"
RULE_COMMON: Final = "common"
RULE_USERNAME: Final = "contains_username"


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Raise InvalidArgument(PASSWORD_WEAK) unless `password` is acceptable as a new password.

    Length, control characters and distinct characters are judged on the password as typed
    (so the published schema's lengths and pattern state them exactly); the block list and
    the username are compared on its NFKC, case-folded form."""

    def weak(message: str, rule: str) -> InvalidArgument:
        return InvalidArgument(
            REASON_WEAK, message, field="password", rule=rule, min_length=MIN_LENGTH, max_length=MAX_LENGTH
        )

    if not isinstance(password, str):
        raise weak("password must be a string", "type")
    if len(password) > MAX_LENGTH:
        raise weak(f"password must be at most {MAX_LENGTH} characters", "length")
    if len(password) < MIN_LENGTH:
        raise weak(f"password must be at least {MIN_LENGTH} characters", "length")
    if _CONTROL.search(password):
        raise weak("password must not contain control characters", "control")
    if len(set(password)) < MIN_DISTINCT_CHARS:
        raise weak(f"password must contain at least {MIN_DISTINCT_CHARS} different characters", RULE_DISTINCT)
    folded = _normalize(password).casefold()
    if folded in _BLOCKLIST:
        raise weak("password is too common", RULE_COMMON)
    if username and len(username) >= 3 and _normalize(username).casefold() in folded:
        raise weak("password must not contain the username", RULE_USERNAME)


def hash_password(
    password: str, *, username: str | None = None, hasher: PasswordHasher = DEFAULT_HASHER
) -> str:
    """Check the policy, then hash. Returns the PHC string (`$argon2id$v=19$m=...`)."""
    check_password_policy(password, username=username)
    return hasher.hash(_normalize(password))


@functools.cache
def _dummy_hash(time_cost: int, memory_cost: int, parallelism: int, hash_len: int, salt_len: int) -> str:
    # Same parameters as real hashes, so a dummy verify costs what a real one does.
    return hash_secret(
        b"flowviz-dummy-password",
        os.urandom(salt_len),
        time_cost=time_cost,
        memory_cost=memory_cost,
        parallelism=parallelism,
        hash_len=hash_len,
        type=Type.ID,
    ).decode("ascii")


def warm_up(*, hasher: PasswordHasher = DEFAULT_HASHER) -> None:
    """Compute the dummy hash now (a service's start-up), not on the first unknown-user login."""
    _dummy_hash(hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.hash_len, hasher.salt_len)


def dummy_verify(password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """Spend what a real verify spends, and return False (unknown user, disabled account)."""
    dummy = _dummy_hash(
        hasher.time_cost, hasher.memory_cost, hasher.parallelism, hasher.hash_len, hasher.salt_len
    )
    with contextlib.suppress(VerificationError, InvalidHashError, ValueError):
        hasher.verify(dummy, _normalize(password[:MAX_LENGTH]) if isinstance(password, str) else "")
    return False


def _acceptable_stored(stored_hash: str) -> bool:
    try:
        params = extract_parameters(stored_hash)
    except (InvalidHashError, ValueError, TypeError, AttributeError):
        return False
    return (
        params.type is Type.ID
        and params.memory_cost <= MAX_STORED_MEMORY_KIB
        and params.time_cost <= MAX_STORED_TIME_COST
    )


def verify_password(
    stored_hash: str | None, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """True when `password` matches. Never raises for bad input.

    `stored_hash=None` (unknown user) or a malformed hash runs a dummy verify with the
    current parameters, so the response time does not reveal which usernames exist.
    Passwords over MAX_LENGTH are refused without hashing (no account has one).
    """
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    if not isinstance(stored_hash, str) or not _acceptable_stored(stored_hash):
        return dummy_verify(password, hasher=hasher)
    try:
        return hasher.verify(stored_hash, _normalize(password))
    except (VerificationError, InvalidHashError, ValueError):
        # Mismatch, corrupt hash, or a password that cannot be encoded (lone surrogates).
        return False


def needs_rehash(stored_hash: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    """True when the hash was made with other parameters (or is not a valid hash)."""
    try:
        return hasher.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError, TypeError, AttributeError):
        return True


_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    # A pool of its own, one thread per core: a burst of logins queues here instead of taking
    # every thread of the loop's default executor (which getaddrinfo uses) and HASH_WORKERS x
    # MEMORY_COST_KIB bounds the memory. argon2-cffi releases the GIL while hashing.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="argon2")
    return _executor


async def hash_password_async(
    password: str, *, username: str | None = None, hasher: PasswordHasher = DEFAULT_HASHER
) -> str:
    """`hash_password` off the event loop. The policy check runs first, on the loop (cheap)."""
    check_password_policy(password, username=username)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), hasher.hash, _normalize(password))


async def verify_password_async(
    stored_hash: str | None, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """`verify_password` off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _pool(), functools.partial(verify_password, stored_hash, password, hasher=hasher)
    )
