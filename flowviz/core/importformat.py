"""The bulk import's CSV file formats (lots and genealogy; and partners, locations, receipts
and shipments): the contract between the importer (in the genealogy
service) and those who describe or produce its files (the gateway's OpenAPI, the generator).
A header row is required, columns in this order."""

from __future__ import annotations

LOTS_COLUMNS = ("lot_code", "kind", "product", "quantity", "uom", "produced_at")
GENEALOGY_COLUMNS = ("parent_lot_code", "child_lot_code", "quantity", "uom", "run_code")
PARTNERS_HEADER = ("code", "name", "roles", "gln", "contact_name", "contact_email", "contact_phone")
LOCATIONS_HEADER = ("code", "name", "partner_code", "gln", "address", "city", "postal_code", "country")
RECEIPTS_HEADER = (
    "lot_code", "supplier_code", "ship_from_location_code", "receiving_location_code", "received_at",
    "supplier_lot_code", "document_type", "document_number", "expires_on",
)  # fmt: skip
SHIPMENTS_HEADER = (
    "lot_code", "quantity", "uom", "customer_code", "ship_to_location_code", "ship_from_location_code",
    "carrier_code", "shipped_at", "document_type", "document_number",
)  # fmt: skip
