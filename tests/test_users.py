"""Users over HTTP: at least one active administrator always remains, and changing your own
password needs the current one. On a system of its own: these tests disable and demote admins."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import Servers, System, add_users, current_token, running_system

PASSWORD = "second-admin-pass-2026"


@pytest.fixture(scope="module")
def users_system(servers: Servers) -> Iterator[System]:
    with servers.admin() as conn:
        conn.execute('CREATE DATABASE "users_t" TEMPLATE flowviz_template')
    url = servers.url("users_t")
    add_users(url)  # ada is the only active admin
    with running_system(servers, url, suffix="-users") as sys_:
        sys_.env["TEST_DATABASE_URL"] = url
        yield sys_


def _as(system: System, name: str) -> httpx.Client:
    """Signed in as `name` now (disabling, demoting or a new password ends earlier tokens)."""
    headers = {"authorization": f"Bearer {current_token(system, name, 'admin')}"}
    return httpx.Client(base_url=system.base, timeout=10, headers=headers)


def _patch(client: httpx.Client, name: str, **body: object) -> httpx.Response:
    return client.patch(f"/api/users/{name}", json=body)


def _active_admins(system: System) -> list[str]:
    with psycopg.connect(system.env["TEST_DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT username FROM users WHERE role = 'admin' AND NOT disabled ORDER BY 1")
        return [r[0] for r in rows]


@pytest.fixture
def two_admins(users_system: System) -> Iterator[None]:
    """ada and bea, both active admins; afterwards ada alone again."""
    with _as(users_system, "ada") as ada:
        r = ada.post("/api/users", json={"username": "bea", "role": "admin", "password": PASSWORD})
        assert r.status_code in (201, 409), r.text
        for name in ("ada", "bea"):
            assert _patch(ada, name, disabled=False, role="admin").status_code == 200
    yield
    with _as(users_system, "ada") as ada:  # the test may have ended ada's earlier tokens
        assert _patch(ada, "ada", disabled=False).status_code == 200
        assert _patch(ada, "bea", role="viewer").status_code == 200
    assert _active_admins(users_system) == ["ada"]


@pytest.mark.parametrize("change", [{"disabled": True}, {"role": "viewer"}, {"role": "qc", "disabled": True}])
def test_the_last_admin_cannot_disable_or_demote_themself(
    users_system: System, change: dict[str, object]
) -> None:
    with _as(users_system, "ada") as ada:
        r = _patch(ada, "ada", **change)
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["reason"] == "LAST_ADMIN"
        assert "last active administrator" in error["message"] and "ada" in error["message"]
        assert error["details"]["field"] in change
        ada_now = next(u for u in ada.get("/api/users").json()["users"] if u["username"] == "ada")
        assert (ada_now["role"], ada_now["disabled"]) == ("admin", False)
    assert _active_admins(users_system) == ["ada"]


def test_an_admin_may_go_while_another_remains(users_system: System, two_admins: None) -> None:
    ada_before = _as(users_system, "ada")
    with _as(users_system, "bea") as bea:
        assert _patch(bea, "ada", disabled=True).status_code == 200
        assert _active_admins(users_system) == ["bea"]
        r = _patch(bea, "bea", role="operator")  # now the last one
        assert r.status_code == 409 and r.json()["error"]["reason"] == "LAST_ADMIN", r.text
    with ada_before:  # disabled: her token is refused from then on (tests/test_revocation.py)
        r = _patch(ada_before, "bea", disabled=True)
        assert r.status_code == 401 and r.json()["error"]["reason"] == "TOKEN_REVOKED", r.text
    with _as(users_system, "ada") as ada:  # a token forged for her anyway: the database's rule holds
        r = _patch(ada, "bea", disabled=True)
        assert r.status_code == 409 and r.json()["error"]["reason"] == "LAST_ADMIN", r.text
    assert _active_admins(users_system) == ["bea"]


def test_deleting_the_last_admin_is_refused_by_the_database(users_system: System, two_admins: None) -> None:
    """No route deletes users; the database refuses it too, whoever asks (SQL by hand here)."""
    with _as(users_system, "ada") as ada:
        assert ada.delete("/api/users/bea").status_code == 405
        assert _patch(ada, "bea", disabled=True).status_code == 200
    with psycopg.connect(users_system.env["TEST_DATABASE_URL"]) as conn:
        with pytest.raises(psycopg.Error, match="last active administrator") as e:
            conn.execute("DELETE FROM users WHERE username = 'ada'")
        assert e.value.sqlstate == "FV001"
        conn.rollback()
        conn.execute("UPDATE users SET disabled = false WHERE username = 'bea'")
        conn.execute("DELETE FROM users WHERE username = 'bea'")  # two admins: one may go
        conn.rollback()
    with _as(users_system, "ada") as ada:
        assert _patch(ada, "bea", disabled=False).status_code == 200


def test_two_concurrent_removals_of_the_last_two_admins_cannot_both_succeed(
    users_system: System, two_admins: None
) -> None:
    """ada disables bea while bea disables ada, at the same instant, many times over: exactly
    one of each pair succeeds (each alone would); the other is refused by the rule (409) or,
    when the winner's disable came first, as a caller whose tokens it ended (401)."""

    async def race(rounds: int) -> list[tuple[int, int]]:
        def signed_in(name: str) -> dict[str, str]:  # now: the loser of a round has its tokens ended
            return {"authorization": f"Bearer {current_token(users_system, name, 'admin')}"}

        async with (
            httpx.AsyncClient(base_url=users_system.base) as ada,
            httpx.AsyncClient(base_url=users_system.base) as bea,
        ):
            names = {id(ada): "ada", id(bea): "bea"}
            results = []
            for _ in range(rounds):
                start = asyncio.Event()

                async def go(client: httpx.AsyncClient, target: str, start: asyncio.Event) -> int:
                    headers = signed_in(names[id(client)])
                    await start.wait()
                    r = await client.patch(f"/api/users/{target}", json={"disabled": True}, headers=headers)
                    # 401 TOKEN_REVOKED: the other's disable had already ended this caller's tokens.
                    assert r.status_code in (200, 409, 401), r.text
                    return r.status_code

                tasks = [
                    asyncio.create_task(go(ada, "bea", start)),
                    asyncio.create_task(go(bea, "ada", start)),
                ]
                await asyncio.sleep(0)  # both tasks wait on the event
                start.set()
                results.append(tuple(await asyncio.gather(*tasks)))
                survivor = ada if results[-1][0] == 200 else bea  # the one still active re-enables
                for name in ("ada", "bea"):
                    r = await survivor.patch(
                        f"/api/users/{name}", json={"disabled": False}, headers=signed_in(names[id(survivor)])
                    )
                    assert r.status_code == 200, r.text
            return results  # type: ignore[return-value]

    results = asyncio.run(race(20))
    assert all(sorted(pair) in ([200, 409], [200, 401]) for pair in results), results
    assert sorted(_active_admins(users_system)) == ["ada", "bea"]


