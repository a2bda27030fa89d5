"""Opaque page tokens (AIP-158) over keyset pagination by id."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
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


# A token is urlsafe base64 (unpadded) of: a version byte, the position (one or two signed
# 64-bit ints, big-endian) and a 4-byte digest of both. The digest is no secret (anyone may
# recompute it): it catches garbled, truncated and hand-edited tokens, so a client cannot come to
# rely on a token's form, and the form can change under a new version byte.
_VERSION = 1
_DIGEST = 4
_POSITION = struct.Struct(">q")
_INVALID = "page_token is not one this API issued (pass back a next_page_token unchanged)"


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST, person=b"flowviz-page").digest()


def _encode(*position: int) -> str:
    body = bytes([_VERSION]) + b"".join(_POSITION.pack(p) for p in position)
    return base64.urlsafe_b64encode(body + _digest(body)).rstrip(b"=").decode("ascii")


def _position(token: str) -> tuple[int, ...]:
    """The ints a token holds (one or two); 400 PAGE_TOKEN_INVALID naming page_token otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (UnicodeEncodeError, binascii.Error):
        raw = b""
    values = raw[1:-_DIGEST]
    if len(values) in (_POSITION.size, 2 * _POSITION.size):
        position = tuple(p for (p,) in _POSITION.iter_unpack(values))
        # Re-encoding checks the version, the digest and the canonical spelling at once.
        if _encode(*position) == token:
            return position
    raise InvalidArgument("PAGE_TOKEN_INVALID", _INVALID, field="page_token")


def encode(last_id: int) -> str:
    return _encode(last_id)


def decode(token: str) -> int:
    """The id after which the page starts; 0 for the first page."""
    if not token:
        return 0
    position = _position(token)
    if len(position) != 1:
        raise InvalidArgument("PAGE_TOKEN_INVALID", _INVALID, field="page_token")
    return position[0]


def encode_pair(first: int, last_id: int) -> str:
    """A token for lists in (first, id) order, e.g. (a timestamp in microseconds, id)."""
    return _encode(first, last_id)


def decode_pair(token: str) -> tuple[int, int] | None:
    """(first, id) after which the page starts (an id token: (its id, 0)); None for the first page."""
    if not token:
        return None
    position = _position(token)
    return position[0], position[1] if len(position) == 2 else 0


def decode_last_id(token: str) -> int:
    """The id of a token of either form (the id, or the id of a pair); 0 for the first page."""
    return _position(token)[-1] if token else 0


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
