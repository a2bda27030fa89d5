"""Command-line account set-up: the first admin (make run), `flowviz user add` and
`flowviz user reset-password` (the way back in when the admin password is lost)."""

from __future__ import annotations

import secrets
from pathlib import Path

import orjson
import psycopg

from flowviz.core import passwords, validation
from flowviz.core.config import tool_settings
from flowviz.tools import local

INSERT = """
INSERT INTO users (username, display_name, role, password_hash) VALUES (%s, %s, %s, %s)
ON CONFLICT (username) DO NOTHING RETURNING id
"""
AUDIT = """
INSERT INTO audit_log (actor, action, entity, entity_key, details) VALUES ('cli', 'create', 'user', %s, %s::jsonb)
"""
RESET = """
WITH u AS (
    UPDATE users SET password_hash = %s WHERE username = %s AND password_hash <> '!'
    RETURNING username, role, disabled
)
INSERT INTO audit_log (actor, action, entity, entity_key, reason, details)
SELECT 'cli', 'reset_password', 'user', username, 'flowviz user reset-password',
       jsonb_build_object('role', role, 'disabled', disabled)
FROM u RETURNING (details ->> 'disabled')::boolean
"""


def _connect(database_url: str) -> psycopg.Connection:
    with local.reaching(database_url):
        return psycopg.connect(database_url)


def add_user(database_url: str, username: str, role: str, password: str, display_name: str = "") -> bool:
    """Create a user; False when the username is taken (nothing changes then)."""
    validation.username(username)
    validation.role(role)
    password_hash = passwords.hash_password(password, username=username)
    with _connect(database_url) as conn:
        created = conn.execute(INSERT, (username, display_name or username, role, password_hash)).fetchone()
        if created:
            conn.execute(AUDIT, (username, orjson.dumps({"role": role}).decode()))
    return created is not None


def reset_password(database_url: str, username: str, password: str) -> bool | None:
    """Set a user's password (audited). None when there is no such user (the seed's `system`
    user cannot sign in and is not one); else whether the user is disabled."""
    validation.username(username)
    password_hash = passwords.hash_password(password, username=username)
    with _connect(database_url) as conn:
        row = conn.execute(RESET, (password_hash, username)).fetchone()
    return None if row is None else bool(row[0])


def ensure_admin(database_url: str) -> None:
    """Create the first admin from FLOWVIZ_ADMIN_USER / FLOWVIZ_ADMIN_PASSWORD, or with a generated
    password (printed once) when they are unset and no usable admin exists yet."""
    given = tool_settings()
    user, password = given.admin_user, given.admin_password
    if user and password:
        if add_user(database_url, user, "admin", password):
            print(f"created admin user {user!r} from FLOWVIZ_ADMIN_USER", flush=True)
        return
    with _connect(database_url) as conn:
        exists = conn.execute("SELECT 1 FROM users WHERE role = 'admin' AND NOT disabled").fetchone()
    if exists:
        return
    user = user or "admin"
    password = secrets.token_urlsafe(18)
    add_user(database_url, user, "admin", password)
    print(
        f"\n  created the first admin: username {user!r}, password {password!r}\n"
        "  (shown once; set FLOWVIZ_ADMIN_USER / FLOWVIZ_ADMIN_PASSWORD to choose them)\n",
        flush=True,
    )


def cache_secret(data_dir: Path) -> str:
    """FLOWVIZ_CACHE_SECRET, or a random one kept in the data folder across runs."""
    if secret := tool_settings().cache_secret:
        return secret
    path = data_dir / "cache-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def main() -> None:
    """`python -m flowviz.tools.accounts`: the first admin, for deployments (the migrate job runs it)."""
    from flowviz.core.errors import DomainError

    try:
        ensure_admin(local.database_url())
    except (local.UserError, DomainError) as exc:  # a wrong setting; a first password the rules refuse
        raise SystemExit(f"flowviz.tools.accounts: {exc}") from None


if __name__ == "__main__":
    main()
