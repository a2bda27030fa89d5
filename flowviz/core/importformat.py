"""The bulk import's CSV file formats: the contract between the importer (in the genealogy
service) and those who describe or produce its files (the gateway's OpenAPI, the generator).
A header row is required, columns in this order."""

from __future__ import annotations

LOTS_COLUMNS = ("lot_code", "kind", "product", "quantity", "uom", "produced_at")
GENEALOGY_COLUMNS = ("parent_lot_code", "child_lot_code", "quantity", "uom", "run_code")
