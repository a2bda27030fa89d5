"""Opaque page tokens (AIP-158) over keyset pagination by id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

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
    return str(last_id)


def decode(token: str) -> int:
    """The id after which the page starts; 0 for the first page."""
    if not token:
        return 0
    if not (token.isascii() and token.isdigit() and len(token) <= 18):
        raise InvalidArgument(
            "PAGE_TOKEN_INVALID", "page_token is not one this API issued", field="page_token"
        )
    return int(token)


def encode_pair(first: int, last_id: int) -> str:
    """A token for lists in (first, id) order, e.g. (a timestamp in microseconds, id)."""
    return f"{first}.{last_id}"


def decode_pair(token: str) -> tuple[int, int] | None:
    """(first, id) after which the page starts ("first" alone: (first, 0)); None for the first page."""
    if not token:
        return None
    first, dot, last_id = token.partition(".")
    if not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in (first, *((last_id,) if dot else ()))):
        raise InvalidArgument(
            "PAGE_TOKEN_INVALID", "page_token is not one this API issued", field="page_token"
        )
    return int(first), int(last_id or 0)


async def fetch_page(
    requested_size: int,
    token: str,
    fetch: Callable[[Any, int], Awaitable[list[asyncpg.Record]]],
    *,
    decode_token: Callable[[str], Any] = decode,
    encode_row: Callable[[asyncpg.Record], str] = lambda row: encode(row["id"]),
) -> tuple[list[asyncpg.Record], str]:
    """One page: `fetch(after, limit)` rows past the token (`after`: the token decoded, by default
    the last id), and the next page's token ("" at the end).

    One row more than the page is read, to know whether another page follows."""
    size = page_size(requested_size)
    rows = await fetch(decode_token(token), size + 1)
    return rows[:size], encode_row(rows[size - 1]) if len(rows) > size else ""
