"""The gateway's routes as data, one table for every /api route: each names the RPC it calls,
where the request fields come from (path, query, JSON body, headers), who may call it without a
token, and what it answers: JSON from one reply, bytes the service renders (streamed), or, for
the two uploads, what their own handlers send on. The Starlette routes (gateway/app.py) and the
whole OpenAPI document (gateway/openapi.py) are generated from this table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from flowviz.core import auth
from flowviz.core.protojson import dumps, to_json
from flowviz.events.v1 import events_pb2
from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2

SERVICES = {
    "lots": lots_pb2.DESCRIPTOR.services_by_name["LotsService"],
    "genealogy": genealogy_pb2.DESCRIPTOR.services_by_name["GenealogyService"],
    "qc": qc_pb2.DESCRIPTOR.services_by_name["QcService"],
    "events": events_pb2.DESCRIPTOR.services_by_name["EventsService"],
}
PAGE = ("page_size", "page_token")
CSV = "text/csv"
JSONLD = "application/ld+json"

# What a route answers and how its request arrives:
#   json      one RPC, its request from path, query, JSON body and headers; its reply as JSON
#   bytes     a server-streaming RPC of RenderedChunk (an export the service renders), relayed
#   upload    multipart files streamed on to a client-streaming RPC (the bulk import)
#   document  the body sent on whole as one field (an EPCIS document to capture)
Kind = Literal["json", "bytes", "upload", "document"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    upstream: str
    rpc: str
    summary: str
    tag: str
    status: int = 200
    body: bool = False
    # Query parameters (their HTTP names; the field of each is in `fields` when it differs).
    query: tuple[str, ...] = ()
    # HTTP header -> request field.
    headers: dict[str, str] = field(default_factory=dict)
    # Reply fields whose messages carry a `lot` that is merged into them in the JSON.
    flatten: frozenset[str] = frozenset()
    # Reply -> HTTP status when it depends on the reply.
    status_of: Callable[[Any], int] | None = None
    errors: tuple[int, ...] = (400, 404)
    # No token needed (the login itself).
    public: bool = False
    # Body fields that must be present (the gateway refuses the request without them).
    required: tuple[str, ...] = ()
    # Long reads: if the client leaves, the call (and its database query) is cancelled.
    cancellable: bool = False
    kind: Kind = "json"
    # bytes: the media type the rendering has (documented; the service names the exact one).
    media_type: str = ""
    # Request fields the route sets itself (the export format a path stands for).
    fixed: dict[str, int] = field(default_factory=dict)
    # Query parameter -> request field, where the HTTP name is not the field's.
    fields: dict[str, str] = field(default_factory=dict)
    # Query parameters that must be given.
    required_query: tuple[str, ...] = ()
    # Parameter -> its schema, where what HTTP takes is not the field's own rule (a time range
    # bound is a date or an RFC 3339 time), and -> a sentence for people.
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    # upload, document: the statuses whose body is the reply (else an Error), with what each means;
    # what the body is (document).
    replies: dict[int, str] = field(default_factory=dict)
    body_note: str = ""
    # upload: the roles checked before a byte of the body is read (the service checks them too).
    roles: tuple[str, ...] = ()
    # The call's deadline in FLOWVIZ_RPC_TIMEOUT.
    timeouts: float = 1.0
    # The OpenAPI operationId, where the RPC serves more than one route (the exports).
    name: str = ""

    @property
    def operation_id(self) -> str:
        return self.name or self.rpc

    @cached_property
    def input(self) -> Descriptor:
        return SERVICES[self.upstream].methods_by_name[self.rpc].input_type

    @cached_property
    def output(self) -> Descriptor:
        return SERVICES[self.upstream].methods_by_name[self.rpc].output_type

    @cached_property
    def request_class(self) -> type[Message]:
        return GetMessageClass(self.input)

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def field_of(self, parameter: str) -> str:
        return self.fields.get(parameter, parameter)

    def render(self, reply: Message) -> Any:
        return to_json(reply, self.flatten)

    def render_bytes(self, reply: Message) -> bytes:
        """The JSON of a large answer, encoded in parts (flowviz.core.protojson.dumps)."""
        return dumps(reply, self.flatten)


# The time range and the lot code range of the request-scoped exports (FSMA 204, EPCIS).
_WHEN = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
_RANGE_CODE = {"type": "string", "pattern": r"^[^\x00-\x1f]*$", "maxLength": 64}
RANGE_NOTES = {
    "product": "a product (repeat for a list); none: every product",
    "from": "start of the time range: a date (YYYY-MM-DD) or an RFC 3339 time; before `to` (400 "
    "TIME_RANGE_INVALID)",
    "to": "end of the time range: a date (inclusive) or an RFC 3339 time (exclusive)",
    "lot_code_from": "lowest traceability lot code (or lot code) of the range; not after `lot_code_to` "
    "(400 LOT_CODE_RANGE_INVALID)",
    "lot_code_to": "highest traceability lot code (or lot code) of the range",
}


def lot_export(name: str, path: str, summary: str, media_type: str, fmt: int) -> Route:
    """One lot's trace rendered by the genealogy service (RenderExport in a format), relayed."""
    return Route("GET", path, "genealogy", "RenderExport", summary, "traceability", query=("direction",),
                 kind="bytes", media_type=media_type, fixed={"format": fmt}, timeouts=12, name=name)  # fmt: skip


