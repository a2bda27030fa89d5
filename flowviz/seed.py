"""Load the seed data (idempotent: loading twice changes nothing)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

SEED_SQL = Path(__file__).with_name("seed.sql")


def load(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(SEED_SQL.read_text())


def main() -> None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL is not set")
    load(url)


if __name__ == "__main__":
    main()
