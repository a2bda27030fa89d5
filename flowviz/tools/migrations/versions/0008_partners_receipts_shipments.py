"""Trading partners and locations (master data, the lots service's), receipts and shipments
(critical tracking events on the genealogy, the genealogy service's).

A receipt creates its lot (one receipt per lot); a shipment takes part or all of a lot. Both
are history: the database refuses to change or remove them, like audit_log.

Revision ID: 0008
Revises: 0006
"""

from alembic import op

revision = "0008"
down_revision = "0007"

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

-- Receiving (a critical tracking event): the lot it created, from whom, from where, to where,
-- under the supplier's own lot code (the traceability lot code source) and a document.
CREATE TABLE receipts (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id                bigint NOT NULL UNIQUE REFERENCES lots (id),
    supplier_id           bigint NOT NULL REFERENCES trading_partners (id),
    ship_from_location_id bigint NOT NULL REFERENCES locations (id),
    location_id           bigint NOT NULL REFERENCES locations (id),
    received_at           timestamptz NOT NULL,
    supplier_lot_code     text NOT NULL CHECK (length(supplier_lot_code) BETWEEN 1 AND 64),
    document_type         text NOT NULL CHECK (document_type IN ('PO', 'BOL', 'INVOICE', 'ASN')),
    document_number       text NOT NULL CHECK (length(document_number) BETWEEN 1 AND 100),
    expires_on            date,
    idempotency_key       text UNIQUE,
    request_hash          text,
    recorded_by           text NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);
-- Trace from the supplier's side: the supplier's lot code -> our lots.
CREATE INDEX receipts_supplier_lot_idx ON receipts (supplier_id, supplier_lot_code);

-- Shipping (a critical tracking event): part or all of a lot to a customer's location.
CREATE TABLE shipments (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot_id                bigint NOT NULL REFERENCES lots (id),
    quantity              numeric(18, 3) NOT NULL CHECK (quantity > 0),
    uom                   text NOT NULL CHECK (length(uom) BETWEEN 1 AND 16),
    customer_id           bigint NOT NULL REFERENCES trading_partners (id),
    ship_to_location_id   bigint NOT NULL REFERENCES locations (id),
    ship_from_location_id bigint NOT NULL REFERENCES locations (id),
    carrier_id            bigint REFERENCES trading_partners (id),
    shipped_at            timestamptz NOT NULL,
    document_type         text NOT NULL CHECK (document_type IN ('PO', 'BOL', 'INVOICE', 'ASN')),
    document_number       text NOT NULL CHECK (length(document_number) BETWEEN 1 AND 100),
    idempotency_key       text UNIQUE,
    request_hash          text,
    recorded_by           text NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);
-- What a lot has shipped (read under the lot's row lock, like what its children consumed).
CREATE INDEX shipments_lot_idx ON shipments (lot_id) INCLUDE (quantity, uom);
CREATE INDEX shipments_customer_idx ON shipments (customer_id, id);

CREATE TRIGGER receipts_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON receipts
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
CREATE TRIGGER shipments_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON shipments
    FOR EACH STATEMENT EXECUTE FUNCTION flowviz_refuse_change();
"""

DOWNGRADE = """
DROP TABLE shipments, receipts, locations, trading_partners;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