def range_export(
    name: str, path: str, summary: str, media_type: str, fmt: int, errors: tuple[int, ...]
) -> Route:
    """Every event of the products and/or lot code range in a time range, rendered and relayed."""
    return Route(
        "GET", path, "genealogy", "RenderExport", summary, "traceability", errors=errors, kind="bytes",
        media_type=media_type, fixed={"format": fmt}, timeouts=12,
        query=("product", "from", "to", "lot_code_from", "lot_code_to"),
        fields={"product": "products", "from": "since", "to": "until"}, required_query=("from", "to"),
        shapes={"from": _WHEN, "to": _WHEN, "lot_code_from": _RANGE_CODE, "lot_code_to": _RANGE_CODE},
        notes=RANGE_NOTES, name=name,
    )  # fmt: skip


# Who may upload (the genealogy service's policy for ImportGenealogy says the same; a test checks).
UPLOAD_ROLES = auth.OPERATE
IMPORT_MODE_NOTE = (
    "strict (default): a row that breaks a production-run rule refuses the import; historical "
    "(admin): loads the data as it was, each rule let through a warning, an audit row and the mass-balance flag "
    "HISTORICAL_IMPORT"
)


API: list[Route] = [
    Route("POST", "/api/auth/token", "lots", "IssueToken",
             "Exchange a username and password for a short-lived bearer token", "auth", required=("username", "password"), body=True,
             errors=(400, 429), public=True),
    Route("POST", "/api/auth/refresh", "lots", "RefreshToken",
             "A new token for the caller's still-valid one, without the password, within the session "
             "(FLOWVIZ_SESSION_MAX_HOURS after the password sign-in)", "auth", errors=()),
    Route("POST", "/api/auth/logout", "lots", "Logout",
             "Sign out: every token of the caller is refused from the next request, in every service", "auth",
             errors=()),
    Route("GET", "/api/users", "lots", "ListUsers", "List users (admin)", "auth", query=PAGE),
    Route("POST", "/api/users", "lots", "CreateUser", "Create a user (admin)", "auth", status=201, required=("username", "role", "password"), body=True,
             errors=(400, 409)),
    Route("PATCH", "/api/users/{username}", "lots", "UpdateUser",
             "Change a user's name, role, password or disabled flag (admin)", "auth", body=True,
             errors=(400, 404, 409, 429)),
    Route("GET", "/api/traceability/{lot_code}", "genealogy", "GetTraceability",
             "A lot with its direct parents and children (cached)", "traceability",
             flatten=frozenset({"parents", "children"})),
    Route("GET", "/api/traceability/{lot_code}/graph", "genealogy", "GetTraceGraph",
             "Every lot upstream and/or downstream, each once, with the edges between them (one query)",
             "traceability", query=("direction", "max_depth", "max_nodes"), flatten=frozenset({"nodes"}), cancellable=True),
    Route("GET", "/api/recall/{lot_code}", "genealogy", "GetRecallImpact",
             "Recall impact: every downstream lot with the quantity of this lot it contains, totals per kind, "
             "and what this lot is made of", "traceability", query=("max_depth", "max_nodes"),
             flatten=frozenset({"root", "downstream", "upstream"}), cancellable=True),
    Route("GET", "/api/lots/{lot_code}/mass-balance", "genealogy", "GetLotBalance",
             "What went in, what the lot holds, what its children took, with flags", "traceability",
             query=("tolerance",)),
    Route("POST", "/api/scenarios", "genealogy", "CreateScenario",
             "Run a mock-recall drill and keep its answer as a frozen snapshot", "drills", status=201,
             required=("name", "lot_code"), body=True),
    Route("GET", "/api/scenarios", "genealogy", "ListScenarios", "List drills (without snapshots)", "drills",
             query=PAGE),
    Route("GET", "/api/scenarios/{id}", "genealogy", "GetScenario", "One drill with its frozen snapshot",
             "drills"),
    Route("GET", "/api/lots", "lots", "ListLots", "List lots with their effective QC status", "lots",
             query=("lot_code_prefix", "product", "kind", "status", "effective_status", "produced_after",
                    "produced_before", *PAGE)),
    Route("POST", "/api/lots", "lots", "CreateLot", "Create a lot", "lots", status=201, required=("lot_code", "kind", "product", "quantity", "uom"), body=True,
             errors=(400, 409)),
    Route("GET", "/api/lots/{lot_code}", "lots", "GetLot", "One lot", "lots"),
    Route("GET", "/api/lots/{lot_code}/qc-status", "qc", "GetQcStatus",
             "Own and effective QC status, with the lots that block it", "qc"),
    Route("GET", "/api/lots/{lot_code}/qc-decisions", "qc", "ListQcDecisions",
             "The lot's QC decisions, oldest first (the audit trail)", "qc", query=PAGE),
    Route("POST", "/api/lots/{lot_code}/qc-decisions", "qc", "RecordQcDecision",
             "Record a QC decision (append-only; reason required for hold, release, reject; 429 after too many "
             "wrong signature passwords, as for sign-in)", "qc",
             status=201, required=("decision",), body=True, errors=(400, 404, 409, 429)),
    Route("GET", "/api/streams", "lots", "ListStreams", "List streams with their phases", "process", query=PAGE),
    Route("POST", "/api/streams", "lots", "CreateStream", "Create a stream (product line)", "process",
             status=201, required=("code", "name"), body=True, errors=(400, 409)),
    Route("GET", "/api/streams/{code}", "lots", "GetStream", "One stream with its phases", "process"),
    Route("PATCH", "/api/streams/{code}", "lots", "UpdateStream", "Rename or describe a stream", "process",
             body=True),
    Route("POST", "/api/streams/{stream_code}/phases", "lots", "CreatePhase", "Add a phase to a stream",
             "process", status=201, required=("code", "name", "seq"), body=True, errors=(400, 404, 409)),
    Route("PATCH", "/api/streams/{stream_code}/phases/{code}", "lots", "UpdatePhase",
             "Rename or reorder a phase", "process", body=True, errors=(400, 404, 409)),
    Route("GET", "/api/qc-gates", "qc", "ListQcGates", "List QC gates", "qc", query=PAGE),
    Route("POST", "/api/qc-gates", "qc", "CreateQcGate", "Attach a QC gate to a phase", "qc", status=201,
             required=("code", "name", "stream_code", "phase_code"), body=True, errors=(400, 404, 409)),
    Route("GET", "/api/qc-gates/{code}", "qc", "GetQcGate", "One QC gate", "qc"),
    Route("PATCH", "/api/qc-gates/{code}", "qc", "UpdateQcGate", "Rename or describe a QC gate", "qc",
             body=True),
    Route("POST", "/api/production-runs", "genealogy", "RecordProductionRun",
             "Record a production run: inputs consumed, new output lots, genealogy edges (all or nothing)",
             "production", status=201, required=("run_code", "inputs", "outputs"), body=True, headers={"idempotency-key": "idempotency_key"},
             status_of=lambda reply: 200 if reply.replayed else 201, errors=(400, 404, 409, 422)),
    Route("GET", "/api/production-runs/{run_code}", "genealogy", "GetProductionRun",
             "A production run with its inputs, outputs and mass balance (and, once voided, who voided it, when and why)",
             "production"),
    Route("POST", "/api/production-runs/{run_code}/void", "genealogy", "VoidProductionRun",
             "Void a run: its edges leave the genealogy and its inputs get their quantity back (refused while "
             "another run consumes an output)", "corrections", required=("reason",), body=True,
             errors=(400, 404, 409)),
    Route("PATCH", "/api/lots/{lot_code}", "genealogy", "CorrectLot",
             "Correct a lot's quantity, unit or product (refused below what its children consumed)", "corrections",
             required=("reason",), body=True, errors=(400, 404, 409)),
    Route("GET", "/api/lots/{lot_code}/corrections", "genealogy", "ListLotCorrections",
             "A lot's corrections, oldest first, with the values before and after", "corrections", query=PAGE),
    Route("POST", "/api/edges/{edge_id}/void", "genealogy", "VoidEdge",
             "Void an edge recorded without a run (an import); a run's edges go with the run", "corrections",
             required=("reason",), body=True, errors=(400, 404, 409)),
    Route("GET", "/api/edges/{edge_id}", "genealogy", "GetEdge", "One genealogy edge, live or voided",
             "corrections"),
    Route("GET", "/api/partners", "lots", "ListTradingPartners",
             "List trading partners (suppliers, customers, carriers), optionally by role", "partners",
             query=("role", *PAGE)),
    Route("POST", "/api/partners", "lots", "CreateTradingPartner",
             "Create a trading partner with its roles, optional GLN (check digit verified) and contact (admin)",
             "partners", status=201, required=("code", "name", "roles"), body=True, errors=(400, 409)),
    Route("GET", "/api/partners/{code}", "lots", "GetTradingPartner", "One trading partner", "partners"),
    Route("PATCH", "/api/partners/{code}", "lots", "UpdateTradingPartner",
             "Change a trading partner's name, roles, GLN or contact (admin)", "partners", body=True,
             errors=(400, 404, 409)),
    Route("GET", "/api/locations", "lots", "ListLocations",
             "List locations (own sites and warehouses, partners' sites), optionally of one partner", "partners",
             query=("partner_code", *PAGE)),
    Route("POST", "/api/locations", "lots", "CreateLocation",
             "Create a location with its address and optional GLN; partner_code empty for our own (admin)",
             "partners", status=201, required=("code", "name"), body=True, errors=(400, 404, 409)),
    Route("GET", "/api/locations/{code}", "lots", "GetLocation", "One location", "partners"),
    Route("PATCH", "/api/locations/{code}", "lots", "UpdateLocation",
             "Change a location's name, GLN or address (admin)", "partners", body=True, errors=(400, 404, 409)),
    Route("POST", "/api/receipts", "genealogy", "RecordReceipt",
             "Record a receipt: a new lot from a supplier's site into ours, with the supplier's lot code and a "
             "document (whole or not at all)", "shipping", status=201,
             required=("lot_code", "product", "quantity", "uom", "supplier_code", "ship_from_location_code",
                       "receiving_location_code", "received_at", "supplier_lot_code", "document_type",
                       "document_number"), body=True,
             headers={"idempotency-key": "idempotency_key"}, status_of=lambda reply: 200 if reply.replayed else 201,
             errors=(400, 404, 409, 422)),
    Route("GET", "/api/receipts/{id}", "genealogy", "GetReceipt", "One receipt", "shipping"),
    Route("POST", "/api/shipments", "genealogy", "RecordShipment",
             "Record a shipment: part or all of a lot to a customer's site (never more than it still holds, never "
             "a lot on hold or rejected)", "shipping", status=201,
             required=("lot_code", "quantity", "uom", "customer_code", "ship_to_location_code",
                       "ship_from_location_code", "shipped_at", "document_type", "document_number"), body=True,
             headers={"idempotency-key": "idempotency_key"}, status_of=lambda reply: 200 if reply.replayed else 201,
             errors=(400, 404, 409, 422)),
    Route("GET", "/api/shipments/{id}", "genealogy", "GetShipment", "One shipment", "shipping"),
    Route("GET", "/api/recall/{lot_code}/notifications", "genealogy", "GetRecallNotifications",
             "Whom to call: per customer and ship-to location every shipment of an affected lot with the root "
             "quantity it carried, totals per customer, and what is still in the plant", "traceability",
             query=("max_depth", "max_nodes"), cancellable=True),
    Route("POST", "/api/supplier-trace", "genealogy", "TraceSupplierLot",
             "The trace from the supplier's side: the lots received under a supplier's lot code, everything "
             "downstream of each and whom to call (a read; POST because a supplier's lot code may hold any "
             "character)", "traceability", required=("supplier_code", "supplier_lot_code"), body=True),
    # Webhooks (issue 16; services/events): admin only.
    Route("POST", "/api/webhooks/subscriptions", "events", "CreateSubscription",
             "Subscribe a URL to events (signed, Standard Webhooks); the secret is shown in this answer only",
             "webhooks", status=201, required=("target_url", "event_types"), body=True),
    Route("GET", "/api/webhooks/subscriptions", "events", "ListSubscriptions", "List webhook subscriptions",
             "webhooks", query=PAGE),
    Route("GET", "/api/webhooks/subscriptions/{id}", "events", "GetSubscription", "One webhook subscription",
             "webhooks"),
    Route("POST", "/api/webhooks/subscriptions/{id}/pause", "events", "PauseSubscription",
             "Pause a subscription: its events queue and are sent once resumed", "webhooks"),
    Route("POST", "/api/webhooks/subscriptions/{id}/resume", "events", "ResumeSubscription",
             "Resume a paused subscription", "webhooks"),
    Route("DELETE", "/api/webhooks/subscriptions/{id}", "events", "DeleteSubscription",
             "Delete a subscription and its delivery log", "webhooks"),
    Route("GET", "/api/webhooks/subscriptions/{id}/deliveries", "events", "ListDeliveries",
             "A subscription's delivery log: attempts, status, latency, next try", "webhooks",
             query=("status", *PAGE)),
    Route("POST", "/api/webhooks/subscriptions/{id}/deliveries/{delivery_id}/redeliver", "events", "Redeliver",
             "Send a delivery again (same webhook-id)", "webhooks"),
    # Exports the genealogy service renders, relayed as bytes (gateway/relay.py).
    lot_export("ExportTraceCsv", "/api/traceability/{lot_code}/export.csv",
               "The trace as a spreadsheet: one row per transformation and input lot, receipt and shipment "
               "(FSMA 204 key data elements), rendered by the genealogy service and streamed",
               CSV, genealogy_pb2.EXPORT_FORMAT_TRACE_CSV),
    lot_export("ExportTraceJsonLd", "/api/traceability/{lot_code}/export.jsonld",
               "The trace as GS1 EPCIS 2.0 JSON-LD (valid by GS1's schema): receipts and shipments as "
               "ObjectEvents, production runs as TransformationEvents with input and output quantity lists, lots "
               "and locations as master data; rendered by the genealogy service and streamed",
               JSONLD, genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD),
    lot_export("ExportTraceFsma204", "/api/traceability/{lot_code}/fsma204.csv",
               "The FSMA 204 sortable spreadsheet of one lot's trace (every receiving, transformation and shipping "
               "event of its lots), streamed", CSV, genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV),
    range_export("ExportFsma204", "/api/fsma204",
                 "The FSMA 204 electronic sortable spreadsheet for an FDA request: every receiving, transformation "
                 "and shipping event of the products (and/or the lot code range) in the time range, with its key "
                 "data elements, streamed", CSV, genealogy_pb2.EXPORT_FORMAT_FSMA204_CSV, (400, 404)),
    range_export("ExportEpcis", "/api/epcis",
                 "Every receiving, transformation and shipping event of the products (and/or the lot code range) "
                 "in the time range as one GS1 EPCIS 2.0 JSON-LD document (valid by GS1's schema), streamed",
                 JSONLD, genealogy_pb2.EXPORT_FORMAT_EPCIS_JSONLD, (400,)),
    Route("GET", "/api/scenarios/{id}/export.csv", "genealogy", "RenderScenarioCsv",
          "A drill's frozen snapshot as a spreadsheet", "drills", kind="bytes", media_type=CSV,
          name="ExportScenarioCsv"),
    Route("GET", "/api/recall/{lot_code}/notifications.csv", "genealogy", "RenderRecallNotificationsCsv",
          "A recall's notification list as a spreadsheet: a row per shipment of an affected lot (customer, "
          "contact, ship-to, document, quantity, root quantity), then a row per affected lot still in the plant",
          "traceability", kind="bytes", media_type=CSV, timeouts=4, name="ExportRecallNotificationsCsv"),
    # The uploads: a multipart import streamed on as it arrives, an EPCIS document sent on whole.
    Route("POST", "/api/import", "genealogy", "ImportGenealogy",
          "Bulk import lots.csv and/or genealogy.csv (multipart files `lots`, `genealogy`): every row "
          "validated, all imported or none, with a report of bad rows", "import", kind="upload",
          query=("mode",), notes={"mode": IMPORT_MODE_NOTE}, roles=UPLOAD_ROLES, errors=(413,),
          replies={200: "Imported", 400: "Rejected rows (nothing imported) or a malformed upload"}),
    Route("POST", "/api/epcis/capture", "genealogy", "CaptureEpcis",
          "Capture an EPCIS 2.0 JSON(-LD) document (ObjectEvents receiving and shipping, TransformationEvents "
          "for runs): validated against GS1's EPCIS 2.0 JSON Schema and flowviz's rules, every event recorded in one "
          "transaction or none (Idempotency-Key: a retry replays it), with a report per event", "traceability",
          kind="document", headers={"idempotency-key": "idempotency_key"},
          shapes={"idempotency-key": {"type": "string", "maxLength": 180}}, errors=(413, 422), timeouts=12,
          body_note="An EPCIS 2.0 document (JSON or JSON-LD) that validates against GS1's EPCIS 2.0 JSON "
          "Schema, https://gs1.github.io/EPCIS/EPCIS-JSON-Schema.json (400 EPCIS_SCHEMA_INVALID otherwise)",
          replies={
              201: "Every event recorded",
              200: "Recorded earlier under this Idempotency-Key (replayed)",
              400: "Nothing recorded: an event is malformed (the report says which and why), or the document is "
              "no EPCIS 2.0 document (an Error)",
              404: "Nothing recorded: an event names a lot, partner or location that does not exist",
              409: "Nothing recorded: an event is refused by the data (not enough left, a lot on hold, a lot "
              "that exists)",
          }),
]  # fmt: skip
# The routes that answer JSON from one call (the rest stream, one way or the other).
ROUTES = [route for route in API if route.kind == "json"]
