"""qc's read model of each lot's own QC status (qc_lot_status), beside qc_lot_blocks.

One row per lot that has a QC decision: its latest decision, the status it gives the lot
(passed, on_hold, released, rejected; a lot without a row is pending) and its reason. A
trigger on qc_decisions maintains it in the same transaction as the decision, like
qc_lot_blocks, so it is never behind. These two tables are what qc publishes: the lots and
genealogy services read a lot's own and effective status from them, never qc_decisions
(qc's private table), and only qc's trigger writes them.

Revision ID: 0015
Revises: 0010
"""

from alembic import op

revision = "0015"
down_revision = "0010"

UPGRADE = """
CREATE TABLE qc_lot_status (
    lot_id      bigint PRIMARY KEY REFERENCES lots (id),
    decision_id bigint NOT NULL REFERENCES qc_decisions (id),
    status      text NOT NULL CHECK (status IN ('passed', 'on_hold', 'released', 'rejected')),
    reason      text NOT NULL
);
-- Lot listings filter by own status.
CREATE INDEX qc_lot_status_status_idx ON qc_lot_status (status, lot_id);
COMMENT ON TABLE qc_lot_status IS
    'qc read model: each lot''s own status from its latest decision (no row: pending); '
    'maintained by a trigger on qc_decisions';

CREATE FUNCTION qc_lot_status_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO qc_lot_status (lot_id, decision_id, status, reason)
    VALUES (NEW.lot_id, NEW.id,
            CASE NEW.decision WHEN 'pass' THEN 'passed' WHEN 'hold' THEN 'on_hold'
                              WHEN 'release' THEN 'released' ELSE 'rejected' END,
            NEW.reason)
    ON CONFLICT (lot_id) DO UPDATE
        SET decision_id = EXCLUDED.decision_id, status = EXCLUDED.status, reason = EXCLUDED.reason
        WHERE qc_lot_status.decision_id < EXCLUDED.decision_id;
    RETURN NULL;
END $$;

CREATE TRIGGER qc_decisions_status AFTER INSERT ON qc_decisions
    FOR EACH ROW EXECUTE FUNCTION qc_lot_status_apply();

INSERT INTO qc_lot_status (lot_id, decision_id, status, reason)
SELECT lot_id, id,
       CASE decision WHEN 'pass' THEN 'passed' WHEN 'hold' THEN 'on_hold'
                     WHEN 'release' THEN 'released' ELSE 'rejected' END,
       reason
FROM (SELECT DISTINCT ON (lot_id) lot_id, id, decision, reason FROM qc_decisions ORDER BY lot_id, id DESC) d;

COMMENT ON TABLE qc_lot_blocks IS
    'qc read model: lots whose own latest decision is hold or reject (maintained by a trigger '
    'on qc_decisions); genealogy joins it in its ancestor walks for effective status';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER qc_decisions_status ON qc_decisions; DROP FUNCTION qc_lot_status_apply(); "
        "DROP TABLE qc_lot_status"
    )
