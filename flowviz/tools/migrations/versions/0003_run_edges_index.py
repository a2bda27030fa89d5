"""Index the edges of a production run (run pages and run mass balance read them by run).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute("CREATE INDEX lot_genealogy_run_idx ON lot_genealogy (run_id) WHERE run_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX lot_genealogy_run_idx")
