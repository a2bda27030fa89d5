"""The audit log's hash chain, sealed after commit: writers no longer wait for each other.

Migration 0010 chained each row in a BEFORE INSERT trigger under one transaction-scoped advisory
lock, held until COMMIT: from one writer's audit insert until its commit (WAL flush included)
every other writer waited, so commits could not share a WAL flush (bench/audit_chain_bench.py:
239-972 commits/s at 50 connections with it, 3,180-3,323 without).

Now a write only stamps its row, with no lock: a BEFORE INSERT trigger clears seq, prev_hash and
hash (a writer cannot supply them) and sets `digest`, the sha256 of the row's own content
(flowviz_audit_digest with no seq and no prev_hash). A row without a digest was inserted with the
triggers off, behind the rules: it is never sealed and `flowviz audit verify` names it.

flowviz_audit_seal() links rows into the chain later, in the background (flowviz.core.audit:
every service that writes audit rows runs it about every 200 ms): under
pg_try_advisory_xact_lock, so one sealer runs at a time and the others skip their turn, it reads
the last sealed row, then gives each committed unsealed row, in id order, seq = last + 1,
prev_hash = the last hash and hash = flowviz_audit_digest(seq, prev_hash, content), as 0010 did.
It finds the rows to seal by `seq IS NULL` (a partial index), not by a cursor, so it needs no wait
for the oldest running transaction (pg_snapshot_xmin): a row that commits late, with an id
below rows already sealed, is simply sealed in a later pass, and a long transaction holds up no
one else's rows. It is SECURITY DEFINER, owned by the migration's owner; the services may only
EXECUTE it, never UPDATE audit_log.

The append-only rule allows exactly one UPDATE of a row: the sealer's, from unsealed (seq,
prev_hash, hash NULL, digest set) to sealed, with every other column unchanged and a hash that
is the digest of the new seq, prev_hash and content. DELETE and TRUNCATE are refused as before.

What verify proves is what it proved with 0010, with one window made explicit: a sealed row
edited, deleted or inserted behind the rules is found as before (hash, prev_hash, seq gaps); an
unsealed row edited behind the rules no longer gives its digest; a row inserted behind the rules
(triggers off) has no digest. Someone who can switch the triggers off (the superuser) and who
deletes an unsealed row, or edits one and recomputes its digest, before it is sealed (normally
under a second) is not caught: the unsealed tail has the protection the chain's last row always
had (keep the head hash elsewhere). A row the superuser inserts with the triggers on is stamped
and sealed like any other, as it was chained like any other under 0010.

Revision ID: 0013
Revises: 0014
"""

from alembic import op

revision = "0013"
down_revision = "0014"

# The services that write audit rows (migrations 0011, 0012); health writes none.
SEALERS = "flowviz_lots, flowviz_genealogy, flowviz_qc, flowviz_events"
CONTENT = "at, actor, action, entity, entity_key, reason, details"

