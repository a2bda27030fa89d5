"""Who is calling: set per call by the server's auth check, read by servicers."""

from __future__ import annotations

import contextvars

# Username of the authenticated caller of the current RPC; "system" for internal work.
caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="system")


def caller_name() -> str:
    return caller.get()
