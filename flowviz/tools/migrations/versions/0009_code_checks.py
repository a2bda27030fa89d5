"""Codes are checked by the database with the services' own patterns (whole string), so a value
that got past a service (or SQL by hand) cannot store a code the API would refuse.

Named <table>_<column>_check, PostgreSQL's own naming: flowviz.core.constraints.database_error reads
the field from the name. PostgreSQL's `$` matches only at the very end (no newline mode), so the
patterns are the ones in flowviz/core/validation.py. Run codes take the lot-code rule: the
importer accepts any lot-code-shaped run code (the API's rule is narrower).

Revision ID: 0009
Revises: 0007
"""

from alembic import op

revision = "0009"
down_revision = "0008"

LOT_CODE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
CODE = r"^[A-Z0-9][A-Z0-9_.-]{0,63}$"
# (table, column, pattern)
CHECKS = (
    ("lots", "lot_code", LOT_CODE),
    ("production_runs", "run_code", LOT_CODE),
    ("streams", "code", CODE),
    ("phases", "code", CODE),
    ("qc_gates", "code", CODE),
)


def upgrade() -> None:
    for table, column, pattern in CHECKS:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_{column}_check, "
            f"ADD CONSTRAINT {table}_{column}_check CHECK ({column} ~ '{pattern}')"
        )


def downgrade() -> None:
    for table, column, _ in CHECKS:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {table}_{column}_check, "
            f"ADD CONSTRAINT {table}_{column}_check CHECK (length({column}) BETWEEN 1 AND 64)"
        )
