"""GS1 EPCIS 2.0 JSON-LD of the genealogy: receipts and shipments as ObjectEvents (bizStep
receiving / shipping, with source and destination lists and business transactions), production
runs as TransformationEvents, in CBV 2.0 vocabulary, quantities in UN/ECE Recommendation 20
units. Checked against GS1's EPCIS 2.0 JSON Schema (tests/test_epcis.py).

Identifiers (the GS1 Digital Link forms EPCIS 2.0 accepts beside EPC URNs; the URN forms need
the GS1 company prefix length, which flowviz does not know):
- a lot whose product is a GTIN: its LGTIN, https://id.gs1.org/01/{GTIN-14}/10/{lot code};
  else urn:flowviz:lot:{lot code};
- a location with a GLN: its SGLN, https://id.gs1.org/414/{GLN}; else urn:flowviz:location:{code};
- a trading partner with a GLN: its PGLN, https://id.gs1.org/417/{GLN}; else urn:flowviz:party:{code};
- a document: urn:epcglobal:cbv:bt:{GLN of the partner}:{number} when the partner has a GLN (CBV
  2.0 8.5), else urn:flowviz:document:{type}:{number}; a run: urn:flowviz:run:{run code}.
Codes are percent-encoded in the URNs. What EPCIS events do not carry (a lot's product and kind,
the supplier's lot code, the expiry date; names and addresses of locations) is master data in
the document's header (epcisMasterData), so a captured document rebuilds the same genealogy.
So are a lot's QC decisions with their electronic signatures (signer, name, time, meaning): one
`urn:flowviz:mda#qcDecision` attribute each, its fields under the `flowviz:` prefix that the
document's @context declares (an EPCIS 2.0 user extension; capture ignores them).

Streamed from one query (a row per receipt, shipment and run edge, in event order) in pieces;
the master data of what the events named follows the body (JSON keys have no order)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from flowviz.core.db import Conn
from flowviz.core.epcis import (
    BT_TYPE,
    CONTEXT,
    RUN,
    STREAM,
    document_uri,
    location_uri,
    lot_uri,
    party_uri,
    quantity,
    uri_part,
)
from services.genealogy import qc_history

# Master data: CBV 2.0 attributes, and flowviz's own where CBV has none.
VTYPE_CLASS = "urn:epcglobal:epcis:vtype:EPCClass"
VTYPE_LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
MDA = "urn:epcglobal:cbv:mda#"
FLOWVIZ_MDA = "urn:flowviz:mda#"
PIECE = 64 * 1024
FETCH = 2000


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# $1 products (NULL: any), $2/$3 lot code range (NULL: open), $4/$5 [since, until), $6 lot ids
# (NULL: any). One row per receipt (k 1), run edge (k 2) and shipment (k 3), in event order; a
# run's rows come together. A run is in when an output or an input is of the request.
# A lot is in a lot code range by our code or by the supplier's (its traceability lot code), as
# in the FSMA 204 spreadsheet.
_IN_RANGE = """
((($2::text IS NULL OR l.lot_code >= $2) AND ($3::text IS NULL OR l.lot_code <= $3))
 OR ($2::text IS NOT NULL OR $3::text IS NOT NULL) AND EXISTS (
    SELECT 1 FROM receipts rr WHERE rr.lot_id = l.id
    AND ($2::text IS NULL OR rr.supplier_lot_code >= $2) AND ($3::text IS NULL OR rr.supplier_lot_code <= $3)))
