"""flowviz/core/auth.py: tokens (issued, verified, refused), the verifier cache, bearer headers,
roles and the policy check. Pure: no database, no cache, no processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flowviz.core import auth, keys
from flowviz.core.auth import (
    ADMIN,
    ADMIN_ONLY,
    OPERATE,
    QUALITY,
    READ,
    READ_OR_SERVICE,
    ROLES,
    SERVICE,
    SERVICE_ONLY,
    Identity,
    PermissionDenied,
    ServiceTokenSource,
    TokenVerifier,
    TrustedKeys,
    Unauthenticated,
    bearer,
    check,
    issue_service_token,
    issue_token,
    require,
    validate_policy,
    verify_token,
)
from flowviz.core.errors import to_status
from flowviz.core.ratelimit import TooManyAttempts

KEY = keys.generate()  # the user-token key
OTHER_KEY = keys.generate()
GATEWAY_KEY = keys.generate()
GENEALOGY_KEY = keys.generate()
KEYS = TrustedKeys(
    KEY.public_key(), {"gateway": GATEWAY_KEY.public_key(), "genealogy": GENEALOGY_KEY.public_key()}
)
NOW = 1_800_000_000.0
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
PUBLIC_RAW = KEY.public_key().public_bytes_raw()


# --- helpers -----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "flowviz",
        "aud": "flowviz-api",
        "sub": "alice",
        "role": "operator",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 900,
        "jti": "j1",
        "sst": int(NOW),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def signed(payload: dict[str, Any], key: Ed25519PrivateKey = KEY, kid: str | None = "user") -> str:
    """A token signed with EdDSA by `key`, with header `kid`."""
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid} if kid is not None else None)


def hand_made(
    header: dict[str, Any], payload: dict[str, Any], secret: bytes | None = PUBLIC_RAW, sign: str = "sha256"
) -> str:
    """A JWT built without pyjwt, MACed by HMAC-`sign` with `secret` (None: empty signature)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), getattr(hashlib, sign)).digest()
    return f"{signing_input}.{b64(mac)}"


def reason_of(excinfo: pytest.ExceptionInfo[Any]) -> str:
    return str(excinfo.value.reason)


# --- tokens ------------------------------------------------------------------------------


def test_round_trip_user_token() -> None:
    token = issue_token("alice", "qc", key=KEY, now=NOW)
    identity = verify_token(token, keys=KEYS, now=NOW + 1)
    assert identity == Identity("alice", "qc", False)
    assert identity.expires_at == NOW + 900
    assert identity.token_id
    payload = jwt.decode(token, options={"verify_signature": False})
    assert set(payload) == {"iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti", "gen", "sst"}
    assert payload["iss"] == "flowviz" and payload["aud"] == "flowviz-api"
    assert payload["gen"] == 0 and identity.generation == 0
    assert payload["sst"] == int(NOW) and identity.session_start == NOW
    later = issue_token("alice", "qc", key=KEY, now=NOW, generation=3, session_start=int(NOW) - 60)
    refreshed = verify_token(later, keys=KEYS, now=NOW + 1)
    assert refreshed.generation == 3 and refreshed.session_start == NOW - 60
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "JWT", "kid": "user"}


def test_every_token_has_its_own_jti() -> None:
    a = issue_token("alice", "viewer", key=KEY, now=NOW)
    b = issue_token("alice", "viewer", key=KEY, now=NOW)
    assert a != b
    assert verify_token(a, keys=KEYS, now=NOW).token_id != verify_token(b, keys=KEYS, now=NOW).token_id


def test_round_trip_service_token() -> None:
    token = issue_service_token("gateway", GATEWAY_KEY, now=NOW)
    identity = verify_token(token, keys=KEYS, now=NOW)
    assert identity == Identity("service:gateway", SERVICE, True)
    assert identity.expires_at == NOW + auth.SERVICE_TTL_SECONDS
    assert jwt.get_unverified_header(token)["kid"] == "service:gateway"


