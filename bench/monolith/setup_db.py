"""Create the monolith's nine tables (SQLAlchemy create_all) and load flowviz's seed file.

    MONOLITH_DATABASE_URL=postgresql+asyncpg://... bench/monolith/.venv/bin/python \
        bench/monolith/setup_db.py flowviz/tools/seed.sql

Run against an empty database (the bench creates a fresh one); the seed is idempotent.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from models import Base
from sqlalchemy.ext.asyncio import create_async_engine


async def main(seed_sql: str) -> None:
    engine = create_async_engine(os.environ["MONOLITH_DATABASE_URL"])
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            # The seed is several statements: asyncpg's simple-query execute takes them at once.
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(seed_sql)  # type: ignore[union-attr]
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).read_text()))
