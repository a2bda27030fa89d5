"""Opaque page tokens (AIP-158) over keyset pagination by id."""

from __future__ import annotations

import base64

from flowviz.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("PAGE_SIZE_INVALID", "page_size must not be negative", field="page_size")
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument(
            "PAGE_SIZE_TOO_LARGE",
            f"page_size is at most {MAX_PAGE_SIZE}",
            field="page_size",
            max=MAX_PAGE_SIZE,
        )
    return requested or DEFAULT_PAGE_SIZE


def encode(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode(token: str) -> int:
    """The id after which the page starts; 0 for the first page."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "id":
            raise ValueError(raw)
        last = int(value)
        if last < 0:
            raise ValueError(raw)
        return last
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(
            "PAGE_TOKEN_INVALID", "page_token is not one this API issued", field="page_token"
        ) from None
