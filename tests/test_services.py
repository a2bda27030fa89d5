"""Each service's RPCs through real stubs, on the running system."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flowviz.core.config import HEALTH_SERVICE_NAMES
from flowviz.core.errors import from_rpc_error
from flowviz.genealogy.v1 import genealogy_pb2, genealogy_pb2_grpc
from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from flowviz.qc.v1 import qc_pb2, qc_pb2_grpc
from tests.conftest import System, grpc_channel


@pytest.fixture(scope="module")
def channels(system: System) -> Iterator[dict[str, grpc.Channel]]:
    chans = {name: grpc_channel(system.addr(name)) for name in ("lots", "genealogy", "qc", "health")}
    yield chans
    for c in chans.values():
        c.close()


@pytest.mark.parametrize("name", ["lots", "genealogy", "qc", "health"])
def test_grpc_health_serving(channels: dict[str, grpc.Channel], name: str) -> None:
    stub = health_pb2_grpc.HealthStub(channels[name])
    for service in ("", HEALTH_SERVICE_NAMES[name]):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("lots", "flowviz.lots.v1.LotsService"),
        ("genealogy", "flowviz.genealogy.v1.GenealogyService"),
        ("qc", "flowviz.qc.v1.QcService"),
        ("health", "flowviz.health.v1.SystemHealthService"),
    ],
)
def test_reflection_lists_the_service(channels: dict[str, grpc.Channel], name: str, service: str) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channels[name])
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {service, "grpc.health.v1.Health"} <= names


def test_get_lot(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    lot = stub.GetLot(lots_pb2.GetLotRequest(lot_code="RAW-SPICE-001"), timeout=5).lot
    assert (lot.kind, lot.uom, lot.quantity, lot.status) == ("RAW", "kg", 25.0, "passed")


def test_get_unknown_lot_is_not_found_with_reason(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    with pytest.raises(grpc.RpcError) as err:
        stub.GetLot(lots_pb2.GetLotRequest(lot_code="NO-SUCH-LOT"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    assert from_rpc_error(err.value).reason == "LOT_NOT_FOUND"


def test_create_lot_then_duplicate_is_already_exists(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    code = f"RAW-T-{uuid.uuid4().hex[:8]}"
    request = lots_pb2.CreateLotRequest(lot_code=code, kind="RAW", product="Onion", quantity=12.5, uom="kg")
    created = stub.CreateLot(request, timeout=5).lot
    assert (created.lot_code, created.quantity, created.status) == (code, 12.5, "pending")
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateLot(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    assert from_rpc_error(err.value).reason == "LOT_EXISTS"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("lot_code", "", "LOT_CODE_EMPTY"),
        ("lot_code", "X" * 65, "LOT_CODE_TOO_LONG"),
        ("lot_code", "A\x01B", "LOT_CODE_INVALID"),
        ("kind", "raw", "KIND_INVALID"),
        ("uom", "parsec", "UOM_INVALID"),
        ("quantity", -1.0, "QUANTITY_INVALID"),
    ],
)
def test_create_lot_rejects_bad_input(
    channels: dict[str, grpc.Channel], field: str, value: object, reason: str
) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    fields: dict[str, object] = {
        "lot_code": "OK-1",
        "kind": "RAW",
        "product": "p",
        "quantity": 1.0,
        "uom": "kg",
    }
    fields[field] = value
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateLot(lots_pb2.CreateLotRequest(**fields), timeout=5)  # type: ignore[arg-type]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert from_rpc_error(err.value).reason == reason


def test_list_lots_filters_by_kind_and_product(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    reply = stub.ListLots(lots_pb2.ListLotsRequest(kind="FG", product="Doner kebab cone 10 kg"), timeout=5)
    assert [lot.lot_code for lot in reply.lots] == ["FG-DONER-X1"]
    assert reply.lots[0].effective_status == "pending"


def test_list_lots_pages_without_gaps(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    product = f"paging {uuid.uuid4().hex}"
    created = [f"PG-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for code in created:
        stub.CreateLot(
            lots_pb2.CreateLotRequest(lot_code=code, kind="RAW", product=product, quantity=1, uom="kg")
        )
    seen: list[str] = []
    token = ""
    while True:
        request = lots_pb2.ListLotsRequest(product=product, page_size=2, page_token=token)
        reply = stub.ListLots(request, timeout=5)
        seen += [lot.lot_code for lot in reply.lots]
        token = reply.next_page_token
        if not token:
            break
    assert seen == created


def test_bad_page_token_is_invalid_argument(channels: dict[str, grpc.Channel]) -> None:
    stub = lots_pb2_grpc.LotsServiceStub(channels["lots"])
    with pytest.raises(grpc.RpcError) as err:
        stub.ListLots(lots_pb2.ListLotsRequest(page_token="garbage!"), timeout=5)
    assert from_rpc_error(err.value).reason == "PAGE_TOKEN_INVALID"


def test_traceability_of_the_mix(channels: dict[str, grpc.Channel]) -> None:
    stub = genealogy_pb2_grpc.GenealogyServiceStub(channels["genealogy"])
    reply = stub.GetTraceability(genealogy_pb2.GetTraceabilityRequest(lot_code="MIX-BATCH-88"), timeout=5)
    assert reply.lot.lot_code == "MIX-BATCH-88"
    parents = {p.lot.lot_code: (p.edge_quantity, p.edge_uom, p.run_code) for p in reply.parents}
    assert parents == {
        "RAW-BEEF-001": (380.0, "kg", "RUN-MIX-88"),
        "RAW-SPICE-001": (20.0, "kg", "RUN-MIX-88"),
    }
    assert [c.lot.lot_code for c in reply.children] == ["FG-DONER-X1"]


def test_qc_status_and_decisions(channels: dict[str, grpc.Channel]) -> None:
    stub = qc_pb2_grpc.QcServiceStub(channels["qc"])
    assert stub.GetQcStatus(qc_pb2.GetQcStatusRequest(lot_code="RAW-BEEF-001"), timeout=5).status == "passed"
    assert stub.GetQcStatus(qc_pb2.GetQcStatusRequest(lot_code="FG-DONER-X1"), timeout=5).status == "pending"
    decisions = stub.ListQcDecisions(
        qc_pb2.ListQcDecisionsRequest(lot_code="RAW-BEEF-001"), timeout=5
    ).decisions
    assert [(d.decision, d.gate_code, d.decided_by) for d in decisions][:1] == [
        (qc_pb2.DECISION_PASS, "QG-RECEIVING", "system")
    ]
