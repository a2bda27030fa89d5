"""Identity: access tokens (JWT, EdDSA), service identity, roles and the per-method policy.

Tokens: `issue_token` signs `iss`, `aud`, `sub`, `role`, `iat`, `nbf`, `exp`, `jti`, `gen` (token
generation) and `sst` (session start) with Ed25519 (flowviz/core/keys.py): users' tokens with
the user-token key (header `kid: user`), a service's with its own key (`kid: service:<name>`).
`verify_token` accepts EdDSA only (so `alg: none`, HS256 made with a public key as the secret
and every other algorithm are refused), picks the public key by `kid` and requires the subject
to match it (the user-token key cannot sign a `service:*` subject, nor a service key a user's
or another service's), checks issuer, audience, the time claims (LEEWAY_SECONDS) and that the
role is known, and returns an `Identity` or raises `Unauthenticated`. `TokenVerifier` does the
same with a small bounded cache of verified tokens (times are re-checked on hits).

Roles: viewer (read), operator (lots, production runs), qc (QC decisions, releases,
mock-recall drills), admin (everything). Services call each other as `service:<name>` with
role `service`, which a policy must name explicitly; admin is allowed everywhere.

Authorization is a table, full gRPC method name -> allowed roles, and `check` FAILS CLOSED:
a method missing from the table is denied, so a new RPC is never open by accident.

    POLICY: Policy = {
        "/flowviz.lots.v1.LotsService/GetLot": READ,
        "/flowviz.lots.v1.LotsService/CreateLot": OPERATE,
        "/flowviz.lots.v1.LotsService/Authenticate": SERVICE_ONLY,
    }
    verifier = TokenVerifier(TrustedKeys(user_public_key, {"gateway": gateway_public_key}))
    identity = verifier.verify(bearer(metadata) or "")   # or None when no header
    check(POLICY, method, identity)
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flowviz.core.errors import DomainError

# --- roles -------------------------------------------------------------------------------

VIEWER: Final = "viewer"
OPERATOR: Final = "operator"
QC: Final = "qc"
ADMIN: Final = "admin"
SERVICE: Final = "service"
USER_ROLES: Final = (VIEWER, OPERATOR, QC, ADMIN)
ROLES: Final = frozenset((*USER_ROLES, SERVICE))
SERVICE_PREFIX: Final = "service:"

# Allowed-role sets for policies. Admin is always allowed and need not be listed.
READ: Final = (VIEWER, OPERATOR, QC)
OPERATE: Final = (OPERATOR,)  # lots, production runs
QUALITY: Final = (QC,)  # QC decisions, releases, mock-recall drills
ADMIN_ONLY: Final = (ADMIN,)  # users, streams, phases, gates
SERVICE_ONLY: Final = (SERVICE,)  # internal calls (e.g. the gateway's login call)
READ_OR_SERVICE: Final = (*READ, SERVICE)

# --- token settings ----------------------------------------------------------------------

ISSUER: Final = "flowviz"
AUDIENCE: Final = "flowviz-api"
ALGORITHM: Final = "EdDSA"
USER_KEY_ID: Final = "user"
LEEWAY_SECONDS: Final = 5
DEFAULT_TTL_SECONDS: Final = 900
MAX_TTL_SECONDS: Final = 24 * 3600
SERVICE_TTL_SECONDS: Final = 300
SERVICE_RENEW_BEFORE_SECONDS: Final = 60
# A token longer than this is refused before any parsing (ours are ~300 characters).
MAX_TOKEN_LENGTH: Final = 4096
MAX_SUBJECT_LENGTH: Final = 256
REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti")

# Unauthenticated / PermissionDenied reasons (google.rpc.ErrorInfo.reason).
TOKEN_MISSING: Final = "TOKEN_MISSING"
TOKEN_INVALID: Final = "TOKEN_INVALID"
TOKEN_EXPIRED: Final = "TOKEN_EXPIRED"
TOKEN_NOT_YET_VALID: Final = "TOKEN_NOT_YET_VALID"
ROLE_FORBIDDEN: Final = "ROLE_FORBIDDEN"
METHOD_NOT_IN_POLICY: Final = "METHOD_NOT_IN_POLICY"

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_METHOD = re.compile(r"/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+/[A-Za-z_][A-Za-z0-9_]*")
_JWT = jwt.PyJWT(
    options={
        "verify_signature": True,
        "require": list(REQUIRED_CLAIMS),
        "verify_iss": True,
        "verify_aud": True,
        "strict_aud": True,
        # Time claims are checked here against an injectable `now` (see _check_times).
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
    }
)


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not verify (HTTP 401)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    """A verified identity that may not do this (HTTP 403)."""

    code = grpc.StatusCode.PERMISSION_DENIED


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    role: str
    is_service: bool
    # Not part of equality: where the identity came from.
    token_id: str = field(default="", compare=False)
    not_before: float = field(default=0.0, compare=False, repr=False)
    expires_at: float = field(default=0.0, compare=False)
    # The user's token generation at sign-in (flowviz/core/revocation.py); 0 for services.
    generation: int = field(default=0, compare=False)
    # When the user signed in with a password (claim `sst`): refreshes keep it, and end at
    # FLOWVIZ_SESSION_MAX_HOURS after it. 0 for services.
    session_start: float = field(default=0.0, compare=False)


# The caller of the RPC being served; the server interceptor sets it, logs and audit read it.
current_identity: ContextVar[Identity | None] = ContextVar("flowviz_identity", default=None)

Policy = dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a verifier believes: users' tokens, and each service's own identity."""

    user: Ed25519PublicKey | None
    services: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    def for_key_id(self, kid: object) -> Ed25519PublicKey | None:
        if kid == USER_KEY_ID:
            return self.user
        if isinstance(kid, str) and kid.startswith(SERVICE_PREFIX):
            return self.services.get(kid[len(SERVICE_PREFIX) :])
        return None


