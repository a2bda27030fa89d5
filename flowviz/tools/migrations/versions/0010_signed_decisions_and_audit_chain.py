"""Signed QC decisions, and the audit log as a hash chain.

A release or reject (a hold too, if configured) carries the signer's electronic signature:
name, time and meaning, recorded with the decision (21 CFR Part 11 style). The audit log
becomes a hash chain computed by the database itself, so every writer (the services, the
command line, a bulk import) is chained alike: each row gets `seq` (its place in the chain),
`prev_hash` (the hash of the row before) and `hash` = sha256 over its content and `prev_hash`.
A transaction-scoped advisory lock keeps the chain linear: one audit insert at a time, in
commit order (the next writer waits until the one holding it commits or rolls back).
`flowviz audit verify` walks the chain (flowviz/tools/auditchain.py).

Revision ID: 0010
Revises: 0007
"""

from alembic import op

revision = "0010"
down_revision = "0009"

UPGRADE = r"""
ALTER TABLE qc_decisions
    ADD COLUMN signer_name text,
    ADD COLUMN signed_at timestamptz,
    ADD COLUMN signature_meaning text;

ALTER TABLE audit_log
    ADD COLUMN seq bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash bytea;

-- The content a row's hash covers, as canonical text (jsonb renders keys sorted; the time in
-- microseconds since the epoch, so the session's time zone does not matter).
CREATE FUNCTION flowviz_audit_digest(
    seq bigint, prev_hash bytea, at timestamptz, actor text, action text, entity text,
    entity_key text, reason text, details jsonb
) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(jsonb_build_array(
        seq, encode(prev_hash, 'hex'), (extract(epoch FROM at) * 1000000)::bigint,
        actor, action, entity, entity_key, reason, details)::text, 'UTF8'))
$$;

CREATE FUNCTION flowviz_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last record;
BEGIN
    -- One link at a time; the query below (read committed: a new snapshot) sees the last one.
    PERFORM pg_advisory_xact_lock(hashtext('flowviz_audit_chain'));
    SELECT a.seq, a.hash INTO last FROM audit_log a WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
    NEW.seq := COALESCE(last.seq, 0) + 1;
    NEW.prev_hash := COALESCE(last.hash, ''::bytea);
    NEW.hash := flowviz_audit_digest(NEW.seq, NEW.prev_hash, NEW.at, NEW.actor, NEW.action,
                                     NEW.entity, NEW.entity_key, NEW.reason, NEW.details);
    RETURN NEW;
END;
$$;

-- The rows already there, chained in the order they were written.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
DO $$
DECLARE
    r record;
    n bigint := 0;
    prev bytea := ''::bytea;
    h bytea;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        n := n + 1;
        h := flowviz_audit_digest(n, prev, r.at, r.actor, r.action, r.entity, r.entity_key, r.reason, r.details);
        UPDATE audit_log SET seq = n, prev_hash = prev, hash = h WHERE id = r.id;
        prev := h;
    END LOOP;
END;
$$;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;

CREATE UNIQUE INDEX audit_log_seq_idx ON audit_log (seq);
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION flowviz_audit_chain();
"""

DOWNGRADE = """
DROP TRIGGER audit_log_chain ON audit_log;
DROP FUNCTION flowviz_audit_chain();
DROP INDEX audit_log_seq_idx;
ALTER TABLE audit_log DROP COLUMN hash, DROP COLUMN prev_hash, DROP COLUMN seq;
DROP FUNCTION flowviz_audit_digest(bigint, bytea, timestamptz, text, text, text, text, text, jsonb);
ALTER TABLE qc_decisions DROP COLUMN signature_meaning, DROP COLUMN signed_at, DROP COLUMN signer_name;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
