"""Load the seed data (idempotent: loading twice changes nothing)."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

SEED_SQL = Path(__file__).with_name("seed.sql")


def load(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(SEED_SQL.read_text())


def main() -> None:
    from flowviz.tools import local  # the same settings and one-line messages as `flowviz seed`

    try:
        url = local.database_url()
        with local.reaching(url):
            load(url)
    except local.UserError as exc:
        sys.exit(f"flowviz.tools.seed: {exc}")


if __name__ == "__main__":
    main()
