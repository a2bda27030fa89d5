"""Corrections with a trail (voided runs and edges, corrected lots) and indexes for lot search.

A correction never rewrites history: a voided edge moves out of lot_genealogy (so every trace,
recall and export query leaves it out unchanged) into voided_edges, which keeps the row as it
was with who, when and why; a voided run keeps its production_runs row and gains a run_voids
row; a corrected lot keeps its values before and after in lot_corrections. The database
refuses to change or remove any of these rows, like audit_log and qc_decisions.

Revision ID: 0006
Revises: 0003
"""

from alembic import op

revision = "0006"
down_revision = "0005"

UPGRADE = r"""
CREATE TABLE run_voids (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id    bigint NOT NULL UNIQUE REFERENCES production_runs (id),
    voided_by text NOT NULL,
    voided_at timestamptz NOT NULL DEFAULT now(),
    reason    text NOT NULL CHECK (length(reason) > 0)
);

-- An edge taken out of the genealogy: the lot_genealogy row as it was (same id), then why.
CREATE TABLE voided_edges (
    id            bigint PRIMARY KEY,
    parent_lot_id bigint NOT NULL REFERENCES lots (id),
    child_lot_id  bigint NOT NULL REFERENCES lots (id),
    quantity      numeric(18, 3) NOT NULL,
    uom           text NOT NULL,
    run_id        bigint REFERENCES production_runs (id),
    created_at    timestamptz NOT NULL,
    -- Set when the edge left with its run (the void of the run says who, when and why).
    run_void_id   bigint REFERENCES run_voids (id),
    voided_by     text NOT NULL,
    voided_at     timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL CHECK (length(reason) > 0)
);
CREATE INDEX voided_edges_run_idx ON voided_edges (run_id) WHERE run_id IS NOT NULL;
-- "Is this lot an output of a voided run?" (such a lot cannot be consumed or corrected).
CREATE INDEX voided_edges_child_idx ON voided_edges (child_lot_id) WHERE run_void_id IS NOT NULL;

CREATE TABLE lot_corrections (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id          bigint NOT NULL REFERENCES lots (id),
    quantity_before numeric(18, 3) NOT NULL,
    quantity_after  numeric(18, 3) NOT NULL,
    uom_before      text NOT NULL,
    uom_after       text NOT NULL,
    product_before  text NOT NULL,
    product_after   text NOT NULL,
    corrected_by    text NOT NULL,
    corrected_at    timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL CHECK (length(reason) > 0)
);
CREATE INDEX lot_corrections_lot_idx ON lot_corrections (lot_id, id);

CREATE TRIGGER run_voids_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON run_voids
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
CREATE TRIGGER voided_edges_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON voided_edges
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
CREATE TRIGGER lot_corrections_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON lot_corrections
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();

-- Traces now name each edge (TraceEdge.edge_id): the covering indexes carry the id too, so
-- walks stay index-only.
CREATE INDEX lot_genealogy_parent_cover_idx ON lot_genealogy (parent_lot_id)
    INCLUDE (child_lot_id, quantity, uom, run_id, id);
CREATE INDEX lot_genealogy_child_cover_idx ON lot_genealogy (child_lot_id)
    INCLUDE (parent_lot_id, quantity, uom, run_id, id);
DROP INDEX lot_genealogy_parent_idx, lot_genealogy_child_idx;

-- Lot search (ListLots): a code prefix is a range in byte order, a product substring
-- (ILIKE '%...%') a trigram match, produced_at a range; kind has lots_kind_idx already.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX lots_lot_code_prefix_idx ON lots ((lot_code COLLATE "C"));
CREATE INDEX lots_product_trgm_idx ON lots USING gin (product gin_trgm_ops);
CREATE INDEX lots_produced_at_idx ON lots (produced_at, id);
-- Lots by their latest decision (own-status and effective-status filters).
CREATE INDEX qc_decisions_decision_idx ON qc_decisions (decision, lot_id, id);
"""

DOWNGRADE = """
CREATE INDEX lot_genealogy_parent_idx ON lot_genealogy (parent_lot_id) INCLUDE (child_lot_id, quantity, uom, run_id);
CREATE INDEX lot_genealogy_child_idx ON lot_genealogy (child_lot_id) INCLUDE (parent_lot_id, quantity, uom, run_id);
DROP INDEX lot_genealogy_parent_cover_idx, lot_genealogy_child_cover_idx;
DROP INDEX qc_decisions_decision_idx, lots_produced_at_idx, lots_product_trgm_idx, lots_lot_code_prefix_idx;
DROP TABLE lot_corrections, voided_edges, run_voids;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
