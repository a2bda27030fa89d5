"""Signed QC records: a release or reject (a hold too, if FLOWVIZ_SIGN_HOLDS) needs the signer's
own password in the same request; the decision records the signer's name, the time and the
meaning, shown in the decision history; the password is never stored; wrong ones are throttled."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import Servers, System, add_users, bearer, running_system, token
from tests.test_production import lot


def new_lot(http: httpx.Client) -> str:
    code = f"RAW-SIG-{uuid.uuid4().hex[:6].upper()}"
    lot(http, code, "RAW", 5)
    return code


def post(http: httpx.Client, code: str, body: dict[str, object]) -> httpx.Response:
    return http.post(f"/api/lots/{code}/qc-decisions", json=body)


@pytest.fixture
def quinn(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.base, timeout=10, headers=bearer("quinn")) as client:
        yield client


def test_a_release_needs_the_signers_own_password(http: httpx.Client, quinn: httpx.Client) -> None:
    code = new_lot(http)
    hold = post(quinn, code, {"decision": "hold", "reason": "swab positive"})
    assert hold.status_code == 201, hold.text
    assert "signature" not in hold.json()["decision"] or hold.json()["decision"]["signature"] is None
    missing = post(quinn, code, {"decision": "release", "reason": "retest negative"})
    assert missing.status_code == 400, missing.text
    assert missing.json()["error"]["reason"] == "SIGNATURE_REQUIRED"
    assert missing.json()["error"]["details"]["field"] == "password"
    # Another user's password is no signature of quinn's.
    wrong = post(
        quinn, code, {"decision": "release", "reason": "retest negative", "password": "admin-pass-2026"}
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["reason"] == "SIGNATURE_INVALID", wrong.text
    signed = post(
        quinn, code, {"decision": "release", "reason": "retest negative", "password": "qc-pass-2026"}
    )
    assert signed.status_code == 201, signed.text
    signature = signed.json()["decision"]["signature"]
    assert signature["signer"] == "quinn" and signature["signer_name"] == "Quinn"
    assert signature["meaning"] == "released for use" and signature["signed_at"]
    # The history shows it; the status moved only once.
    history = quinn.get(f"/api/lots/{code}/qc-decisions").json()["decisions"]
    assert [d["decision"] for d in history] == ["hold", "release"]
    assert history[1]["signature"] == signature
    assert quinn.get(f"/api/lots/{code}/qc-status").json()["status"] == "released"


def test_a_reject_is_signed_and_audited_without_the_password(
    system: System, servers: Servers, http: httpx.Client, quinn: httpx.Client
) -> None:
    code = new_lot(http)
    r = post(quinn, code, {"decision": "reject", "reason": "foreign body", "password": "qc-pass-2026"})
    assert r.status_code == 201, r.text
    decision = r.json()["decision"]
    assert decision["signature"]["meaning"] == "rejected"
    with psycopg.connect(servers.pg.url) as db:
        row = db.execute(
            "SELECT actor, details FROM audit_log WHERE entity = 'qc_decision' AND entity_key = %s",
            (str(decision["id"]),),
        ).fetchone()
        stored = db.execute(
            "SELECT count(*) FROM audit_log WHERE details::text LIKE '%qc-pass-2026%' OR reason LIKE '%qc-pass-2026%'"
        ).fetchone()
    assert row is not None and row[0] == "quinn"
    assert row[1]["signed"] == "rejected" and row[1]["lot_code"] == code
    assert stored == (0,)
    assert "qc-pass-2026" not in system.log("gateway") + system.log("qc")


def test_wrong_signature_passwords_are_throttled(system: System, http: httpx.Client) -> None:
    name = f"sig{uuid.uuid4().hex[:6]}"
    created = http.post(
        "/api/users",
        json={"username": name, "role": "qc", "password": "a signer's passphrase", "display_name": "Sig Ner"},
    )
    assert created.status_code == 201, created.text
    code = new_lot(http)
    with httpx.Client(
        base_url=system.base, timeout=10, headers={"authorization": f"Bearer {token(name, 'qc')}"}
    ) as c:
        assert post(c, code, {"decision": "hold", "reason": "check"}).status_code == 201
        statuses = [
            post(c, code, {"decision": "release", "reason": "x", "password": f"guess {i}"}).status_code
            for i in range(8)
        ]
        assert statuses[0] == 400 and 429 in statuses, statuses
        # Throttled, even the right password waits: no guessing around the limit.
        r = post(c, code, {"decision": "release", "reason": "x", "password": "a signer's passphrase"})
        assert r.status_code == 429 and "retry-after" in r.headers


def test_holds_are_signed_when_configured(servers: Servers, seeded_db_url: str) -> None:
    add_users(seeded_db_url)
    with (
        running_system(servers, seeded_db_url, suffix="-signholds", env={"FLOWVIZ_SIGN_HOLDS": "1"}) as sys_,
        httpx.Client(base_url=sys_.base, timeout=10, headers=bearer("quinn")) as c,
        httpx.Client(base_url=sys_.base, timeout=10, headers=bearer("ada")) as admin,
    ):
        code = new_lot(admin)
        r = post(c, code, {"decision": "hold", "reason": "check"})
        assert r.status_code == 400 and r.json()["error"]["reason"] == "SIGNATURE_REQUIRED", r.text
        r = post(c, code, {"decision": "hold", "reason": "check", "password": "qc-pass-2026"})
        assert r.status_code == 201, r.text
        assert r.json()["decision"]["signature"]["meaning"] == "placed on hold"
        # A pass is never signed.
        other = new_lot(admin)
        r = post(c, other, {"decision": "pass"})
        assert r.status_code == 201 and not r.json()["decision"].get("signature"), r.text
