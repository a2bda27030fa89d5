"""Who is calling: the identity the server's auth check set for the current RPC."""

from __future__ import annotations

from flowviz.core.auth import current_identity

SYSTEM = "system"


def caller_name() -> str:
    """Username of the authenticated caller; "system" for work no user asked for."""
    identity = current_identity.get()
    return identity.subject if identity is not None and not identity.is_service else SYSTEM
