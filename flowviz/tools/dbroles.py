"""The PostgreSQL roles the system connects as: their passwords, LOGIN, and each service's URL.

Migration 0011 creates a NOLOGIN role per service (config.DATABASE_ROLES) with only the grants
its tables need; whoever runs the system gives them passwords. `make run` and the tests
(flowviz.tools.embedded) generate one per role into a mode-0600 file beside the data folder. A
deployment's migrate job runs `python -m flowviz.tools.dbroles` after the migrations, as the owner:
it reads each service's DATABASE_URL from FLOWVIZ_<SERVICE>_DATABASE_URL (the one Secret that
service's pods get as DATABASE_URL) and gives the role in it that URL's password. A service whose
URL the job is not given keeps a role that cannot log in.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from flowviz.core.config import (
    DATABASE_ROLES,
    ConfigError,
    environ,
    refuse_placeholder,
    service_database_urls,
)


def role_url(url: str, role: str, password: str) -> str:
    """`url` (any role's) as `role` with `password`: same server and database."""
    parts = urlsplit(url)
    where = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{where}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_passwords(path: Path, roles: Iterable[str]) -> dict[str, str]:
    """The passwords in `path` (JSON, mode 0600), with one generated for each role it lacks."""
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [r for r in roles if r not in known]
    if missing:
        known |= {r: secrets.token_urlsafe(32) for r in missing}
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            json.dump(known, out)
        tmp.replace(path)
    return known


def set_passwords(admin_url: str, passwords: Mapping[str, str]) -> None:
    """Give each role its password and LOGIN (as a superuser, or the role that created them)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role, password in passwords.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """{role: password} from the services' URLs the migrate job is given; refuses a URL naming a
    role other than its service's (it would let one service write another's tables)."""
    found = {}
    for service, url in service_database_urls(environ).items():
        parts = urlsplit(url)
        role = DATABASE_ROLES[service]
        if unquote(parts.username or "") != role:
            raise ConfigError(
                f"the {service} service's DATABASE_URL must connect as {role}, not {parts.username!r}"
            )
        if not parts.password:
            raise ConfigError(f"the {service} service's DATABASE_URL has no password")
        password = unquote(parts.password)
        hint = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        refuse_placeholder(f"the password of {role}", password, environ, hint)
        found[role] = password
    return found


def main() -> None:
    from flowviz.tools import local

    try:
        passwords = from_environment(environ())
        url = local.database_url()
        with local.reaching(url):
            set_passwords(url, passwords)
    except (ConfigError, local.UserError) as exc:
        sys.exit(f"flowviz.tools.dbroles: {exc}")
    for service, role in DATABASE_ROLES.items():
        state = (
            "password set, may log in"
            if role in passwords
            else "no URL given: left as it was (NOLOGIN unless set before)"
        )
        print(f"flowviz.tools.dbroles: {role} ({service}): {state}", flush=True)


if __name__ == "__main__":
    main()
