"""The gateway's routes as data: each HTTP route names the RPC it calls and where the request
fields come from (path, query, JSON body, headers). One generic handler serves them all and
the OpenAPI document is generated from the same table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from flowviz.core.protojson import to_json
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


@dataclass(frozen=True)
class RpcRoute:
    method: str
    path: str
    upstream: str
    rpc: str
    summary: str
    tag: str
    status: int = 200
    body: bool = False
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

    def render(self, reply: Message) -> Any:
        return to_json(reply, self.flatten)


ROUTES: list[RpcRoute] = [
    RpcRoute("POST", "/api/auth/token", "lots", "IssueToken",
             "Exchange a username and password for a short-lived bearer token", "auth", required=("username", "password"), body=True,
             errors=(400, 429), public=True),
    RpcRoute("POST", "/api/auth/refresh", "lots", "RefreshToken",
             "A new token for the caller's still-valid one, without the password, within the session "
             "(FLOWVIZ_SESSION_MAX_HOURS after the password sign-in)", "auth", errors=()),
    RpcRoute("POST", "/api/auth/logout", "lots", "Logout",
             "Sign out: every token of the caller is refused from the next request, in every service", "auth",
             errors=()),
    RpcRoute("GET", "/api/users", "lots", "ListUsers", "List users (admin)", "auth", query=PAGE),
    RpcRoute("POST", "/api/users", "lots", "CreateUser", "Create a user (admin)", "auth", status=201, required=("username", "role", "password"), body=True,
             errors=(400, 409)),
    RpcRoute("PATCH", "/api/users/{username}", "lots", "UpdateUser",
             "Change a user's name, role, password or disabled flag (admin)", "auth", body=True,
             errors=(400, 404, 409, 429)),
    RpcRoute("GET", "/api/traceability/{lot_code}", "genealogy", "GetTraceability",
             "A lot with its direct parents and children (cached)", "traceability",
             flatten=frozenset({"parents", "children"})),
    RpcRoute("GET", "/api/traceability/{lot_code}/graph", "genealogy", "GetTraceGraph",
             "Every lot upstream and/or downstream, each once, with the edges between them (one query)",
             "traceability", query=("direction", "max_depth", "max_nodes"), flatten=frozenset({"nodes"}), cancellable=True),
    RpcRoute("GET", "/api/recall/{lot_code}", "genealogy", "GetRecallImpact",
             "Recall impact: every downstream lot with the quantity of this lot it contains, totals per kind, "
             "and what this lot is made of", "traceability", query=("max_depth", "max_nodes"),
             flatten=frozenset({"root", "downstream", "upstream"}), cancellable=True),
    RpcRoute("GET", "/api/lots/{lot_code}/mass-balance", "genealogy", "GetLotBalance",
             "What went in, what the lot holds, what its children took, with flags", "traceability",
             query=("tolerance",)),
    RpcRoute("POST", "/api/scenarios", "genealogy", "CreateScenario",
             "Run a mock-recall drill and keep its answer as a frozen snapshot", "drills", status=201,
             required=("name", "lot_code"), body=True),
    RpcRoute("GET", "/api/scenarios", "genealogy", "ListScenarios", "List drills (without snapshots)", "drills",
             query=PAGE),
    RpcRoute("GET", "/api/scenarios/{id}", "genealogy", "GetScenario", "One drill with its frozen snapshot",
             "drills"),
    RpcRoute("GET", "/api/lots", "lots", "ListLots", "List lots with their effective QC status", "lots",
             query=("lot_code_prefix", "product", "kind", "status", "effective_status", "produced_after",
                    "produced_before", *PAGE)),
    RpcRoute("POST", "/api/lots", "lots", "CreateLot", "Create a lot", "lots", status=201, required=("lot_code", "kind", "product", "quantity", "uom"), body=True,
             errors=(400, 409)),
    RpcRoute("GET", "/api/lots/{lot_code}", "lots", "GetLot", "One lot", "lots"),
    RpcRoute("GET", "/api/lots/{lot_code}/qc-status", "qc", "GetQcStatus",
             "Own and effective QC status, with the lots that block it", "qc"),
    RpcRoute("GET", "/api/lots/{lot_code}/qc-decisions", "qc", "ListQcDecisions",
             "The lot's QC decisions, oldest first (the audit trail)", "qc", query=PAGE),
    RpcRoute("POST", "/api/lots/{lot_code}/qc-decisions", "qc", "RecordQcDecision",
             "Record a QC decision (append-only; reason required for hold, release, reject)", "qc",
             status=201, required=("decision",), body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/streams", "lots", "ListStreams", "List streams with their phases", "process", query=PAGE),
    RpcRoute("POST", "/api/streams", "lots", "CreateStream", "Create a stream (product line)", "process",
             status=201, required=("code", "name"), body=True, errors=(400, 409)),
    RpcRoute("GET", "/api/streams/{code}", "lots", "GetStream", "One stream with its phases", "process"),
    RpcRoute("PATCH", "/api/streams/{code}", "lots", "UpdateStream", "Rename or describe a stream", "process",
             body=True),
    RpcRoute("POST", "/api/streams/{stream_code}/phases", "lots", "CreatePhase", "Add a phase to a stream",
             "process", status=201, required=("code", "name", "seq"), body=True, errors=(400, 404, 409)),
    RpcRoute("PATCH", "/api/streams/{stream_code}/phases/{code}", "lots", "UpdatePhase",
             "Rename or reorder a phase", "process", body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/qc-gates", "qc", "ListQcGates", "List QC gates", "qc", query=PAGE),
    RpcRoute("POST", "/api/qc-gates", "qc", "CreateQcGate", "Attach a QC gate to a phase", "qc", status=201,
             required=("code", "name", "stream_code", "phase_code"), body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/qc-gates/{code}", "qc", "GetQcGate", "One QC gate", "qc"),
    RpcRoute("PATCH", "/api/qc-gates/{code}", "qc", "UpdateQcGate", "Rename or describe a QC gate", "qc",
             body=True),
    RpcRoute("POST", "/api/production-runs", "genealogy", "RecordProductionRun",
             "Record a production run: inputs consumed, new output lots, genealogy edges (all or nothing)",
             "production", status=201, required=("run_code", "inputs", "outputs"), body=True, headers={"idempotency-key": "idempotency_key"},
             status_of=lambda reply: 200 if reply.replayed else 201, errors=(400, 404, 409, 422)),
    RpcRoute("GET", "/api/production-runs/{run_code}", "genealogy", "GetProductionRun",
             "A production run with its inputs, outputs and mass balance (and, once voided, who voided it, when and why)",
             "production"),
    RpcRoute("POST", "/api/production-runs/{run_code}/void", "genealogy", "VoidProductionRun",
             "Void a run: its edges leave the genealogy and its inputs get their quantity back (refused while "
             "another run consumes an output)", "corrections", required=("reason",), body=True,
             errors=(400, 404, 409)),
    RpcRoute("PATCH", "/api/lots/{lot_code}", "genealogy", "CorrectLot",
             "Correct a lot's quantity, unit or product (refused below what its children consumed)", "corrections",
             required=("reason",), body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/lots/{lot_code}/corrections", "genealogy", "ListLotCorrections",
             "A lot's corrections, oldest first, with the values before and after", "corrections", query=PAGE),
    RpcRoute("POST", "/api/edges/{edge_id}/void", "genealogy", "VoidEdge",
             "Void an edge recorded without a run (an import); a run's edges go with the run", "corrections",
             required=("reason",), body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/edges/{edge_id}", "genealogy", "GetEdge", "One genealogy edge, live or voided",
             "corrections"),
    RpcRoute("GET", "/api/partners", "lots", "ListTradingPartners",
             "List trading partners (suppliers, customers, carriers), optionally by role", "partners",
             query=("role", *PAGE)),
    RpcRoute("POST", "/api/partners", "lots", "CreateTradingPartner",
             "Create a trading partner with its roles, optional GLN (check digit verified) and contact (admin)",
             "partners", status=201, required=("code", "name", "roles"), body=True, errors=(400, 409)),
    RpcRoute("GET", "/api/partners/{code}", "lots", "GetTradingPartner", "One trading partner", "partners"),
    RpcRoute("PATCH", "/api/partners/{code}", "lots", "UpdateTradingPartner",
             "Change a trading partner's name, roles, GLN or contact (admin)", "partners", body=True,
             errors=(400, 404, 409)),
    RpcRoute("GET", "/api/locations", "lots", "ListLocations",
             "List locations (own sites and warehouses, partners' sites), optionally of one partner", "partners",
             query=("partner_code", *PAGE)),
    RpcRoute("POST", "/api/locations", "lots", "CreateLocation",
             "Create a location with its address and optional GLN; partner_code empty for our own (admin)",
             "partners", status=201, required=("code", "name"), body=True, errors=(400, 404, 409)),
    RpcRoute("GET", "/api/locations/{code}", "lots", "GetLocation", "One location", "partners"),
    RpcRoute("PATCH", "/api/locations/{code}", "lots", "UpdateLocation",
             "Change a location's name, GLN or address (admin)", "partners", body=True, errors=(400, 404, 409)),
    RpcRoute("POST", "/api/receipts", "genealogy", "RecordReceipt",
             "Record a receipt: a new lot from a supplier's site into ours, with the supplier's lot code and a "
             "document (whole or not at all)", "shipping", status=201,
             required=("lot_code", "product", "quantity", "uom", "supplier_code", "ship_from_location_code",
                       "receiving_location_code", "received_at", "supplier_lot_code", "document_type",
                       "document_number"), body=True,
             headers={"idempotency-key": "idempotency_key"}, status_of=lambda reply: 200 if reply.replayed else 201,
             errors=(400, 404, 409, 422)),
    RpcRoute("GET", "/api/receipts/{id}", "genealogy", "GetReceipt", "One receipt", "shipping"),
    RpcRoute("POST", "/api/shipments", "genealogy", "RecordShipment",
             "Record a shipment: part or all of a lot to a customer's site (never more than it still holds, never "
             "a lot on hold or rejected)", "shipping", status=201,
             required=("lot_code", "quantity", "uom", "customer_code", "ship_to_location_code",
                       "ship_from_location_code", "shipped_at", "document_type", "document_number"), body=True,
             headers={"idempotency-key": "idempotency_key"}, status_of=lambda reply: 200 if reply.replayed else 201,
             errors=(400, 404, 409, 422)),
    RpcRoute("GET", "/api/shipments/{id}", "genealogy", "GetShipment", "One shipment", "shipping"),
    RpcRoute("GET", "/api/recall/{lot_code}/notifications", "genealogy", "GetRecallNotifications",
             "Whom to call: per customer and ship-to location every shipment of an affected lot with the root "
             "quantity it carried, totals per customer, and what is still in the plant", "traceability",
             query=("max_depth", "max_nodes"), cancellable=True),
    RpcRoute("POST", "/api/supplier-trace", "genealogy", "TraceSupplierLot",
             "The trace from the supplier's side: the lots received under a supplier's lot code, everything "
             "downstream of each and whom to call (a read; POST because a supplier's lot code may hold any "
             "character)", "traceability", required=("supplier_code", "supplier_lot_code"), body=True),
    # Webhooks (issue 16; services/events): admin only.
    RpcRoute("POST", "/api/webhooks/subscriptions", "events", "CreateSubscription",
             "Subscribe a URL to events (signed, Standard Webhooks); the secret is shown in this answer only",
             "webhooks", status=201, required=("target_url", "event_types"), body=True),
    RpcRoute("GET", "/api/webhooks/subscriptions", "events", "ListSubscriptions", "List webhook subscriptions",
             "webhooks", query=PAGE),
    RpcRoute("GET", "/api/webhooks/subscriptions/{id}", "events", "GetSubscription", "One webhook subscription",
             "webhooks"),
    RpcRoute("POST", "/api/webhooks/subscriptions/{id}/pause", "events", "PauseSubscription",
             "Pause a subscription: its events queue and are sent once resumed", "webhooks"),
    RpcRoute("POST", "/api/webhooks/subscriptions/{id}/resume", "events", "ResumeSubscription",
             "Resume a paused subscription", "webhooks"),
    RpcRoute("DELETE", "/api/webhooks/subscriptions/{id}", "events", "DeleteSubscription",
             "Delete a subscription and its delivery log", "webhooks"),
    RpcRoute("GET", "/api/webhooks/subscriptions/{id}/deliveries", "events", "ListDeliveries",
             "A subscription's delivery log: attempts, status, latency, next try", "webhooks",
             query=("status", *PAGE)),
    RpcRoute("POST", "/api/webhooks/subscriptions/{id}/deliveries/{delivery_id}/redeliver", "events", "Redeliver",
             "Send a delivery again (same webhook-id)", "webhooks"),
]  # fmt: skip
