"""Events out (issue 16): the transactional outbox, webhook subscriptions and their deliveries.

event_outbox is append-only: producers (qc, genealogy) only INSERT into it, in the transaction of
the change an event tells of; the events service only reads it. Each row carries the id of the
transaction that wrote it (tx), so a reader can take rows in (tx, id) order up to the oldest
transaction still running and never skip one that commits late with a smaller id. No NOTIFY:
it serializes every committing transaction that sends one (measured: +42 ms P99 on a one-row
transaction at 50 connections, bench/webhook_bench.py); the dispatcher polls the index instead.

event_subscriptions, event_deliveries and event_fanout_cursor: written by the events service only.
genealogy_event_blocks and genealogy_event_cursor: written by genealogy only (what it last announced
as blocking each lot, and how far it has read the decisions it derives lot.blocked/unblocked from).
The grants say the same to the database (the roles of migration 0011, and the events service's).

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"

UPGRADE = r"""
CREATE TABLE event_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id    uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    -- Ordering key: events of one lot reach a subscriber in the order they were written.
    lot_code    text,
    -- What a subscription filters on (the lot's, when the event is of a lot).
    product     text NOT NULL DEFAULT '',
    kind        text NOT NULL DEFAULT '',
    stream_code text NOT NULL DEFAULT '',
    data        jsonb NOT NULL
);
CREATE INDEX event_outbox_tx_idx ON event_outbox (tx, id);
CREATE INDEX event_outbox_type_idx ON event_outbox (type, tx, id);
CREATE TRIGGER event_outbox_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON event_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
COMMENT ON TABLE event_outbox IS
    'append-only outbox: producers INSERT events in the transaction of the change; the events service reads';

CREATE TABLE event_subscriptions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_url  text NOT NULL,
    event_types text[] NOT NULL,
    product     text NOT NULL DEFAULT '',
    kind        text NOT NULL DEFAULT '',
    stream_code text NOT NULL DEFAULT '',
    format      text NOT NULL CHECK (format IN ('native', 'epcis')),
    -- The HMAC key itself (whsec_...): signing needs it, so it cannot be hashed.
    secret      text NOT NULL,
    paused      boolean NOT NULL DEFAULT false,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE event_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES event_subscriptions (id) ON DELETE CASCADE,
    outbox_id       bigint NOT NULL REFERENCES event_outbox (id),
    lot_code        text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Claimed by a dispatcher until then; a dispatcher that dies mid-delivery lets it lapse.
    lease_until     timestamptz,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error      text NOT NULL DEFAULT '',
    last_latency_ms double precision,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, outbox_id)
);
CREATE INDEX event_deliveries_pending_idx ON event_deliveries (subscription_id, lot_code, id)
    WHERE status = 'pending';
CREATE INDEX event_deliveries_log_idx ON event_deliveries (subscription_id, id);

CREATE TABLE event_fanout_cursor (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    tx  xid8 NOT NULL,
    id  bigint NOT NULL
);
INSERT INTO event_fanout_cursor (tx, id) VALUES ('0', 0);

CREATE TABLE genealogy_event_blocks (
    lot_id          bigint NOT NULL REFERENCES lots (id),
    blocking_lot_id bigint NOT NULL REFERENCES lots (id),
    PRIMARY KEY (lot_id, blocking_lot_id)
);
CREATE INDEX genealogy_event_blocks_blocking_idx ON genealogy_event_blocks (blocking_lot_id);
CREATE TABLE genealogy_event_cursor (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    tx  xid8 NOT NULL,
    id  bigint NOT NULL
);
INSERT INTO genealogy_event_cursor (tx, id) VALUES ('0', 0);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'flowviz_events') THEN
        CREATE ROLE flowviz_events NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
END;
$$;
GRANT USAGE ON SCHEMA public TO flowviz_events;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO flowviz_events;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO flowviz_events;
GRANT INSERT ON event_outbox TO flowviz_qc, flowviz_genealogy;
GRANT INSERT, DELETE ON genealogy_event_blocks TO flowviz_genealogy;
GRANT INSERT, UPDATE ON genealogy_event_cursor TO flowviz_genealogy;
GRANT INSERT ON audit_log TO flowviz_events;
GRANT INSERT, UPDATE, DELETE ON event_subscriptions, event_deliveries TO flowviz_events;
GRANT INSERT, UPDATE ON event_fanout_cursor TO flowviz_events;
"""

DOWNGRADE = """
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM flowviz_events;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM flowviz_events;
REVOKE USAGE ON SCHEMA public FROM flowviz_events;
DROP TABLE genealogy_event_cursor;
DROP TABLE genealogy_event_blocks;
DROP TABLE event_fanout_cursor;
DROP TABLE event_deliveries;
DROP TABLE event_subscriptions;
DROP TABLE event_outbox;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
