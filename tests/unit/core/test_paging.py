"""flowviz/core/paging.py: opaque tokens (encoded, checked) and page sizes."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest

from flowviz.core import paging
from flowviz.core.errors import InvalidArgument
from flowviz.core.validation import FIELD_RULES

BIG = 2**63 - 1


@pytest.mark.parametrize("last_id", [1, 42, 10**12, BIG, -5])
def test_id_tokens_round_trip(last_id: int) -> None:
    token = paging.encode(last_id)
    assert token != str(last_id)
    assert paging.decode(token) == last_id
    assert paging.decode_last_id(token) == last_id
    assert paging.decode_pair(token) == (last_id, 0)  # an id token read where pairs are


@pytest.mark.parametrize("pair", [(1_767_225_600_000_000, 7), (0, 1), (-1, BIG)])
def test_pair_tokens_round_trip(pair: tuple[int, int]) -> None:
    token = paging.encode_pair(*pair)
    assert paging.decode_pair(token) == pair
    assert paging.decode_last_id(token) == pair[1]


def test_empty_token_is_the_first_page() -> None:
    assert paging.decode("") == 0
    assert paging.decode_pair("") is None
    assert paging.decode_last_id("") == 0


def test_tokens_are_url_safe_and_match_the_documented_pattern() -> None:
    pattern = re.compile(FIELD_RULES["page_token"][1]["pattern"])
    for token in (paging.encode(BIG), paging.encode_pair(-(2**63), BIG), paging.encode(1)):
        assert pattern.fullmatch(token), token


def _invalid(decode: Callable[[Any], object], token: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        decode(token)
    return err.value


def _flip(token: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_tampered_and_garbled_tokens_are_invalid_arguments_naming_the_field() -> None:
    good = paging.encode(12345)
    bad = [
        "12345",  # the old form: a bare id
        "1.2",
        "garbage!",
        "é",
        good[:-1],  # truncated
        good + "A",
        good + "=",
        _flip(good, 0),  # another version
        _flip(good, 5),  # the id edited, the digest not
        _flip(good, len(good) * 3 // 4 - 1),  # the digest edited
        paging.encode_pair(1, 2),  # a pair where an id is expected
    ]
    for token in bad:
        err = _invalid(paging.decode, token)
        assert (err.reason, err.metadata) == ("PAGE_TOKEN_INVALID", {"field": "page_token"}), token
    assert _invalid(paging.decode_pair, "1.2").reason == "PAGE_TOKEN_INVALID"
    assert _invalid(paging.decode_last_id, _flip(good, 5)).reason == "PAGE_TOKEN_INVALID"


def test_page_size() -> None:
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    assert paging.page_size(7) == 7
    assert paging.page_size(paging.MAX_PAGE_SIZE) == paging.MAX_PAGE_SIZE
    err = _invalid(paging.page_size, paging.MAX_PAGE_SIZE + 1)
    assert (err.reason, err.metadata) == ("PAGE_SIZE_TOO_LARGE", {"field": "page_size", "max": "500"})
    assert _invalid(paging.page_size, -1).reason == "PAGE_SIZE_INVALID"


async def test_fetch_page_reads_one_more_row_and_gives_the_next_token() -> None:
    rows = [{"id": i} for i in range(1, 8)]
    asked: list[tuple[Any, int]] = []

    async def fetch(after: Any, limit: int) -> Any:
        asked.append((after, limit))
        start = int(after)
        return [r for r in rows if r["id"] > start][:limit]

    page, token = await paging.fetch_page(3, "", fetch)
    assert [r["id"] for r in page] == [1, 2, 3]
    assert asked == [(0, 4)]
    page, token = await paging.fetch_page(3, token, fetch)
    assert [r["id"] for r in page] == [4, 5, 6]
    page, token = await paging.fetch_page(3, token, fetch)
    assert ([r["id"] for r in page], token) == ([7], "")
