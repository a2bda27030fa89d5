"""Command-line account set-up: the first admin (make run) and `flowviz user add`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import orjson
import psycopg

from flowviz.core import passwords
from services.lots.users import role as valid_role
from services.lots.users import username as valid_username

INSERT = """
INSERT INTO users (username, display_name, role, password_hash) VALUES (%s, %s, %s, %s)
ON CONFLICT (username) DO NOTHING RETURNING id
"""
AUDIT = """
INSERT INTO audit_log (actor, action, entity, entity_key, details) VALUES ('cli', 'create', 'user', %s, %s::jsonb)
"""


def add_user(database_url: str, username: str, role: str, password: str, display_name: str = "") -> bool:
    """Create a user; False when the username is taken (nothing changes then)."""
    valid_username(username)
    valid_role(role)
    password_hash = passwords.hash_password(password, username=username)
    with psycopg.connect(database_url) as conn:
        created = conn.execute(INSERT, (username, display_name or username, role, password_hash)).fetchone()
        if created:
            conn.execute(AUDIT, (username, orjson.dumps({"role": role}).decode()))
    return created is not None


def ensure_admin(database_url: str) -> None:
    """Create the first admin from FLOWVIZ_ADMIN_USER / FLOWVIZ_ADMIN_PASSWORD, or with a generated
    password (printed once) when they are unset and no usable admin exists yet."""
    user = os.environ.get("FLOWVIZ_ADMIN_USER", "")
    password = os.environ.get("FLOWVIZ_ADMIN_PASSWORD", "")
    if user and password:
        if add_user(database_url, user, "admin", password):
            print(f"created admin user {user!r} from FLOWVIZ_ADMIN_USER", flush=True)
        return
    with psycopg.connect(database_url) as conn:
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


def token_secret(data_dir: Path) -> str:
    """FLOWVIZ_TOKEN_SECRET, or a random one kept in the data folder across runs."""
    if secret := os.environ.get("FLOWVIZ_TOKEN_SECRET"):
        return secret
    path = data_dir / "token-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def main() -> None:
    """`python -m flowviz.accounts`: the first admin, for deployments (the migrate job runs it)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("DATABASE_URL is not set")
    ensure_admin(url)


if __name__ == "__main__":
    main()
