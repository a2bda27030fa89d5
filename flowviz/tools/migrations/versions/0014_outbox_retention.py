"""Outbox retention (issue 16): events done with are pruned after FLOWVIZ_EVENTS_RETENTION_DAYS.

event_outbox stays append-only for everyone: no role gets DELETE on it. The one way to remove
rows is flowviz_prune_events(), run by the events service's dispatcher (EXECUTE granted to
flowviz_events alone). It runs as the table's owner and sets, around its own DELETE only, the
setting the append-only trigger lets a DELETE through with (a role without DELETE on the table
gains nothing by setting it), so the rule of what may go is the database's, in one place:

- an event the dispatcher has fanned out (at or behind event_fanout_cursor) and, for a
  qc.decision.recorded, that genealogy has read too (genealogy_event_cursor: it derives
  lot.blocked/unblocked from it);
- none of whose deliveries is pending (delivered, or given up), each finished (delivered_at, or
  the last attempt of a given-up one) before the cutoff; an event no subscription wanted goes
  when it occurred before the cutoff;
- its deliveries (the delivery log) go with it, in the same transaction.

One call looks at `scan` outbox rows after `after_id` (by id) and locks only their deliveries, so
no call holds a lock for long; the caller walks on from last_id until `young` says the rows are
past the cutoff. event_deliveries (outbox_id) serves the per-event checks and the foreign key's.

Revision ID: 0014
Revises: 0012
"""

from alembic import op

revision = "0014"
down_revision = "0012"

UPGRADE = r"""
CREATE INDEX event_deliveries_outbox_idx ON event_deliveries (outbox_id);

CREATE FUNCTION flowviz_outbox_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('flowviz.outbox_prune', true) = 'on' THEN
        RETURN NULL;  -- flowviz_prune_events(), around its own DELETE only
    END IF;
    RAISE EXCEPTION '% is append-only: % refused (retention prunes it: flowviz_prune_events)',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER event_outbox_append_only ON event_outbox;
CREATE TRIGGER event_outbox_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_outbox_guard();

CREATE FUNCTION flowviz_prune_events(
    cutoff timestamptz, after_id bigint, scan integer,
    OUT last_id bigint, OUT young boolean, OUT events bigint, OUT deliveries bigint
) LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    ids bigint[];
BEGIN
    scan := least(greatest(scan, 1), 5000);  -- a small batch, whatever the caller asks
    SELECT max(w.id), count(*) < scan OR bool_or(w.occurred_at >= cutoff)
    INTO last_id, young
    FROM (SELECT o.id, o.occurred_at FROM event_outbox o WHERE o.id > after_id ORDER BY o.id LIMIT scan) w;
    young := coalesce(young, true);
    SELECT array_agg(o.id) INTO ids
    FROM event_outbox o, event_fanout_cursor f, genealogy_event_cursor g
    WHERE o.id > after_id AND o.id <= coalesce(last_id, after_id)
      AND (o.tx, o.id) <= (f.tx, f.id)
      AND (o.type <> 'qc.decision.recorded' OR (o.tx, o.id) <= (g.tx, g.id))
      AND (o.occurred_at < cutoff OR EXISTS (SELECT 1 FROM event_deliveries d WHERE d.outbox_id = o.id));
    -- Lock the candidates' deliveries (a redeliver waits), then check them as they now are.
    PERFORM 1 FROM event_deliveries d WHERE d.outbox_id = ANY (ids) ORDER BY d.id FOR UPDATE;
    SELECT array_agg(c.id) INTO ids
    FROM unnest(ids) AS c (id)
    WHERE NOT EXISTS (
        SELECT 1 FROM event_deliveries d
        WHERE d.outbox_id = c.id
          AND (d.status = 'pending' OR coalesce(d.delivered_at, d.last_attempt_at, d.created_at) >= cutoff)
    );
    DELETE FROM event_deliveries d WHERE d.outbox_id = ANY (ids);
    GET DIAGNOSTICS deliveries = ROW_COUNT;
    -- The trigger lets this DELETE through, and only this one (the setting ends with it).
    PERFORM set_config('flowviz.outbox_prune', 'on', true);
    DELETE FROM event_outbox o WHERE o.id = ANY (ids);
    GET DIAGNOSTICS events = ROW_COUNT;
    PERFORM set_config('flowviz.outbox_prune', '', true);
END;
$$;
REVOKE ALL ON FUNCTION flowviz_prune_events(timestamptz, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flowviz_prune_events(timestamptz, bigint, integer) TO flowviz_events;
"""

DOWNGRADE = """
DROP FUNCTION flowviz_prune_events(timestamptz, bigint, integer);
DROP TRIGGER event_outbox_append_only ON event_outbox;
CREATE TRIGGER event_outbox_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
DROP FUNCTION flowviz_outbox_guard();
DROP INDEX event_deliveries_outbox_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