def test_each_key_signs_only_its_own_identities() -> None:
    """The user-token key cannot mint a service identity, a service key neither a user's token
    nor another service's identity, and a key nobody trusts nothing at all."""
    forged = {
        "service by the user key": issue_service_token("gateway", KEY, now=NOW),
        "service labelled as the user key": signed(
            claims(sub="service:gateway", role="service", exp=int(NOW) + 60)
        ),
        "user by a service key": signed(claims(role="admin"), GATEWAY_KEY, "service:gateway"),
        "user by a service key labelled user": signed(claims(role="admin"), GATEWAY_KEY),
        "gateway by genealogy's key": issue_service_token("gateway", GENEALOGY_KEY, now=NOW),
        "gateway labelled as genealogy": signed(
            claims(sub="service:gateway", role="service", exp=int(NOW) + 60),
            GENEALOGY_KEY,
            "service:genealogy",
        ),
        "a service nobody knows": issue_service_token("qc", keys.generate(), now=NOW),
        "no key id": signed(claims(), KEY, None),
        "an unknown key id": signed(claims(), KEY, "admin"),
    }
    for case, token in forged.items():
        with pytest.raises(Unauthenticated) as e:
            verify_token(token, keys=KEYS, now=NOW)
        assert reason_of(e) == "TOKEN_INVALID", case
    # Without the services' keys (the gateway's verifier) no service identity passes at all.
    with pytest.raises(Unauthenticated):
        verify_token(
            issue_service_token("gateway", GATEWAY_KEY, now=NOW), keys=TrustedKeys(KEY.public_key()), now=NOW
        )


def test_expired_token() -> None:
    token = issue_token("alice", "viewer", key=KEY, ttl_seconds=60, now=NOW)
    # Within the leeway it still passes; past it, it is expired.
    verify_token(token, keys=KEYS, now=NOW + 60 + auth.LEEWAY_SECONDS - 1)
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW + 60 + auth.LEEWAY_SECONDS)
    assert reason_of(e) == "TOKEN_EXPIRED"
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS)  # real clock: long after 2027
    assert reason_of(e) in ("TOKEN_EXPIRED", "TOKEN_NOT_YET_VALID")


def test_not_yet_valid_token() -> None:
    token = issue_token("alice", "viewer", key=KEY, now=NOW)
    verify_token(token, keys=KEYS, now=NOW - auth.LEEWAY_SECONDS)  # clock skew within leeway
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW - auth.LEEWAY_SECONDS - 1)
    assert reason_of(e) == "TOKEN_NOT_YET_VALID"
    with pytest.raises(Unauthenticated) as e:
        verify_token(signed(claims(nbf=int(NOW) + 100)), keys=KEYS, now=NOW)
    assert reason_of(e) == "TOKEN_NOT_YET_VALID"


def test_signed_helper_makes_valid_tokens() -> None:
    # The forgery tests below rely on `signed` producing valid tokens when it should.
    assert verify_token(signed(claims()), keys=KEYS, now=NOW).subject == "alice"


def test_tampered_signature() -> None:
    token = issue_token("alice", "viewer", key=KEY, now=NOW)
    head, payload, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    for bad in (f"{head}.{payload}.{flipped}", f"{head}.{payload}.", f"{head}.{payload}"):
        with pytest.raises(Unauthenticated) as e:
            verify_token(bad, keys=KEYS, now=NOW)
        assert reason_of(e) == "TOKEN_INVALID"


def test_tampered_payload_privilege_escalation() -> None:
    token = issue_token("alice", "viewer", key=KEY, now=NOW)
    head, _, sig = token.split(".")
    forged = b64(json.dumps(claims(role="admin")).encode())
    with pytest.raises(Unauthenticated):
        verify_token(f"{head}.{forged}.{sig}", keys=KEYS, now=NOW)


def test_wrong_key() -> None:
    token = issue_token("alice", "viewer", key=OTHER_KEY, now=NOW)
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW)
    assert reason_of(e) == "TOKEN_INVALID"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT", "kid": "user"}, claims(role="admin"), secret=None)
    assert token.endswith(".")
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW)
    assert reason_of(e) == "TOKEN_INVALID"


@pytest.mark.parametrize(("alg", "digest"), [("HS256", "sha256"), ("HS384", "sha384"), ("HS512", "sha512"),
                                             ("EdDSA", "sha256"), ("ES256", "sha256"), ("RS256", "sha256")])  # fmt: skip
@pytest.mark.parametrize("secret", [PUBLIC_RAW, PUBLIC_PEM], ids=["raw", "pem"])
def test_key_confusion_is_refused(alg: str, digest: str, secret: bytes) -> None:
    """HMACs made with the public key (which everyone may know) as the secret: refused."""
    token = hand_made({"alg": alg, "typ": "JWT", "kid": "user"}, claims(role="admin"), secret, digest)
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW)
    assert reason_of(e) == "TOKEN_INVALID"


