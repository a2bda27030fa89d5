"""qc's read model of each lot's own blocking state (qc_lot_blocks).

One row per lot whose latest QC decision is hold or reject: the decision, its status and
its reason. qc_decisions' trigger maintains it in the same transaction as the decision, so
it is never behind; genealogy reads it to compute effective status inside its own SQL
(a lot is blocked by itself or any ancestor found here). Only qc's table writes it.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute(
        """
CREATE TABLE qc_lot_blocks (
    lot_id      bigint PRIMARY KEY REFERENCES lots (id),
    decision_id bigint NOT NULL REFERENCES qc_decisions (id),
    status      text NOT NULL CHECK (status IN ('on_hold', 'rejected')),
    reason      text NOT NULL
);
COMMENT ON TABLE qc_lot_blocks IS
    'qc read model: lots whose own latest decision is hold or reject (maintained by a trigger on qc_decisions)';

CREATE FUNCTION qc_lot_blocks_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.decision IN ('hold', 'reject') THEN
        INSERT INTO qc_lot_blocks (lot_id, decision_id, status, reason)
        VALUES (NEW.lot_id, NEW.id, CASE NEW.decision WHEN 'hold' THEN 'on_hold' ELSE 'rejected' END, NEW.reason)
        ON CONFLICT (lot_id) DO UPDATE
            SET decision_id = EXCLUDED.decision_id, status = EXCLUDED.status, reason = EXCLUDED.reason
            WHERE qc_lot_blocks.decision_id < EXCLUDED.decision_id;
    ELSE
        DELETE FROM qc_lot_blocks WHERE lot_id = NEW.lot_id AND decision_id < NEW.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER qc_decisions_blocks AFTER INSERT ON qc_decisions
    FOR EACH ROW EXECUTE FUNCTION qc_lot_blocks_apply();

INSERT INTO qc_lot_blocks (lot_id, decision_id, status, reason)
SELECT lot_id, id, CASE decision WHEN 'hold' THEN 'on_hold' ELSE 'rejected' END, reason
FROM (SELECT DISTINCT ON (lot_id) lot_id, id, decision, reason FROM qc_decisions ORDER BY lot_id, id DESC) d
WHERE decision IN ('hold', 'reject');
"""
    )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER qc_decisions_blocks ON qc_decisions; DROP FUNCTION qc_lot_blocks_apply(); DROP TABLE qc_lot_blocks"
    )
