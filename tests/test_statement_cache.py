"""FLOWVIZ_STATEMENT_CACHE is a real setting: 0 (PgBouncer transaction mode) prepares nothing
that outlives a statement; the default keeps named prepared statements on the connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowviz.core.config import ConfigError, settings
from flowviz.core.db import create_pool
from tests.conftest import PUBLIC_KEY_ENV

PREPARED = "SELECT count(*) FROM pg_prepared_statements"


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name, value in PUBLIC_KEY_ENV.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    yield monkeypatch
    settings.cache_clear()


def test_the_setting_defaults_to_1024_and_takes_0(fresh_settings: pytest.MonkeyPatch) -> None:
    fresh_settings.delenv("FLOWVIZ_STATEMENT_CACHE", raising=False)
    assert settings().statement_cache == 1024
    fresh_settings.setenv("FLOWVIZ_STATEMENT_CACHE", "0")
    settings.cache_clear()
    assert settings().statement_cache == 0


def test_a_bad_value_is_refused_at_start_up(fresh_settings: pytest.MonkeyPatch) -> None:
    fresh_settings.setenv("FLOWVIZ_STATEMENT_CACHE", "-1")
    with pytest.raises(ConfigError, match="FLOWVIZ_STATEMENT_CACHE"):
        settings()


@pytest.mark.parametrize(("size", "kept"), [(0, 0), (1024, 1)])
async def test_the_pool_prepares_as_configured(empty_db_url: str, size: int, kept: int) -> None:
    pool = await create_pool(empty_db_url, name="test", min_size=1, max_size=1, statement_cache=size)
    try:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT $1::int + 1", 1)
            # The count query itself is prepared too when the cache is on, hence >= kept.
            count = await conn.fetchval(PREPARED)
            assert (count >= kept) if kept else (count == 0)
    finally:
        await pool.close()
