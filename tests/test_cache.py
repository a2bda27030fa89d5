"""The read-through cache's coordination of concurrent loads, against a real Valkey (a database
of its own). The loads here are plain coroutines the test controls, to pin down the order of
events; what they return stands for rows read before or after a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from flowviz.core.cache import Cache
from tests.conftest import Servers

KEY = b"k" * 32  # the cache's HMAC key: any 32 bytes will do here


@pytest.fixture
async def cache_url(servers: Servers) -> AsyncIterator[str]:
    url = servers.valkey.url.rsplit("/", 1)[0] + "/5"
    yield url
    flush = Cache(url, key=KEY, timeout=1, ttl=60)
    await flush.client.flushdb()
    await flush.client.aclose()


class Load:
    """A load that waits until released, counting its calls."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> bytes:
        self.calls += 1
        self.started.set()
        await self.release.wait()
        return self.answer


async def test_concurrent_misses_share_one_load(cache_url: str) -> None:
    cache = Cache(cache_url, key=KEY, timeout=1, ttl=60)
    load = Load(b"answer")
    first = asyncio.create_task(cache.lot_answer("LOT-A", "trace", load))
    await load.started.wait()
    second = asyncio.create_task(cache.lot_answer("LOT-A", "trace", load))
    # The second request has missed too once this counts it; from there it awaits the shared
    # load without another round trip. (The cache has no event to wait on: poll the counter.)
    while cache.misses < 2:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    load.release.set()
    assert await asyncio.gather(first, second) == [b"answer", b"answer"]
    assert load.calls == 1
    await cache.close()


@pytest.mark.parametrize("writer_process", ["same", "other"])
async def test_a_miss_after_a_write_does_not_join_a_load_from_before_it(
    cache_url: str, writer_process: str
) -> None:
    """A load started before a write may have read the old rows: a request that arrives after
    the write's invalidation must load afresh, whichever process wrote."""
    reader = Cache(cache_url, key=KEY, timeout=1, ttl=60)
    writer = reader if writer_process == "same" else Cache(cache_url, key=KEY, timeout=1, ttl=60)
    before, after = Load(b"before the write"), Load(b"after the write")
    after.release.set()
    first = asyncio.create_task(reader.lot_answer("LOT-B", "trace", before))
    await before.started.wait()
    await writer.invalidate(["LOT-B"])  # the write commits and drops LOT-B's answers
    # (before the fix it waited for the old load, which the test releases only afterwards)
    fresh = await asyncio.wait_for(reader.lot_answer("LOT-B", "trace", after), 5)
    assert fresh == b"after the write"
    before.release.set()
    assert await first == b"before the write"  # its caller asked before the write
    # and what it loaded was not stored over the newer answer
    await reader.settled()
    assert reader.hits == 0
    assert await reader.lot_answer("LOT-B", "trace", Load(b"unused")) == b"after the write"
    assert reader.hits == 1
    await reader.close()
    if writer is not reader:
        await writer.close()


async def test_an_answer_is_served_while_it_is_being_stored(cache_url: str) -> None:
    """The load's caller is answered before the value reaches Valkey; a repeat request in that
    moment gets the same answer without a second load, and afterwards Valkey has it."""
    cache = Cache(cache_url, key=KEY, timeout=1, ttl=60)
    load = Load(b"answer")
    load.release.set()
    assert await cache.lot_answer("LOT-C", "trace", load) == b"answer"
    assert await cache.lot_answer("LOT-C", "trace", load) == b"answer"
    await cache.settled()
    assert await cache.lot_answer("LOT-C", "trace", load) == b"answer"
    assert (load.calls, cache.misses, cache.hits) == (1, 1, 2)
    other = Cache(cache_url, key=KEY, timeout=1, ttl=60)  # another process sees it stored
    assert await other.lot_answer("LOT-C", "trace", Load(b"unused")) == b"answer"
    assert other.hits == 1
    await cache.close()
    await other.close()
