"""The seed's nine tables, with keys, constraints and the indexes the traces need.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None

UPGRADE = r"""
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9_.-]{1,64}$'),
    display_name  text NOT NULL DEFAULT '',
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'qc', 'admin')),
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE streams (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 64),
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE phases (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id  bigint NOT NULL REFERENCES streams (id),
    code       text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
    name       text NOT NULL,
    seq        integer NOT NULL CHECK (seq > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, code),
    UNIQUE (stream_id, seq)
);

CREATE TABLE lots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_code    text NOT NULL CHECK (length(lot_code) BETWEEN 1 AND 64),
    kind        text NOT NULL CHECK (kind ~ '^[A-Z][A-Z0-9_]{0,15}$'),
    product     text NOT NULL,
    quantity    numeric(18, 3) NOT NULL CHECK (quantity >= 0),
    uom         text NOT NULL CHECK (length(uom) BETWEEN 1 AND 16),
    stream_id   bigint REFERENCES streams (id),
    produced_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lots_lot_code_key UNIQUE (lot_code)
);
CREATE INDEX lots_kind_idx ON lots (kind, id);

CREATE TABLE production_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_code        text NOT NULL UNIQUE CHECK (length(run_code) BETWEEN 1 AND 64),
    stream_id       bigint REFERENCES streams (id),
    phase_id        bigint REFERENCES phases (id),
    operator        text NOT NULL DEFAULT '',
    started_at      timestamptz,
    ended_at        timestamptz,
    idempotency_key text UNIQUE,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at)
);

-- One edge: quantity of the parent lot consumed into the child lot.
CREATE TABLE lot_genealogy (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_lot_id bigint NOT NULL REFERENCES lots (id),
    child_lot_id  bigint NOT NULL REFERENCES lots (id),
    quantity      numeric(18, 3) NOT NULL CHECK (quantity > 0),
    uom           text NOT NULL CHECK (length(uom) BETWEEN 1 AND 16),
    run_id        bigint REFERENCES production_runs (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lot_genealogy_not_self CHECK (parent_lot_id <> child_lot_id)
);
-- Both ends indexed, covering the columns a trace reads so walks stay index-only.
CREATE INDEX lot_genealogy_parent_idx ON lot_genealogy (parent_lot_id)
    INCLUDE (child_lot_id, quantity, uom, run_id);
CREATE INDEX lot_genealogy_child_idx ON lot_genealogy (child_lot_id)
    INCLUDE (parent_lot_id, quantity, uom, run_id);
CREATE UNIQUE INDEX lot_genealogy_edge_key
    ON lot_genealogy (parent_lot_id, child_lot_id, COALESCE(run_id, 0));

CREATE TABLE qc_gates (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 64),
    name        text NOT NULL,
    phase_id    bigint NOT NULL REFERENCES phases (id),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only: a correction is a new row naming the one it supersedes.
CREATE TABLE qc_decisions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id        bigint NOT NULL REFERENCES lots (id),
    gate_id       bigint REFERENCES qc_gates (id),
    decision      text NOT NULL CHECK (decision IN ('pass', 'hold', 'release', 'reject')),
    reason        text NOT NULL DEFAULT '',
    decided_by    bigint NOT NULL REFERENCES users (id),
    decided_at    timestamptz NOT NULL DEFAULT now(),
    supersedes_id bigint REFERENCES qc_decisions (id),
    CHECK (decision = 'pass' OR length(reason) > 0)
);
CREATE INDEX qc_decisions_lot_idx ON qc_decisions (lot_id, id DESC);

-- A mock-recall drill: the full answer frozen as it was when it ran.
CREATE TABLE scenarios (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    root_lot_id bigint NOT NULL REFERENCES lots (id),
    created_by  bigint NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL DEFAULT 0,
    snapshot    jsonb NOT NULL
);
"""

DOWNGRADE = """
DROP TABLE scenarios, qc_decisions, qc_gates, lot_genealogy, production_runs, lots, phases, streams, users;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
