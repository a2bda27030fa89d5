"""flowviz/core/cache.py's round-trip hook (what tracing registers), and logs' span-id source.
No Valkey: the round trips here are plain coroutines, and the client connects only when used."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest

from flowviz.core import cache, logs
from flowviz.core.cache import Cache


@pytest.fixture
def store() -> Iterator[Cache]:
    yield Cache("valkey://127.0.0.1:9/0", key=b"k" * 32, timeout=1.0, ttl=60)
    assert cache.watch_round_trips(None) is None  # each test removed what it set


async def _answer() -> str:
    return "answer"


async def _fail() -> str:
    raise ConnectionError("valkey went away")


async def test_without_a_hook_a_round_trip_is_the_plain_call(store: Cache) -> None:
    assert cache.round_trip_hook() is None
    assert await store._bounded("lookup", _answer) == "answer"
    assert await store._bounded("lookup", _fail) is None  # a failure is a miss, never an error
    assert (store.errors, store.available) == (1, False)
    assert await store._bounded("lookup", _answer) is None  # skipped while the cache is down
    assert await store._bounded("ping", _answer, force=True) == "answer"


async def test_the_hook_sees_every_round_trip_and_its_result(store: Cache) -> None:
    seen: list[tuple[str, Any]] = []

    async def hook(op: str, run: Callable[[], Awaitable[Any]]) -> Any:
        result = await run()
        seen.append((op, result))
        return result

    assert cache.watch_round_trips(hook) is None
    try:
        assert cache.round_trip_hook() is hook
        assert await store._bounded("lookup", _answer) == "answer"
        assert await store._bounded("fill", _fail) is None
        assert await store._bounded("lookup", _answer) is None  # down: the hook still sees it
    finally:
        assert cache.watch_round_trips(None) is hook
    assert seen == [("lookup", "answer"), ("fill", None), ("lookup", None)]


def test_log_lines_carry_the_ids_of_the_registered_source() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    formatter = logs.JsonFormatter("test")
    assert "trace_id" not in orjson.loads(formatter.format(record))
    assert logs.use_span_ids(lambda: ("a" * 32, "b" * 16)) is None
    try:
        line = orjson.loads(formatter.format(record))
        assert (line["trace_id"], line["span_id"]) == ("a" * 32, "b" * 16)
    finally:
        logs.use_span_ids(None)
    assert logs.span_ids is None
