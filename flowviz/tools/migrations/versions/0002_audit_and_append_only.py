"""Who recorded what: recorded_by/created_by, an append-only audit log, append-only QC decisions.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"

UPGRADE = r"""
ALTER TABLE production_runs ADD COLUMN recorded_by text NOT NULL DEFAULT 'system';
ALTER TABLE lots ADD COLUMN created_by text NOT NULL DEFAULT 'system';

-- Every change: who (the authenticated caller), when (server UTC), what and why.
CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    action     text NOT NULL,
    entity     text NOT NULL,
    entity_key text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    details    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_key, id);

-- Rows that are history: the database itself refuses to change or remove them.
CREATE FUNCTION flowviz_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
CREATE TRIGGER qc_decisions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON qc_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
"""

DOWNGRADE = """
DROP TRIGGER qc_decisions_append_only ON qc_decisions;
DROP TABLE audit_log;
DROP FUNCTION flowviz_refuse_change();
ALTER TABLE lots DROP COLUMN created_by;
ALTER TABLE production_runs DROP COLUMN recorded_by;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
