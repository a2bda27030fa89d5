"""qc's published decision history (qc_decision_history): every QC decision of a lot with its
electronic signature (signer, signer's name, time, meaning), for what genealogy renders about
lots (the FSMA 204 spreadsheet, EPCIS, the drill snapshots) without reading qc_decisions, qc's
private table. A view: always the table's own rows, nothing to keep in step, and no writer
(qc_decisions stays append-only and qc's alone).

Revision ID: 0016
Revises: 0013
"""

from alembic import op

revision = "0016"
down_revision = "0013"

UPGRADE = """
CREATE VIEW qc_decision_history AS
SELECT d.id AS decision_id, d.lot_id, d.decision, d.reason, u.username AS decided_by, d.decided_at,
       CASE WHEN d.signed_at IS NULL THEN NULL ELSE u.username END AS signer, d.signer_name, d.signed_at, d.signature_meaning
FROM qc_decisions d JOIN users u ON u.id = d.decided_by;
COMMENT ON VIEW qc_decision_history IS
    'qc read model: every decision with its signature (signer_name, signed_at and '
    'signature_meaning NULL when unsigned); the signer is the user who decided';
GRANT SELECT ON qc_decision_history TO flowviz_lots, flowviz_genealogy, flowviz_qc;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP VIEW qc_decision_history")