# --- tokens ------------------------------------------------------------------------------


def _encode(
    subject: str,
    role: str,
    key: Ed25519PrivateKey,
    kid: str,
    ttl_seconds: int,
    now: float | None,
    extra: dict[str, int],
) -> str:
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("tokens are signed with an Ed25519 private key (flowviz/core/keys.py)")
    if not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be 1..{MAX_TTL_SECONDS}")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ValueError(f"subject must be 1..{MAX_SUBJECT_LENGTH} characters")
    issued = int(time.time() if now is None else now)
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": secrets.token_urlsafe(16),
        **{name: issued if value < 0 else value for name, value in extra.items()},
    }
    return jwt.encode(payload, key, algorithm=ALGORITHM, headers={"kid": kid})


def issue_token(
    subject: str,
    role: str,
    *,
    key: Ed25519PrivateKey,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
    generation: int = 0,
    session_start: int | None = None,
) -> str:
    """An access token for a user, signed with the user-token key. `role` must be a user role;
    subjects `service:*` are reserved. `generation` is the user's token generation now
    (revocation.py); `session_start` when they last gave their password (default: now)."""
    if role not in USER_ROLES:
        raise ValueError(f"unknown user role {role!r}")
    if isinstance(subject, str) and subject.startswith(SERVICE_PREFIX):
        raise ValueError(f"subjects starting with {SERVICE_PREFIX!r} are reserved for services")
    start = -1 if session_start is None else session_start
    return _encode(subject, role, key, USER_KEY_ID, ttl_seconds, now, {"gen": generation, "sst": start})