UPGRADE = rf"""
DROP TRIGGER audit_log_chain ON audit_log;
DROP FUNCTION flowviz_audit_chain();

ALTER TABLE audit_log ADD COLUMN digest bytea;
-- Each seal leaves the row's unsealed version dead in this index until a vacuum. The sealer reads
-- it with a plain index scan, which marks the dead entries so the next pass skips their heap
-- pages (a bitmap scan visits them all every pass: 40-70 ms at 200,000 dead entries, against
-- 0.5 ms), and the table is vacuumed at 2% dead rows rather than 20%.
CREATE INDEX audit_log_unsealed_idx ON audit_log (id) WHERE seq IS NULL;
ALTER TABLE audit_log SET (autovacuum_vacuum_scale_factor = 0.02);

CREATE FUNCTION flowviz_audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seq := NULL;
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    NEW.digest := flowviz_audit_digest(NULL, NULL, NEW.at, NEW.actor, NEW.action, NEW.entity,
                                       NEW.entity_key, NEW.reason, NEW.details);
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_log_stamp BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION flowviz_audit_stamp();

-- Append-only, but for the sealer's one UPDATE of a row: unsealed -> sealed, content unchanged.
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
CREATE FUNCTION flowviz_audit_seal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL AND OLD.digest IS NOT NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND (NEW.id, NEW.at, NEW.actor, NEW.action, NEW.entity, NEW.entity_key, NEW.reason, NEW.details,
            NEW.digest) IS NOT DISTINCT FROM
           (OLD.id, OLD.at, OLD.actor, OLD.action, OLD.entity, OLD.entity_key, OLD.reason, OLD.details,
            OLD.digest)
       AND NEW.hash = flowviz_audit_digest(NEW.seq, NEW.prev_hash, NEW.at, NEW.actor, NEW.action,
                                           NEW.entity, NEW.entity_key, NEW.reason, NEW.details)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: UPDATE refused (only sealing an unsealed row is allowed)'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_seal_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION flowviz_audit_seal_only();

-- Seal up to max_rows committed unsealed rows; NULL when another sealer holds the lock (unless
-- wait). Read committed: each statement's snapshot, taken after the lock, sees the last sealer's
-- commit (a fixed snapshot could miss it; the unique seq index would then refuse the batch).
-- pg_temp last in its search_path: a caller's temporary table named audit_log is never the one.
CREATE FUNCTION flowviz_audit_seal(max_rows integer DEFAULT 10000, wait boolean DEFAULT false)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET enable_bitmapscan = off AS $$
DECLARE
    last record;
    r record;
    n bigint;
    prev bytea;
    h bytea;
    ids bigint[] := '{{}}';
    seqs bigint[] := '{{}}';
    prevs bytea[] := '{{}}';
    hashes bytea[] := '{{}}';
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'flowviz_audit_seal() runs in READ COMMITTED only (it must see the last sealed row)';
    END IF;
    IF wait THEN
        PERFORM pg_advisory_xact_lock(hashtext('flowviz_audit_seal'));
    ELSIF NOT pg_try_advisory_xact_lock(hashtext('flowviz_audit_seal')) THEN
        RETURN NULL;
    END IF;
    SELECT a.seq, a.hash INTO last FROM audit_log a WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
    n := COALESCE(last.seq, 0);
    prev := COALESCE(last.hash, ''::bytea);
    -- Only rows the seal-only rule accepts: one stamped behind the rules waits for verify.
    FOR r IN SELECT a.id, {", ".join("a." + c for c in CONTENT.split(", "))} FROM audit_log a
             WHERE a.seq IS NULL AND a.prev_hash IS NULL AND a.hash IS NULL AND a.digest IS NOT NULL
             ORDER BY a.id LIMIT max_rows LOOP
        n := n + 1;
        h := flowviz_audit_digest(n, prev, r.at, r.actor, r.action, r.entity, r.entity_key, r.reason, r.details);
        ids := ids || r.id;
        seqs := seqs || n;
        prevs := prevs || prev;
        hashes := hashes || h;
        prev := h;
    END LOOP;
    UPDATE audit_log a SET seq = u.seq, prev_hash = u.prev, hash = u.hash
    FROM unnest(ids, seqs, prevs, hashes) AS u (id, seq, prev, hash)
    WHERE a.id = u.id;
    RETURN cardinality(ids);
END;
$$;
REVOKE ALL ON FUNCTION flowviz_audit_seal(integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowviz_audit_seal(integer, boolean) TO {SEALERS};
"""

# Back to 0010's trigger: the rows still unsealed are chained first (a stamped row's content is
# what its digest says, or verify would have named it), in id order, as 0010 chained the rows it found.
DOWNGRADE = r"""
SELECT flowviz_audit_seal(2147483647, true);
DROP FUNCTION flowviz_audit_seal(integer, boolean);
DROP TRIGGER audit_log_seal_only ON audit_log;
DROP FUNCTION flowviz_audit_seal_only();
DROP TRIGGER audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
DROP TRIGGER audit_log_stamp ON audit_log;
DROP FUNCTION flowviz_audit_stamp();
DROP INDEX audit_log_unsealed_idx;
ALTER TABLE audit_log RESET (autovacuum_vacuum_scale_factor);
ALTER TABLE audit_log DROP COLUMN digest;

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
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION flowviz_audit_chain();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