def test_hs256_signed_by_pyjwt_is_refused() -> None:
    token = jwt.encode(claims(), secrets.token_bytes(64), algorithm="HS256", headers={"kid": "user"})
    with pytest.raises(Unauthenticated):
        verify_token(token, keys=KEYS, now=NOW)


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "other-api"},
        {"aud": ["flowviz-api", "other-api"]},  # strict: a single audience, ours
        {"aud": ""},
        {"iss": "evil"},
        {"iss": ""},
        {"role": "superuser"},
        {"role": "Admin"},
        {"role": ""},
        {"role": ["admin"]},
        {"sub": ""},
        {"sub": 42},
        {"sub": "x" * 300},
        {"jti": ""},
        {"exp": "1800000900"},
        {"exp": 1_800_000_900.5},
        {"exp": True},
        {"iat": "now"},
        {"exp": int(NOW)},  # exp <= iat
        {"sst": ...},  # a user token says when its session began
        {"sst": int(NOW) + 1},  # after it was issued
        {"sst": 0},
        {"sst": "today"},
        # service role and service subjects go together
        {"role": "service", "sub": "alice"},
        {"role": "admin", "sub": "service:gateway"},
    ],
)
def test_bad_claims_are_refused(overrides: dict[str, Any]) -> None:
    token = signed(claims(**overrides))
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW + 1)
    assert reason_of(e) == "TOKEN_INVALID"


@pytest.mark.parametrize("missing", auth.REQUIRED_CLAIMS)
def test_missing_claims_are_refused(missing: str) -> None:
    token = signed(claims(**{missing: ...}))
    with pytest.raises(Unauthenticated) as e:
        verify_token(token, keys=KEYS, now=NOW + 1)
    assert reason_of(e) == "TOKEN_INVALID"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "abc",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d.e",
        "eyJ.eyJ.sig",
        "Bearer x.y.z",
        "\x00\x01\x02",
        "é.ü.ß",
        "x" * 10_000,
        b64(b"{}") + "." + b64(b"[]") + ".",
        b64(b"[1]") + "." + b64(b"{}") + "." + b64(b"sig"),
        b64(b'{"alg":"EdDSA","kid":"user"}') + "." + b64(b"not json") + ".sig",
        b64(b'{"alg":"EdDSA","kid":"user"}') + "." + b64(b'"a string"') + ".sig",
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(Unauthenticated) as e:
        verify_token(garbage, keys=KEYS, now=NOW)
    assert reason_of(e) == "TOKEN_INVALID"


@pytest.mark.parametrize("not_a_string", [None, b"a.b.c", 42, ["a.b.c"]])
def test_non_string_tokens_are_refused(not_a_string: Any) -> None:
    with pytest.raises(Unauthenticated):
        verify_token(not_a_string, keys=KEYS, now=NOW)
    with pytest.raises(Unauthenticated):
        TokenVerifier(KEYS).verify(not_a_string, now=NOW)


def test_issue_token_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        issue_token("alice", "superuser", key=KEY)
    with pytest.raises(ValueError):
        issue_token("alice", SERVICE, key=KEY)  # service tokens only via issue_service_token
    with pytest.raises(ValueError):
        issue_token("service:lots", ADMIN, key=KEY)
    with pytest.raises(ValueError):
        issue_token("", "viewer", key=KEY)
    with pytest.raises(ValueError):
        issue_token("alice", "viewer", key=KEY, ttl_seconds=0)
    with pytest.raises(ValueError):
        issue_service_token("Lots Service", KEY)
    with pytest.raises(TypeError):
        issue_token("alice", "viewer", key=b"a-shared-secret-is-no-longer-a-signing-key")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TokenVerifier(KEY.public_key())  # type: ignore[arg-type]


def test_errors_map_to_grpc_codes() -> None:
    assert to_status(Unauthenticated("TOKEN_INVALID", "x")).code == grpc.StatusCode.UNAUTHENTICATED
    assert to_status(PermissionDenied("ROLE_FORBIDDEN", "x")).code == grpc.StatusCode.PERMISSION_DENIED
    assert to_status(TooManyAttempts.after(3.2)).code == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- verifier cache ----------------------------------------------------------------------


