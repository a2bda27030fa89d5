"""A PostgreSQL role per service, with only the grants its tables need (the only-writer rule,
enforced by the database); audit_log and qc_decisions take INSERT only, from anyone.

The roles are created NOLOGIN when missing (roles belong to the whole server, so another
database may have made them already); whoever runs the system gives each its password and LOGIN:
`make run` and the tests (flowviz.tools.embedded), the migrate job (python -m flowviz.tools.dbroles).
Reading is shared (traces join lots, decisions and runs; QC checks a signer's password hash),
writing is not. The lots table has two writers, as the code has: the lots service (raw lots)
and genealogy (a run's outputs, received lots, and corrections of quantity, unit and product).
SELECT ... FOR UPDATE needs UPDATE on the table, so a service that locks rows of its own tables
has UPDATE on them. A table made by a later migration is readable by the services (default
privileges below); its writer needs a GRANT in that migration.

Revision ID: 0011
Revises: 0015
"""

from alembic import op

revision = "0011"
down_revision = "0015"

# flowviz.core.config.DATABASE_ROLES; spelled out here, as a migration must not change later.
ROLES = ("flowviz_lots", "flowviz_genealogy", "flowviz_qc", "flowviz_health")
READERS = "flowviz_lots, flowviz_genealogy, flowviz_qc"

UPGRADE = rf"""
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY{list(ROLES)!r} LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', r);
        END IF;
    END LOOP;
END;
$$;

GRANT USAGE ON SCHEMA public TO {", ".join(ROLES)};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READERS};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READERS};

-- lots: master data, the process model, identity.
GRANT INSERT ON lots, audit_log TO flowviz_lots;
GRANT INSERT, UPDATE ON streams, phases, users, trading_partners, locations TO flowviz_lots;

-- genealogy: runs, edges, receipts, shipments, scenarios, corrections, imports.
GRANT INSERT ON audit_log, receipts, shipments, scenarios, run_voids, voided_edges, lot_corrections,
    import_overrides TO flowviz_genealogy;
GRANT INSERT, UPDATE ON production_runs TO flowviz_genealogy;
GRANT INSERT, UPDATE, DELETE ON lot_genealogy TO flowviz_genealogy;
GRANT INSERT, UPDATE (quantity, uom, product) ON lots TO flowviz_genealogy;

-- qc: gates, decisions and its read models (qc_lot_blocks, qc_lot_status, kept by triggers on
-- qc_decisions that run with the inserting role's rights).
GRANT INSERT ON audit_log, qc_decisions TO flowviz_qc;
GRANT INSERT, UPDATE ON qc_gates TO flowviz_qc;
GRANT INSERT, UPDATE, DELETE ON qc_lot_blocks, qc_lot_status TO flowviz_qc;

-- health: connects and asks SELECT 1; no table at all.
"""

DOWNGRADE = f"""
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {READERS};
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {", ".join(ROLES)};
REVOKE USAGE ON SCHEMA public FROM {", ".join(ROLES)};
"""
# The roles stay: other databases of the same server may still use them.


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
