"""Trading partners and locations (master data, the lots service's), receipts and shipments
(critical tracking events on the genealogy, the genealogy service's).

A receipt creates its lot (one receipt per lot); a shipment takes part or all of a lot. Both
are history: the database refuses to change or remove them, like audit_log.

Revision ID: 0008
Revises: 0006
"""

from alembic import op

revision = "0008"
down_revision = "0006"

UPGRADE = r"""
CREATE TABLE trading_partners (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code          text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 64),
    name          text NOT NULL,
    -- supplier, customer, carrier: one or more.
    roles         text[] NOT NULL CHECK (cardinality(roles) > 0
                      AND roles <@ ARRAY['supplier', 'customer', 'carrier']),
    gln           text UNIQUE CHECK (gln ~ '^[0-9]{13}$'),
    contact_name  text NOT NULL DEFAULT '',
    contact_email text NOT NULL DEFAULT '',
    contact_phone text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Our own sites and warehouses (partner_id NULL) and our partners' sites.
CREATE TABLE locations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 64),
    name        text NOT NULL,
    partner_id  bigint REFERENCES trading_partners (id),
    gln         text UNIQUE CHECK (gln ~ '^[0-9]{13}$'),
    address     text NOT NULL DEFAULT '',
    city        text NOT NULL DEFAULT '',
    postal_code text NOT NULL DEFAULT '',
    country     text NOT NULL DEFAULT '' CHECK (country ~ '^([A-Z]{2})?$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX locations_partner_idx ON locations (partner_id, id) WHERE partner_id IS NOT NULL;
"""

DOWNGRADE = """
DROP TABLE locations, trading_partners;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
