"""Sign-out and bounded sessions (issue 15 item 4), and who holds which key (issue 19), on the
running system: `POST /api/auth/logout` ends the caller's tokens in every service on the next
request (the token generation of flowviz/core/revocation.py); `POST /api/auth/refresh` gives a
new token without the password only within FLOWVIZ_SESSION_MAX_HOURS of the password sign-in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import jwt
import psycopg
import pytest

from flowviz.core import auth, keys
from flowviz.core.errors import from_rpc_error
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from tests.conftest import SERVICE_KEYS, TOKEN_KEY, System, current_token
from tests.test_revocation import ROUTES, refused_everywhere, sign_in

PASSWORD = "a session passphrase"
HOUR = 3600


@pytest.fixture
def user(http: httpx.Client) -> Iterator[str]:
    name = f"ss{uuid.uuid4().hex[:8]}"
    r = http.post("/api/users", json={"username": name, "role": "operator", "password": PASSWORD})
    assert r.status_code == 201, r.text
    yield name


def test_logout_ends_the_callers_tokens_in_every_service(
    system: System, http: httpx.Client, user: str
) -> None:
    with sign_in(system, user, PASSWORD) as here, sign_in(system, user, PASSWORD) as elsewhere:
        for route in ROUTES:
            assert here.get(route).status_code == 200 and elsewhere.get(route).status_code == 200
        r = here.post("/api/auth/logout")
        assert r.status_code == 200 and r.json() == {"signed_out": True}, r.text
        # Both sessions of the user, in the gateway and every service behind it.
        refused_everywhere(here)
        refused_everywhere(elsewhere)
        assert here.post("/api/auth/refresh").status_code == 401  # nor can it buy a new token
        token = here.headers["authorization"]
        with grpc.insecure_channel(system.addr("lots")) as ch, pytest.raises(grpc.RpcError) as e:
            lots_pb2_grpc.LotsServiceStub(ch).GetLot(
                lots_pb2.GetLotRequest(lot_code="RAW-BEEF-001"),
                metadata=[("authorization", token)],
                timeout=5,
            )
        assert from_rpc_error(e.value).reason == "TOKEN_REVOKED"
    assert http.get(ROUTES[0]).status_code == 200  # the admin's token is untouched
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:  # an audit row, by the user themselves
        rows = conn.execute(
            "SELECT actor FROM audit_log WHERE action = 'logout' AND entity = 'user' AND entity_key = %s",
            (user,),
        ).fetchall()
    assert rows == [(user,)]
    with sign_in(system, user, PASSWORD) as again:  # signing in again works
        assert again.get(ROUTES[0]).status_code == 200


def test_logout_needs_a_user_token(system: System, anonymous: httpx.Client) -> None:
    assert anonymous.post("/api/auth/logout").status_code == 401
    with grpc.insecure_channel(system.addr("lots")) as ch, pytest.raises(grpc.RpcError) as e:
        service = auth.issue_service_token("genealogy", SERVICE_KEYS["genealogy"])
        lots_pb2_grpc.LotsServiceStub(ch).Logout(
            lots_pb2.LogoutRequest(), metadata=[("authorization", f"Bearer {service}")], timeout=5
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED  # a service has no session to end


def test_refresh_keeps_the_session_start_and_its_bound(system: System, user: str) -> None:
    with sign_in(system, user, PASSWORD) as client:
        first = client.headers["authorization"].removeprefix("Bearer ")
        r = client.post("/api/auth/refresh")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["role"] == "operator"
        assert 0 < body["session_expires_in"] <= 12 * HOUR
        old, new = (jwt.decode(t, options={"verify_signature": False}) for t in (first, body["access_token"]))
        assert new["sst"] == old["sst"] and new["jti"] != old["jti"]
        refreshed = {"authorization": f"Bearer {body['access_token']}"}
        assert client.get(ROUTES[0], headers=refreshed).status_code == 200


def test_no_refresh_past_the_session_bound(system: System, anonymous: httpx.Client) -> None:
    now = int(time.time())
    generation = jwt.decode(current_token(system, "omar"), options={"verify_signature": False})["gen"]

    def at(session_start: int) -> dict[str, str]:
        token = auth.issue_token(
            "omar",
            "operator",
            key=TOKEN_KEY,
            ttl_seconds=900,
            generation=generation,
            session_start=session_start,
        )
        return {"authorization": f"Bearer {token}"}

    # A session that began 13 hours ago (FLOWVIZ_SESSION_MAX_HOURS is 12): its token still
    # works until it expires, but it is not renewed without the password.
    old = at(now - 13 * HOUR)
    assert anonymous.get(ROUTES[0], headers=old).status_code == 200
    r = anonymous.post("/api/auth/refresh", headers=old)
    assert r.status_code == 401 and r.json()["error"]["reason"] == "SESSION_EXPIRED", r.text
    # Ten minutes before the bound: renewed, but the new token ends with the session.
    near = anonymous.post("/api/auth/refresh", headers=at(now - 12 * HOUR + 600))
    assert near.status_code == 200, near.text
    claims = jwt.decode(near.json()["access_token"], options={"verify_signature": False})
    assert claims["exp"] <= now - 12 * HOUR + 600 + 12 * HOUR + 5 and near.json()["expires_in"] <= 600
    assert near.json()["session_expires_in"] <= 600


def test_the_session_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowviz.core.config import ConfigError, settings
    from tests.conftest import PUBLIC_KEY_ENV

    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    try:
        monkeypatch.delenv("FLOWVIZ_SESSION_MAX_HOURS", raising=False)
        assert settings().session_max_hours == 12
        monkeypatch.setenv("FLOWVIZ_SESSION_MAX_HOURS", "2")
        settings.cache_clear()
        assert settings().session_max_hours == 2
        monkeypatch.setenv("FLOWVIZ_SESSION_MAX_HOURS", "0")
        settings.cache_clear()
        with pytest.raises(ConfigError, match="FLOWVIZ_SESSION_MAX_HOURS"):
            settings()
    finally:
        settings.cache_clear()


# --- issue 19: the user-token key only in lots; service identities by their own keys ---------------


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_only_the_lots_process_holds_the_token_private_key(system: System) -> None:
    own: dict[str, str] = {}
    for name, proc in system.procs.items():
        env = _environ(proc.pid)
        assert (keys.TOKEN_PRIVATE_ENV in env) == (name == "lots"), name
        assert keys.TOKEN_PUBLIC_ENV in env and "FLOWVIZ_TOKEN_SECRET" not in env, name
        own[name] = env[keys.SERVICE_KEY_ENV]
    assert len(set(own.values())) == len(own) == len(keys.SERVICE_NAMES)  # every process its own service key


def test_a_service_identity_needs_that_services_own_key(system: System) -> None:
    """QcStatusChanged is open to services (and admin): genealogy believes `service:qc` only when
    qc's key signed it; the user-token key, or another service's key, cannot make one."""
    request = genealogy_pb2.QcStatusChangedRequest(lot_code="RAW-BEEF-001")
    forged = {
        "the user-token key": auth.issue_service_token("qc", TOKEN_KEY),
        "the gateway's key": auth.issue_service_token("qc", SERVICE_KEYS["gateway"]),
        "a key nobody knows": auth.issue_service_token("qc", keys.generate()),
    }
    with grpc.insecure_channel(system.addr("genealogy")) as ch:
        stub = genealogy_pb2_grpc.GenealogyServiceStub(ch)
        real = auth.issue_service_token("qc", SERVICE_KEYS["qc"])
        stub.QcStatusChanged(request, metadata=[("authorization", f"Bearer {real}")], timeout=5)
        for case, token in forged.items():
            with pytest.raises(grpc.RpcError) as e:
                stub.QcStatusChanged(request, metadata=[("authorization", f"Bearer {token}")], timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
