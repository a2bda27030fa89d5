"""GS1 EPCIS 2.0 JSON-LD, shared by the trace export (gateway/exports.py) and webhook deliveries
of epcis subscriptions (services/events/payloads.py), so both speak the same identifiers."""

from __future__ import annotations

from typing import Any

CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
LOT_URN = "urn:flowviz:lot:"  # an LGTIN-like class id: <product> is not a GTIN here
RUN_URN = "urn:flowviz:run:"
STREAM_URN = "urn:flowviz:stream:"
LOCATION_URN = "urn:flowviz:location:"
PARTY_URN = "urn:flowviz:party:"
# CBV business transaction types of the shipping documents flowviz records.
BIZ_TRANSACTION = {"BOL": "bol", "ASN": "desadv", "PO": "po", "INV": "inv", "DN": "desadv"}


def document(events: list[dict[str, Any]], created: str) -> dict[str, Any]:
    return {
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created,
        "epcisBody": {"eventList": events},
    }


def quantity(lot_code: str, amount: float, uom: str) -> dict[str, Any]:
    return {"epcClass": LOT_URN + lot_code, "quantity": amount, "uom": uom}