def issue_service_token(
    service_name: str,
    key: Ed25519PrivateKey,
    *,
    ttl_seconds: int = SERVICE_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """A short-lived token for service-to-service calls, signed with that service's own key:
    subject `service:<name>`, role `service`."""
    if not isinstance(service_name, str) or not _SERVICE_NAME.fullmatch(service_name):
        raise ValueError("service_name must be lower-case letters, digits and '-', 1..63 characters")
    subject = SERVICE_PREFIX + service_name
    return _encode(subject, SERVICE, key, subject, ttl_seconds, now, {})


def _invalid(message: str = "the access token is invalid") -> Unauthenticated:
    return Unauthenticated(TOKEN_INVALID, message)


def _numeric_date(claims: dict[str, Any], name: str) -> int:
    value = claims[name]
    if type(value) is not int:  # bool and float are refused; we only issue integers
        raise _invalid()
    return value


def _check_times(identity: Identity, now: float) -> None:
    if now >= identity.expires_at + LEEWAY_SECONDS:
        raise Unauthenticated(TOKEN_EXPIRED, "the access token has expired")
    if identity.not_before > now + LEEWAY_SECONDS:
        raise Unauthenticated(TOKEN_NOT_YET_VALID, "the access token is not valid yet")


def _decode(token: str, keys: TrustedKeys, max_lifetime: int) -> Identity:
    """Signature, algorithm, key id, issuer, audience, claim shapes and lifetime; not the time
    window. A lifetime (exp - iat) longer than this system issues is refused: a token minted with
    a leaked key and a ten-year expiry is not accepted. Service tokens live SERVICE_TTL_SECONDS."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid()
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.for_key_id(kid)
        if key is None:
            raise _invalid()
        claims = _JWT.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise _invalid() from None
    subject, role, jti = claims["sub"], claims["role"], claims["jti"]
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise _invalid()
    if not isinstance(jti, str) or not jti:
        raise _invalid()
    if not isinstance(role, str) or role not in ROLES:
        raise _invalid("the access token names an unknown role")
    is_service = role == SERVICE
    if is_service != subject.startswith(SERVICE_PREFIX):
        raise _invalid()
    # The key must be the subject's: a service key signs only its own name, the user key no service.
    if kid != (subject if is_service else USER_KEY_ID):
        raise _invalid()
    issued = _numeric_date(claims, "iat")
    not_before = max(issued, _numeric_date(claims, "nbf"))
    expires = _numeric_date(claims, "exp")
    if expires <= issued:
        raise _invalid()
    if expires - issued > (SERVICE_TTL_SECONDS if is_service else max_lifetime):
        raise _invalid("the access token lives longer than this system issues tokens for")
    generation = claims.get("gen", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise _invalid()
    session_start = 0
    if not is_service:
        session_start = _numeric_date(claims, "sst") if "sst" in claims else -1
        if not 0 < session_start <= issued:
            raise _invalid()
    return Identity(
        subject, role, is_service, jti, float(not_before), float(expires), generation, float(session_start)
    )


def verify_token(
    token: str, *, keys: TrustedKeys, now: float | None = None, max_lifetime: int = MAX_TTL_SECONDS
) -> Identity:
    """The identity a token proves; else Unauthenticated(TOKEN_INVALID|TOKEN_EXPIRED|TOKEN_NOT_YET_VALID)."""
    identity = _decode(token, keys, max_lifetime)
    _check_times(identity, time.time() if now is None else now)
    return identity


class TokenVerifier:
    """`verify_token` for one set of keys, with an LRU of verified tokens kept until they expire.

    A hit costs a dict look-up and the time check instead of a signature check and two JSON
    parses. Safe because verification is a pure function of (token string, keys, time) and the
    time window is re-checked on every hit. Only successes are cached.
    """

    def __init__(
        self,
        keys: TrustedKeys,
        *,
        max_lifetime: int = MAX_TTL_SECONDS,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(keys, TrustedKeys):
            raise TypeError("a TokenVerifier needs TrustedKeys")
        self._keys = keys
        self._max_lifetime = max_lifetime
        self._size = cache_size
        self._clock = clock
        self._cache: OrderedDict[str, Identity] = OrderedDict()

    def verify(self, token: str, *, now: float | None = None) -> Identity:
        when = self._clock() if now is None else now
        cache = self._cache
        identity = cache.get(token) if isinstance(token, str) else None
        if identity is None:
            identity = _decode(token, self._keys, self._max_lifetime)
            _check_times(identity, when)
            if self._size > 0:
                cache[token] = identity
                if len(cache) > self._size:
                    cache.popitem(last=False)
            return identity
        try:
            _check_times(identity, when)
        except Unauthenticated:
            del cache[token]
            raise
        cache.move_to_end(token)
        return identity

    def __len__(self) -> int:
        return len(self._cache)


class ServiceTokenSource:
    """This service's own token, cached and renewed `renew_before` seconds before it expires.

    Cheap per outgoing RPC (a clock read and a comparison):
        source = ServiceTokenSource("gateway", gateway_private_key)
        await stub.Authenticate(req, metadata=source.metadata())
    """

    def __init__(
        self,
        service_name: str,
        key: Ed25519PrivateKey,
        *,
        ttl_seconds: int = SERVICE_TTL_SECONDS,
        renew_before: float = SERVICE_RENEW_BEFORE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= renew_before < ttl_seconds:
            raise ValueError("renew_before must be in 0..ttl_seconds")
        issue_service_token(service_name, key, ttl_seconds=ttl_seconds)  # validates arguments
        self._name = service_name
        self._key = key
        self._ttl = ttl_seconds
        self._renew_before = renew_before
        self._clock = clock
        self._token = ""
        self._renew_at = float("-inf")

    def token(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            self._token = issue_service_token(self._name, self._key, ttl_seconds=self._ttl, now=now)
            self._renew_at = int(now) + self._ttl - self._renew_before
        return self._token

    def metadata(self) -> tuple[tuple[str, str]]:
        """gRPC call metadata carrying the token."""
        return (("authorization", "Bearer " + self.token()),)


# --- headers -----------------------------------------------------------------------------

HeaderSource = str | bytes | Mapping[str, str] | Iterable[tuple[str, str | bytes]] | None


def _parse_bearer(value: str | bytes) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if len(value) > MAX_TOKEN_LENGTH + 16:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN68.fullmatch(token):
        return None
    return token


def bearer(source: HeaderSource) -> str | None:
    """The token of `authorization: Bearer <token>`, or None.

    `source` is a header value, a mapping of headers (e.g. starlette's Headers), or gRPC
    metadata (pairs). More than one authorization entry is ambiguous and yields None.
    """
    if source is None:
        return None
    if isinstance(source, (str, bytes)):
        return _parse_bearer(source)
    if isinstance(source, Mapping):
        value = source.get("authorization")
        if value is None:
            value = source.get("Authorization")
        return None if value is None else _parse_bearer(value)
    found: list[str | bytes] = [v for k, v in source if isinstance(k, str) and k.lower() == "authorization"]
    return _parse_bearer(found[0]) if len(found) == 1 else None


# --- authorization -----------------------------------------------------------------------


def require(identity: Identity | None, *allowed_roles: str) -> Identity:
    """`identity` if its role is allowed. Admin always is; `service` only when listed."""
    if identity is None:
        raise Unauthenticated(TOKEN_MISSING, "authentication required")
    role = identity.role
    if role == ADMIN or role in allowed_roles:
        return identity
    needed = list(dict.fromkeys(r for r in (*allowed_roles, ADMIN) if r != role))
    names = f"the role {needed[0]}" if len(needed) == 1 else f"one of the roles {', '.join(needed)}"
    raise PermissionDenied(
        ROLE_FORBIDDEN,
        f"the role {role!r} may not do this; it needs {names}",
        role=role,
        needed_roles=",".join(needed),
    )


def check(policy: Policy, method: str, identity: Identity | None) -> Identity:
    """Authorize a call of `method` (`/pkg.Service/Method`); a method not in `policy` is denied."""
    allowed = policy.get(method)
    if allowed is None:
        raise PermissionDenied(METHOD_NOT_IN_POLICY, "this method is not open to any role", method=method)
    return require(identity, *allowed)


def validate_policy(policy: Policy, methods: Iterable[str] | None = None) -> None:
    """Raise ValueError for malformed method names, unknown roles and, when the served
    `methods` are given, any served method missing from the policy or listed but not served.
    Call it at start-up (and in tests) with the methods of the services' descriptors."""
    problems: list[str] = []
    for method, roles in policy.items():
        if not _METHOD.fullmatch(method):
            problems.append(f"malformed method name {method!r}")
        if not isinstance(roles, tuple) or not roles:
            problems.append(f"{method}: allowed roles must be a non-empty tuple")
            continue
        problems.extend(f"{method}: unknown role {r!r}" for r in roles if r not in ROLES)
    if methods is not None:
        served = set(methods)
        problems.extend(f"{m}: served but not in the policy" for m in sorted(served - policy.keys()))
        problems.extend(f"{m}: in the policy but not served" for m in sorted(policy.keys() - served))
    if problems:
        raise ValueError("invalid policy: " + "; ".join(problems))
