"""Rules a historical import let through, per lot (mass balance flags them HISTORICAL_IMPORT).

Revision ID: 0005
Revises: 0003
"""

from alembic import op

revision = "0005"
down_revision = "0004"

UPGRADE = """
-- One row per lot at either end of an imported edge that broke a production-run rule
-- (owned by genealogy, written by the importer in the import's transaction; append-only).
CREATE TABLE import_overrides (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id      bigint NOT NULL REFERENCES lots (id),
    rule        text NOT NULL,
    file        text NOT NULL,
    row_number  int NOT NULL,
    field       text NOT NULL,
    value       text NOT NULL,
    reason      text NOT NULL,
    imported_by text NOT NULL,
    import_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_overrides_lot_idx ON import_overrides (lot_id);
CREATE TRIGGER import_overrides_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON import_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE import_overrides")