def test_verifier_caches_until_expiry() -> None:
    verifier = TokenVerifier(KEYS, cache_size=2)
    token = issue_token("alice", "viewer", key=KEY, ttl_seconds=60, now=NOW)
    first = verifier.verify(token, now=NOW)
    assert verifier.verify(token, now=NOW + 1) is first
    assert len(verifier) == 1
    with pytest.raises(Unauthenticated) as e:
        verifier.verify(token, now=NOW + 60 + auth.LEEWAY_SECONDS)
    assert reason_of(e) == "TOKEN_EXPIRED"
    assert len(verifier) == 0  # dropped on expiry


def test_verifier_rechecks_not_before_on_hits() -> None:
    verifier = TokenVerifier(KEYS)
    token = issue_token("alice", "viewer", key=KEY, now=NOW)
    verifier.verify(token, now=NOW)
    with pytest.raises(Unauthenticated) as e:
        verifier.verify(token, now=NOW - 100)
    assert reason_of(e) == "TOKEN_NOT_YET_VALID"


def test_verifier_is_bounded_and_caches_only_successes() -> None:
    verifier = TokenVerifier(KEYS, cache_size=3)
    tokens = [issue_token(f"u{i}", "viewer", key=KEY, now=NOW) for i in range(10)]
    for token in tokens:
        verifier.verify(token, now=NOW)
    assert len(verifier) == 3
    for bad in ("a.b.c", issue_token("eve", "admin", key=OTHER_KEY, now=NOW)):
        with pytest.raises(Unauthenticated):
            verifier.verify(bad, now=NOW)
    assert len(verifier) == 3
    # A token verified under one key is not accepted by a verifier of another.
    with pytest.raises(Unauthenticated):
        TokenVerifier(TrustedKeys(OTHER_KEY.public_key())).verify(tokens[-1], now=NOW)


def test_verifier_uses_its_clock() -> None:
    clock = [NOW]
    verifier = TokenVerifier(KEYS, clock=lambda: clock[0])
    token = issue_token("alice", "viewer", key=KEY, ttl_seconds=60, now=NOW)
    verifier.verify(token)
    clock[0] += 3600
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def test_service_token_source_caches_and_renews() -> None:
    clock = [NOW]
    source = ServiceTokenSource(
        "gateway", GATEWAY_KEY, ttl_seconds=300, renew_before=60, clock=lambda: clock[0]
    )
    first = source.token()
    clock[0] += 200
    assert source.token() == first
    clock[0] += 40  # 240 s: within renew_before of expiry
    second = source.token()
    assert second != first
    assert verify_token(second, keys=KEYS, now=clock[0] + 299).subject == "service:gateway"
    assert source.metadata() == (("authorization", f"Bearer {second}"),)
    assert bearer(source.metadata()) == second
    with pytest.raises(ValueError):
        ServiceTokenSource("gateway", GATEWAY_KEY, ttl_seconds=60, renew_before=60)


# --- bearer ------------------------------------------------------------------------------


def test_bearer() -> None:
    token = issue_token("alice", "viewer", key=KEY, now=NOW)
    assert bearer(f"Bearer {token}") == token
    assert bearer(f"bearer {token}") == token
    assert bearer(f"  BEARER   {token}  ") == token
    assert bearer(f"Bearer {token}".encode()) == token
    assert bearer({"authorization": f"Bearer {token}"}) == token
    assert bearer({"Authorization": f"Bearer {token}"}) == token
    assert bearer((("x-request-id", "r1"), ("authorization", f"Bearer {token}"))) == token
    for bad in (
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {token}",
        token,
        f"Bearer {token} extra",
        "Bearer a,b",
        "Bearer é",
        b"Bearer \xff",
        "Bearer " + "a" * 5000,
        {},
        {"x-request-id": "r1"},
        (),
        (("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")),  # ambiguous
    ):
        assert bearer(bad) is None, bad


# --- authorization -----------------------------------------------------------------------

ALLOWED_SETS = {
    "READ": READ,
    "OPERATE": OPERATE,
    "QUALITY": QUALITY,
    "ADMIN_ONLY": ADMIN_ONLY,
    "SERVICE_ONLY": SERVICE_ONLY,
    "READ_OR_SERVICE": READ_OR_SERVICE,
    "nothing": (),
}
EXPECTED = {
    # role: names of the sets that admit it
    "viewer": {"READ", "READ_OR_SERVICE"},
    "operator": {"READ", "OPERATE", "READ_OR_SERVICE"},
    "qc": {"READ", "QUALITY", "READ_OR_SERVICE"},
    "admin": set(ALLOWED_SETS),
    "service": {"SERVICE_ONLY", "READ_OR_SERVICE"},
}


