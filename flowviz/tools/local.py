"""Where the command-line tools find the database and the cache, and how they say what is wrong.

DATABASE_URL / VALKEY_URL when set; else the servers of the `make run` of this checkout, found in
its data folder (FLOWVIZ_DATA_DIR, default .data/), where `make run` records what it serves
(STATE_FILE). A problem the user can fix is a UserError: the `flowviz` command prints it on one
line, without a traceback. (No import of flowviz.tools.embedded: deployments do not install it.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg

from flowviz.core.config import tool_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_DATABASE = "flowviz"  # flowviz.tools.embedded.DATABASE
STATE_FILE = "running.json"


class UserError(Exception):
    """Something the user can fix (a setting, a name, a file): the message says what to do."""


def data_dir() -> Path:
    return Path(tool_settings().data_dir or PROJECT_ROOT / ".data")


def embedded_database_url() -> str:
    port = tool_settings().pg_port
    # The password is in a file of make run's (mode 0600): named here, never printed.
    return f"postgresql://postgres:$(cat {data_dir()}/postgres-password)@127.0.0.1:{port}/{EMBEDDED_DATABASE}"


def write_state(folder: Path, **urls: str) -> None:
    """Record this process as the running system of `folder`, serving `urls` (database_url, valkey_url)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / STATE_FILE
    path.touch(mode=0o600)  # the URLs may hold passwords: readable by their owner only
    path.write_text(json.dumps({"pid": os.getpid(), **urls}))


def clear_state(folder: Path) -> None:
    (folder / STATE_FILE).unlink(missing_ok=True)


def running_state(folder: Path | None = None) -> dict[str, str]:
    """The URLs the `make run` of `folder` (default: data_dir()) serves while it runs; else {}."""
    try:
        state = json.loads(((folder or data_dir()) / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except PermissionError:  # alive, another user's process
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in state.items() if k != "pid" and isinstance(v, str)}


def database_url(given: str | None = None, *, admin: bool = False) -> str:
    """`given`, else DATABASE_URL, else the running `make run`'s embedded database: as its owner
    role, or (`admin`: a restore, which may replace what only a superuser may, such as an
    extension a superuser installed) as its superuser."""
    state = running_state()
    url = (
        given
        or tool_settings().database_url
        or (admin and state.get("admin_database_url"))
        or state.get("database_url")
    )
    if not url:
        raise UserError(
            "DATABASE_URL is not set and no `make run` of this checkout is running. Start `make run` "
            f"(its embedded database is {embedded_database_url()}), or set "
            "DATABASE_URL=postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    if not url.startswith(("postgresql://", "postgres://")):
        raise UserError(f"DATABASE_URL must start with postgresql://, not {redact(url)[:40]!r}")
    return url


def valkey_url() -> str | None:
    """VALKEY_URL, else the running `make run`'s Valkey; None when neither (no cache to clear)."""
    return tool_settings().valkey_url or running_state().get("valkey_url")


def redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


# What the drivers raise for a wrong URL, an unreachable server, a wrong password, a missing database.
_UNREACHABLE = (OSError, ValueError, psycopg.OperationalError, psycopg.ProgrammingError, asyncpg.PostgresError,
                asyncpg.InterfaceError)  # fmt: skip


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """Around connecting to `url`: a driver's connection error (also as SQLAlchemy's `orig`, as
    alembic raises it) becomes a UserError naming the URL and what to set."""
    try:
        yield
    except Exception as exc:
        cause = getattr(exc, "orig", None) or exc
        if not isinstance(cause, _UNREACHABLE):
            raise
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise UserError(
            f"cannot use the database at {redact(url)}: {reason}. Check DATABASE_URL, or start `make run` "
            f"(its embedded database is {embedded_database_url()})"
        ) from None
