"""What a delivery's body is: the event as flowviz JSON (native), or as a GS1 EPCIS 2.0 JSON-LD
document holding the EPCIS event of the run, shipment or QC observation that caused it (epcis),
with the identifiers of the trace export (flowviz/core/epcis.py). eventID is the event's id, so
a receiver can match a document to the webhook-id it came under."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from flowviz.core import epcis, outbox

# CBV dispositions: what a lot's QC state means for its use.
DISPOSITION = {
    "pass": "conformant",
    "release": "conformant",
    "hold": "non_sellable_other",
    "reject": "non_conformant",
}


def native(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["event_id"],
        "type": row["type"],
        "timestamp": row["occurred_at"].isoformat(),
        "actor": row["actor"],
        "lot_code": row["lot_code"],
        "data": orjson.loads(row["data"]),
    }


def _base(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "eventID": f"urn:uuid:{event['id']}",
        "eventTime": event["timestamp"],
        "eventTimeZoneOffset": "+00:00",
    }


def _run(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    found = _base("TransformationEvent", event)
    found.update(
        inputQuantityList=[
            epcis.quantity(epcis.lot_uri(i["lot_code"], i.get("product", "")), i["quantity"], i["uom"])
            for i in data["inputs"]
        ],
        outputQuantityList=[
            epcis.quantity(epcis.lot_uri(o["lot_code"], o.get("product", "")), o["quantity"], o["uom"])
            for o in data["outputs"]
        ],
        bizStep="commissioning",  # as the trace export (CBV 2.0: the outputs come into being)
        transformationID=epcis.RUN + data["run_code"],
        bizTransactionList=[{"type": "prodorder", "bizTransaction": epcis.RUN + data["run_code"]}],
    )
    if data.get("stream_code"):
        found["bizLocation"] = {"id": epcis.STREAM + data["stream_code"]}
    return found


def _shipment(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    found = _base("ObjectEvent", event)
    found.update(
        action="OBSERVE",
        bizStep="shipping",
        disposition="in_transit",
        quantityList=[
            epcis.quantity(
                epcis.lot_uri(data["lot_code"], data.get("product", "")), data["quantity"], data["uom"]
            )
        ],
        readPoint={"id": epcis.LOCATION + data["ship_from_location_code"]},
        sourceList=[{"type": "location", "source": epcis.LOCATION + data["ship_from_location_code"]}],
        destinationList=[
            {"type": "location", "destination": epcis.LOCATION + data["ship_to_location_code"]},
            {"type": "owning_party", "destination": epcis.PARTY + data["customer_code"]},
        ],
        bizTransactionList=[
            {
                "type": epcis.BT_TYPE.get(data["document_type"], "desadv"),
                "bizTransaction": f"urn:flowviz:document:{data['document_type']}:{data['document_number']}",
            }
        ],
    )
    return found


def _decision(event: dict[str, Any]) -> dict[str, Any]:
    decision = event["data"]["decision"]
    found = _base("ObjectEvent", event)
    found.update(
        action="OBSERVE",
        bizStep="inspecting",
        disposition=DISPOSITION[decision["decision"]],
        epcList=[],
        quantityList=[{"epcClass": epcis.LOT + decision["lot_code"]}],
    )
    return found


def _lot_state(blocked: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def render(event: dict[str, Any]) -> dict[str, Any]:
        found = _base("ObjectEvent", event)
        found.update(
            action="OBSERVE",
            bizStep="holding" if blocked else "inspecting",
            disposition="non_sellable_other" if blocked else "sellable_accessible",
            epcList=[],
            quantityList=[{"epcClass": epcis.LOT + event["lot_code"]}],
        )
        return found

    return render


EPCIS_EVENT: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    outbox.RUN_RECORDED: _run,
    outbox.SHIPMENT_RECORDED: _shipment,
    outbox.QC_DECISION_RECORDED: _decision,
    outbox.LOT_BLOCKED: _lot_state(True),
    outbox.LOT_UNBLOCKED: _lot_state(False),
}


def render(row: asyncpg.Record, fmt: str) -> bytes:
    event = native(row)
    if fmt != "epcis":
        return orjson.dumps(event)
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return orjson.dumps(epcis.document([EPCIS_EVENT[event["type"]](event)], created))
