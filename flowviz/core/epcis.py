"""GS1 EPCIS 2.0 identifiers and units, one set for everything flowviz renders or reads as
EPCIS: the genealogy service's exports and capture (services/genealogy/epcis.py, capture.py) and
the events service's webhook documents (services/events/payloads.py). GS1 Digital Link URIs
(LGTIN, SGLN, PGLN) where a GTIN or GLN is known, stable flowviz URNs otherwise."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from flowviz.core import validation

CONTEXT = "https://ref.gs1.org/standards/epcis/epcis-context.jsonld"
# UN/ECE Recommendation 20 common codes of flowviz's units.
REC20 = {"kg": "KGM", "g": "GRM", "lb": "LBR", "t": "TNE", "l": "LTR", "ml": "MLT", "ea": "EA"}
UNIT_OF_REC20 = {v: k for k, v in REC20.items()}
# CBV 2.0 business transaction types of flowviz's document types (ASN: despatch advice).
BT_TYPE = {"PO": "po", "BOL": "bol", "INVOICE": "inv", "ASN": "desadv"}
DOC_TYPE_OF_BT = {v: k for k, v in BT_TYPE.items()}
DL = "https://id.gs1.org/"
LOT = "urn:flowviz:lot:"
LOCATION = "urn:flowviz:location:"
PARTY = "urn:flowviz:party:"
DOCUMENT = "urn:flowviz:document:"
RUN = "urn:flowviz:run:"
STREAM = "urn:flowviz:stream:"
CBV_BT = "urn:epcglobal:cbv:bt:"


def document(events: list[dict[str, Any]], created: str) -> dict[str, Any]:
    return {
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": created,
        "epcisBody": {"eventList": events},
    }


def quantity(uri: str, amount: float, uom: str) -> dict[str, Any]:
    """A quantity element: the class `uri`, the amount in the unit's UN/ECE Rec 20 code."""
    return {"epcClass": uri, "quantity": amount, "uom": REC20[uom]}


def gtin(product: str) -> str | None:
    """The product as a GTIN-14 when it is a GTIN (8, 12, 13 or 14 digits, check digit right)."""
    digits = product.isdigit() and len(product) in (8, 12, 13, 14)
    if digits and validation.gs1_check_digit(product[:-1]) == int(product[-1]):
        return product.zfill(14)
    return None


def uri_part(value: str) -> str:
    """A code as it goes into a URI (percent-encoded whole)."""
    return quote(value, safe="")


def lot_uri(lot_code: str, product: str) -> str:
    found = gtin(product)
    if found is not None:
        return f"{DL}01/{found}/10/{uri_part(lot_code)}"
    return LOT + uri_part(lot_code)


def location_uri(code: str, gln: str | None) -> str:
    return f"{DL}414/{gln}" if gln else LOCATION + uri_part(code)


def party_uri(code: str, gln: str | None) -> str:
    return f"{DL}417/{gln}" if gln else PARTY + uri_part(code)


def document_uri(doc_type: str, number: str, partner_gln: str | None) -> str:
    if partner_gln:
        return f"{CBV_BT}{partner_gln}:{uri_part(number)}"
    return f"{DOCUMENT}{doc_type.lower()}:{uri_part(number)}"


def lot_code_of(uri: str) -> str | None:
    """The lot code an epcClass names (ours or an LGTIN), or None."""
    if uri.startswith(LOT):
        return unquote(uri[len(LOT) :])
    if uri.startswith(DL + "01/"):
        parts = uri[len(DL) :].split("/")
        if len(parts) == 4 and parts[2] == "10":
            return unquote(parts[3])
    return None


def document_number_of(uri: str) -> str | None:
    if uri.startswith(CBV_BT):
        return unquote(uri[len(CBV_BT) :].split(":", 1)[-1])
    if uri.startswith(DOCUMENT):
        return unquote(uri[len(DOCUMENT) :].split(":", 1)[-1])
    return None