def identity_of(role: str) -> Identity:
    return Identity(f"service:{role}" if role == SERVICE else role, role, role == SERVICE)


def test_roles_are_exactly_these() -> None:
    assert set(EXPECTED) == ROLES
    assert READ == ("viewer", "operator", "qc")


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("set_name", list(ALLOWED_SETS))
def test_require_matrix(role: str, set_name: str) -> None:
    identity = identity_of(role)
    allowed = ALLOWED_SETS[set_name]
    if set_name in EXPECTED[role]:
        assert require(identity, *allowed) is identity
    else:
        with pytest.raises(PermissionDenied) as e:
            require(identity, *allowed)
        assert reason_of(e) == "ROLE_FORBIDDEN"


@pytest.mark.parametrize("set_name", list(ALLOWED_SETS))
def test_require_without_identity_is_unauthenticated(set_name: str) -> None:
    with pytest.raises(Unauthenticated) as e:
        require(None, *ALLOWED_SETS[set_name])
    assert reason_of(e) == "TOKEN_MISSING"


POLICY: auth.Policy = {
    "/flowviz.lots.v1.LotsService/GetLot": READ,
    "/flowviz.lots.v1.LotsService/CreateLot": OPERATE,
    "/flowviz.qc.v1.QcService/RecordDecision": QUALITY,
    "/flowviz.lots.v1.LotsService/CreateUser": ADMIN_ONLY,
    "/flowviz.lots.v1.LotsService/Authenticate": SERVICE_ONLY,
}


def test_check_applies_the_policy() -> None:
    assert check(POLICY, "/flowviz.lots.v1.LotsService/GetLot", identity_of("viewer")).role == "viewer"
    assert check(POLICY, "/flowviz.lots.v1.LotsService/CreateLot", identity_of("operator"))
    with pytest.raises(PermissionDenied):
        check(POLICY, "/flowviz.lots.v1.LotsService/CreateLot", identity_of("viewer"))
    with pytest.raises(PermissionDenied):
        check(POLICY, "/flowviz.lots.v1.LotsService/Authenticate", identity_of("operator"))
    assert check(POLICY, "/flowviz.lots.v1.LotsService/Authenticate", identity_of("service"))
    with pytest.raises(PermissionDenied):
        check(POLICY, "/flowviz.lots.v1.LotsService/GetLot", identity_of("service"))
    with pytest.raises(Unauthenticated):
        check(POLICY, "/flowviz.lots.v1.LotsService/GetLot", None)


@pytest.mark.parametrize("role", sorted(ROLES))
def test_check_fails_closed(role: str) -> None:
    for method in (
        "/flowviz.lots.v1.LotsService/DeleteEverything",
        "/flowviz.lots.v1.LotsService/getlot",  # exact names only
        "flowviz.lots.v1.LotsService/GetLot",
        "",
    ):
        with pytest.raises(PermissionDenied) as e:
            check(POLICY, method, identity_of(role))  # admin too
        assert reason_of(e) == "METHOD_NOT_IN_POLICY"
    with pytest.raises(PermissionDenied):
        check({}, "/flowviz.lots.v1.LotsService/GetLot", identity_of(role))


def test_validate_policy() -> None:
    validate_policy(POLICY)
    validate_policy(POLICY, POLICY.keys())
    with pytest.raises(ValueError, match="served but not in the policy"):
        validate_policy(POLICY, [*POLICY, "/flowviz.lots.v1.LotsService/NewRpc"])
    with pytest.raises(ValueError, match="not served"):
        validate_policy(POLICY, list(POLICY)[1:])
    with pytest.raises(ValueError, match="unknown role"):
        validate_policy({"/flowviz.lots.v1.LotsService/GetLot": ("viewer", "operater")})
    with pytest.raises(ValueError, match="non-empty"):
        validate_policy({"/flowviz.lots.v1.LotsService/GetLot": ()})
    with pytest.raises(ValueError, match="malformed"):
        validate_policy({"GetLot": READ})


def test_token_to_policy_end_to_end() -> None:
    verifier = TokenVerifier(KEYS)
    token = issue_token("olga", "operator", key=KEY, now=NOW)
    metadata = (("authorization", f"Bearer {token}"),)
    identity = verifier.verify(bearer(metadata) or "", now=NOW)
    assert check(POLICY, "/flowviz.lots.v1.LotsService/CreateLot", identity).subject == "olga"
    with pytest.raises(PermissionDenied):
        check(POLICY, "/flowviz.lots.v1.LotsService/CreateUser", identity)
