"""Apply the database migrations (alembic, SQL in flowviz/tools/migrations/versions)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # psycopg 3 driver; asyncpg serves the application, alembic runs synchronously.
    url = database_url.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "postgres://", "postgresql+psycopg://", 1
    )
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def main() -> None:
    from flowviz.tools import local  # the same settings and one-line messages as `flowviz migrate`

    try:
        url = local.database_url()
        with local.reaching(url):
            upgrade(url, sys.argv[1] if len(sys.argv) > 1 else "head")
    except local.UserError as exc:
        sys.exit(f"flowviz.tools.migrate: {exc}")


if __name__ == "__main__":
    main()