def test_changing_your_own_password_needs_the_current_one(users_system: System) -> None:
    with _as(users_system, "ada") as ada:
        r = _patch(ada, "ada", password="a-new-strong-pass-1")
        assert r.status_code == 400 and r.json()["error"]["reason"] == "CURRENT_PASSWORD_REQUIRED", r.text
        assert r.json()["error"]["details"]["field"] == "current_password"
        r = _patch(ada, "ada", password="a-new-strong-pass-1", current_password="not-my-password")
        assert r.status_code == 400 and r.json()["error"]["reason"] == "CURRENT_PASSWORD_WRONG", r.text
        r = _patch(ada, "ada", password="a-new-strong-pass-1", current_password="admin-pass-2026")
        assert r.status_code == 200, r.text
        login = ada.post("/api/auth/token", json={"username": "ada", "password": "a-new-strong-pass-1"})
        assert login.status_code == 200
        # A new password ends the tokens from before it: the one from the sign-in goes on.
        assert ada.get("/api/users").json()["error"]["reason"] == "TOKEN_REVOKED"
        ada.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        # Back again, the same way; an admin setting someone else's password needs no current one.
        r = _patch(ada, "ada", password="admin-pass-2026", current_password="a-new-strong-pass-1")
        assert r.status_code == 200, r.text
        login = ada.post("/api/auth/token", json={"username": "ada", "password": "admin-pass-2026"})
        ada.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        assert _patch(ada, "ana", password="viewer-pass-2026-b").status_code == 200
        assert _patch(ada, "ana", password="viewer-pass-2026").status_code == 200