AND ($6::bigint[] IS NULL OR l.id = ANY($6::bigint[]))
"""
_LOT_MATCHES = f"($1::text[] IS NULL OR l.product = ANY($1::text[])) AND {_IN_RANGE}"
_RUN_AT = "COALESCE(pr.ended_at, pr.started_at, pr.created_at, l.produced_at, l.created_at)"
_COLUMNS = """k, at, id, lot_id, lot_code, product, quantity, uom, doc_type, doc_number, partner_code,
partner_gln, from_code, from_gln, to_code, to_gln, carrier_code, carrier_gln, run_code, stream_code, phase_code,
in_lot_id, in_lot_code, in_product, in_quantity, in_uom"""
QUERY = f"""
SELECT {_COLUMNS} FROM (
    SELECT 1 AS k, r.received_at AS at, r.id, l.id AS lot_id, l.lot_code, l.product, l.quantity::float8 AS quantity,
           l.uom, r.document_type AS doc_type, r.document_number AS doc_number, s.code AS partner_code,
           s.gln AS partner_gln, f.code AS from_code, f.gln AS from_gln, t.code AS to_code, t.gln AS to_gln,
           NULL::text AS carrier_code, NULL::text AS carrier_gln, '' AS run_code, '' AS stream_code,
           '' AS phase_code, NULL::bigint AS in_lot_id, '' AS in_lot_code, '' AS in_product,
           NULL::float8 AS in_quantity, '' AS in_uom
    FROM receipts r JOIN lots l ON l.id = r.lot_id JOIN trading_partners s ON s.id = r.supplier_id
    JOIN locations f ON f.id = r.ship_from_location_id JOIN locations t ON t.id = r.location_id
    WHERE r.received_at >= $4 AND r.received_at < $5 AND {_LOT_MATCHES}
  UNION ALL
    SELECT 2, {_RUN_AT}, e.id, l.id, l.lot_code, l.product, l.quantity::float8, l.uom, '', '', NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, COALESCE(pr.run_code, ''), COALESCE(st.code, ''), COALESCE(ph.code, ''),
           p.id, p.lot_code, p.product, e.quantity::float8, e.uom
    FROM lot_genealogy e JOIN lots l ON l.id = e.child_lot_id JOIN lots p ON p.id = e.parent_lot_id
    LEFT JOIN production_runs pr ON pr.id = e.run_id LEFT JOIN streams st ON st.id = pr.stream_id
    LEFT JOIN phases ph ON ph.id = pr.phase_id
    WHERE {_RUN_AT} >= $4 AND {_RUN_AT} < $5
      AND (($1::text[] IS NULL OR l.product = ANY($1::text[]) OR EXISTS (
              SELECT 1 FROM lot_genealogy e2 JOIN lots p2 ON p2.id = e2.parent_lot_id
              WHERE e2.child_lot_id = l.id AND p2.product = ANY($1::text[])))
           AND {_IN_RANGE})
  UNION ALL
    SELECT 3, sh.shipped_at, sh.id, l.id, l.lot_code, l.product, sh.quantity::float8, sh.uom, sh.document_type,
           sh.document_number, c.code, c.gln, f.code, f.gln, t.code, t.gln, k.code, k.gln, '', '', '', NULL, '', '',
           NULL, ''
    FROM shipments sh JOIN lots l ON l.id = sh.lot_id JOIN trading_partners c ON c.id = sh.customer_id
    JOIN locations f ON f.id = sh.ship_from_location_id JOIN locations t ON t.id = sh.ship_to_location_id
    LEFT JOIN trading_partners k ON k.id = sh.carrier_id
    WHERE sh.shipped_at >= $4 AND sh.shipped_at < $5 AND {_LOT_MATCHES}
) ev
ORDER BY at, k, CASE WHEN run_code = '' THEN lot_code ELSE run_code END, lot_code, in_lot_code, id
"""
LOTS = """
SELECT l.lot_code, l.product, l.kind, r.supplier_lot_code, r.expires_on
FROM lots l LEFT JOIN receipts r ON r.lot_id = l.id WHERE l.id = ANY($1::bigint[]) ORDER BY l.lot_code
"""
LOCATIONS = """
SELECT code, gln, name, address, city, postal_code, country FROM locations WHERE code = ANY($1::text[]) ORDER BY code
"""


class Seen:
    """What the events named, for the master data that follows them."""

    def __init__(self) -> None:
        self.lots: set[int] = set()
        self.locations: set[str] = set()


def receipt_event(r: asyncpg.Record, seen: Seen) -> dict[str, Any]:
    seen.lots.add(r["lot_id"])
    seen.locations.update((r["from_code"], r["to_code"]))
    here = location_uri(r["to_code"], r["to_gln"])
    return {
        "type": "ObjectEvent",
        "eventTime": _time(r["at"]),
        "eventTimeZoneOffset": "+00:00",
        "eventID": f"urn:flowviz:receipt:{r['id']}",
        "action": "OBSERVE",
        "bizStep": "receiving",
        "disposition": "in_progress",
        "quantityList": [quantity(lot_uri(r["lot_code"], r["product"]), r["quantity"], r["uom"])],
        "readPoint": {"id": here},
        "bizLocation": {"id": here},
        "bizTransactionList": [
            {
                "type": BT_TYPE[r["doc_type"]],
                "bizTransaction": document_uri(r["doc_type"], r["doc_number"], r["partner_gln"]),
            }
        ],
        "sourceList": [
            {"type": "owning_party", "source": party_uri(r["partner_code"], r["partner_gln"])},
            {"type": "location", "source": location_uri(r["from_code"], r["from_gln"])},
        ],
        "destinationList": [{"type": "location", "destination": here}],
    }


def shipment_event(r: asyncpg.Record, seen: Seen) -> dict[str, Any]:
    seen.lots.add(r["lot_id"])
    seen.locations.update((r["from_code"], r["to_code"]))
    here = location_uri(r["from_code"], r["from_gln"])
    destinations = [
        {"type": "owning_party", "destination": party_uri(r["partner_code"], r["partner_gln"])},
        {"type": "location", "destination": location_uri(r["to_code"], r["to_gln"])},
    ]
    if r["carrier_code"]:  # in the carrier's hands from here (CBV possessing party)
        destinations.append(
            {"type": "possessing_party", "destination": party_uri(r["carrier_code"], r["carrier_gln"])}
        )
    return {
        "type": "ObjectEvent",
        "eventTime": _time(r["at"]),
        "eventTimeZoneOffset": "+00:00",
        "eventID": f"urn:flowviz:shipment:{r['id']}",
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        "quantityList": [quantity(lot_uri(r["lot_code"], r["product"]), r["quantity"], r["uom"])],
        "readPoint": {"id": here},
        "bizLocation": {"id": here},
        "bizTransactionList": [
            {
                "type": BT_TYPE[r["doc_type"]],
                "bizTransaction": document_uri(r["doc_type"], r["doc_number"], r["partner_gln"]),
            }
        ],
        "sourceList": [{"type": "location", "source": here}],
        "destinationList": destinations,
    }


def transformation_event(rows: list[asyncpg.Record], seen: Seen) -> dict[str, Any]:
    """A production run (or an edge recorded without one): inputs consumed, outputs produced."""
    head = rows[0]
    inputs: dict[tuple[str, str], dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.lots.update((r["lot_id"], r["in_lot_id"]))
        uri = lot_uri(r["in_lot_code"], r["in_product"])
        # What a run took of an input, over all its outputs (per unit, if they differ).
        item = inputs.setdefault((uri, r["in_uom"]), quantity(uri, 0.0, r["in_uom"]))
        item["quantity"] += r["in_quantity"]
        out = lot_uri(r["lot_code"], r["product"])
        outputs[out] = quantity(out, r["quantity"], r["uom"])
    event: dict[str, Any] = {
        "type": "TransformationEvent",
        "eventTime": _time(head["at"]),
        "eventTimeZoneOffset": "+00:00",
        "inputQuantityList": list(inputs.values()),
        "outputQuantityList": list(outputs.values()),
        "bizStep": "commissioning",
        "disposition": "active",
    }
    if head["run_code"]:
        run = RUN + uri_part(head["run_code"])
        event["eventID"] = f"urn:flowviz:run-event:{uri_part(head['run_code'])}"
        event["transformationID"] = run
        event["bizTransactionList"] = [{"type": "prodorder", "bizTransaction": run}]
    if head["stream_code"]:
        stream = STREAM + uri_part(head["stream_code"])
        event["bizLocation"] = {"id": stream}
        if head["phase_code"]:
            event["readPoint"] = {"id": f"{stream}:phase:{uri_part(head['phase_code'])}"}
    return event


def _group(row: asyncpg.Record) -> tuple[int, str, datetime]:
    if row["k"] != 2:
        return row["k"], str(row["id"]), row["at"]
    return 2, row["run_code"] or f"lot:{row['lot_code']}", row["at"]


async def events(conn: Conn, args: Iterable[Any], seen: Seen) -> AsyncIterator[dict[str, Any]]:
    """The events in order, as JSON-ready dicts (a run's rows made into one TransformationEvent)."""
    group: list[asyncpg.Record] = []
    cursor = await conn.cursor(QUERY, *args)
    while rows := await cursor.fetch(FETCH):
        for row in rows:
            if group and _group(row)[:2] != _group(group[0])[:2]:
                yield transformation_event(group, seen)
                group = []
            if row["k"] == 2:
                group.append(row)
            elif row["k"] == 1:
                yield receipt_event(row, seen)
            else:
                yield shipment_event(row, seen)
    if group:
        yield transformation_event(group, seen)


def qc_decision(row: asyncpg.Record) -> dict[str, Any]:
    """A QC decision as a lot's master data attribute value (keys under the flowviz: prefix)."""
    value: dict[str, Any] = {
        "flowviz:decisionID": row["decision_id"],
        "flowviz:decision": row["decision"],
        "flowviz:reason": row["reason"],
        "flowviz:decidedBy": row["decided_by"],
        "flowviz:decidedAt": _time(row["decided_at"]),
    }
    if row["signed_at"] is not None:
        value["flowviz:signature"] = {
            "flowviz:signer": row["signer"],
            "flowviz:signerName": row["signer_name"],
            "flowviz:signedAt": _time(row["signed_at"]),
            "flowviz:meaning": row["signature_meaning"],
        }
    return value


async def master_data(conn: Conn, seen: Seen) -> dict[str, Any]:
    lots = await conn.fetch(LOTS, sorted(seen.lots))
    places = await conn.fetch(LOCATIONS, sorted(seen.locations))
    decisions: dict[str, list[tuple[str, Any]]] = {}
    for d in await qc_history.of_lot_ids(conn, sorted(seen.lots)):
        decisions.setdefault(d["lot_code"], []).append((FLOWVIZ_MDA + "qcDecision", qc_decision(d)))

    def attributes(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": key, "attribute": value} for key, value in pairs if value not in (None, "")]

    classes = [
        {
            "id": lot_uri(r["lot_code"], r["product"]),
            "attributes": attributes(
                [
                    (MDA + "descriptionShort", r["product"]),
                    (FLOWVIZ_MDA + "lotCode", r["lot_code"]),
                    (FLOWVIZ_MDA + "kind", r["kind"]),
                    (FLOWVIZ_MDA + "supplierLotCode", r["supplier_lot_code"]),
                    (MDA + "itemExpirationDate", r["expires_on"].isoformat() if r["expires_on"] else None),
                    *decisions.get(r["lot_code"], []),
                ]
            ),
        }
        for r in lots
    ]
    locations = [
        {
            "id": location_uri(r["code"], r["gln"]),
            "attributes": attributes(
                [
                    (MDA + "name", r["name"]),
                    (FLOWVIZ_MDA + "code", r["code"]),
                    (MDA + "streetAddressOne", r["address"]),
                    (MDA + "city", r["city"]),
                    (MDA + "postalCode", r["postal_code"]),
                    (MDA + "countryCode", r["country"]),
                ]
            ),
        }
        for r in places
    ]
    return {
        "epcisMasterData": {
            "vocabularyList": [
                {"type": VTYPE_CLASS, "vocabularyElementList": classes},
                {"type": VTYPE_LOCATION, "vocabularyElementList": locations},
            ]
        }
    }


async def render(
    pool: asyncpg.Pool, args: tuple[Any, ...], lot_ids: list[int] | None = None
) -> AsyncIterator[bytes]:
    """The document in pieces of about 64 KiB."""
    now = _time(datetime.now(UTC))
    piece = bytearray(
        b'{"@context":' + orjson.dumps([CONTEXT, {"flowviz": FLOWVIZ_MDA}]) + b',"type":"EPCISDocument",'
        b'"schemaVersion":"2.0","creationDate":"' + now.encode() + b'","epcisBody":{"eventList":['
    )
    seen = Seen()
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        separator = b""
        async for event in events(conn, (*args, lot_ids), seen):
            piece += separator + orjson.dumps(event)
            separator = b","
            if len(piece) >= PIECE:
                yield bytes(piece)
                piece.clear()
        piece += b']},"epcisHeader":' + orjson.dumps(await master_data(conn, seen)) + b"}"
    yield bytes(piece)
