"""flowviz/core/protojson.py: the gateway's JSON dialect, both ways, and its JSON Schema."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.timestamp_pb2 import Timestamp

from flowviz.core import protojson
from flowviz.core.protojson import (
    JsonInputError,
    dumps,
    enum_names,
    enum_values,
    field_schema,
    fill,
    flat_schema,
    message_schema,
    schema_name,
    to_json,
)
from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2


def _lot() -> lots_pb2.Lot:
    lot = lots_pb2.Lot(lot_code="MIX-1", kind="MIX", product="doner mix", quantity=40.5, uom="kg")
    lot.produced_at.FromJsonString("2026-01-16T08:00:00Z")
    lot.blocking.add(lot_code="RAW-1", status="on_hold", decision_id=7, reason="temp")
    return lot


def test_enums_are_lower_case_names_without_their_prefix() -> None:
    assert enum_names(qc_pb2.Decision.DESCRIPTOR) == {
        0: "unspecified",
        1: "pass",
        2: "hold",
        3: "release",
        4: "reject",
    }
    # The zero value is never accepted as input.
    assert enum_values(genealogy_pb2.Direction.DESCRIPTOR) == {"upstream": 1, "downstream": 2, "both": 3}
    decision = qc_pb2.QcDecision(id=3, decision=qc_pb2.DECISION_HOLD)
    assert to_json(decision)["decision"] == "hold"
    # A number no name is known for (a newer server) is written as its number.
    assert to_json(qc_pb2.QcDecision(decision=9))["decision"] == "9"  # type: ignore[arg-type]


def test_message_to_json() -> None:
    assert to_json(_lot()) == {
        "lot_code": "MIX-1",
        "kind": "MIX",
        "product": "doner mix",
        "quantity": 40.5,
        "uom": "kg",
        "status": "",
        "produced_at": "2026-01-16T08:00:00Z",
        "created_at": None,  # an unset message field is null
        "effective_status": "",
        "blocking": [{"lot_code": "RAW-1", "status": "on_hold", "decision_id": 7, "reason": "temp"}],
        "voided_run": "",
    }


def test_optional_is_null_when_unset_and_int64_stays_a_number() -> None:
    balance = genealogy_pb2.RunBalance(unit="kg", total_input=0.0, flags=["YIELD_GAIN"])
    out = to_json(balance)
    assert out["total_input"] == 0.0 and out["total_output"] is None
    assert out["flags"] == ["YIELD_GAIN"]
    assert to_json(lots_pb2.LotBlock(decision_id=2**62))["decision_id"] == 2**62


def test_json_string_fields_are_emitted_parsed_without_the_suffix() -> None:
    out = to_json(genealogy_pb2.Scenario(id=1, snapshot_json='{"a": [1, 2]}'))
    assert out["snapshot"] == {"a": [1, 2]} and "snapshot_json" not in out
    assert to_json(genealogy_pb2.Scenario(id=1))["snapshot"] is None


def test_flatten_merges_the_lot_into_its_holder() -> None:
    node = genealogy_pb2.TraceNode(lot=_lot(), depth=1, side="upstream")
    graph = genealogy_pb2.GetTraceGraphResponse(nodes=[node])
    out = to_json(graph, frozenset({"nodes"}))
    assert out["nodes"][0]["lot_code"] == "MIX-1"
    assert (out["nodes"][0]["depth"], out["nodes"][0]["side"]) == (1, "upstream")
    assert "lot" not in out["nodes"][0]


def _graph(nodes: int) -> genealogy_pb2.GetTraceGraphResponse:
    graph = genealogy_pb2.GetTraceGraphResponse(root="MIX-1", direction=genealogy_pb2.DIRECTION_BOTH)
    for i in range(nodes):
        graph.nodes.add(lot=_lot(), depth=i, side="downstream").lot.lot_code = f"L-{i}"
        graph.edges.add(parent=f"L-{i}", child=f"L-{i + 1}", quantity=i / 3, uom="kg", edge_id=i)
    graph.cycles.add(lot_codes=["A", "B"])
    graph.truncated = True
    return graph


@pytest.mark.parametrize("nodes", [0, 1, 2, 3, 7])
def test_a_large_answer_encoded_in_parts_is_the_same_json(nodes: int) -> None:
    graph = _graph(nodes)
    for flatten in (frozenset(), frozenset({"nodes"})):
        whole = orjson.dumps(to_json(graph, flatten))
        assert dumps(graph, flatten, chunk=3) == whole  # chunks of 3: 7 nodes are 3 + 3 + 1
        assert dumps(graph, flatten) == whole
    notifications = genealogy_pb2.GetRecallNotificationsResponse(root="RAW-1", shipments=2, truncated=True)
    notifications.in_plant.add(lot=_lot(), location_code="WH-1", remaining=2.5, root_share=0.25)
    notifications.in_plant.add(lot=_lot(), remaining=1.0)  # root_share unset: null
    customer = notifications.customers.add(customer_code="C-1", name="Kebab Haus", shipments=nodes)
    customer.locations.add()
    assert dumps(notifications, frozenset({"in_plant"}), chunk=1) == orjson.dumps(
        to_json(notifications, frozenset({"in_plant"}))
    )
    # A recall: a singular field named in flatten (its root) is merged as to_json merges it.
    recall = genealogy_pb2.GetRecallImpactResponse()
    recall.root.lot.CopyFrom(_lot())
    recall.downstream.add().lot.CopyFrom(_lot())
    recall.totals.add()
    flat = frozenset({"root", "downstream", "upstream"})
    assert dumps(recall, flat, chunk=1) == orjson.dumps(to_json(recall, flat))
    assert dumps(genealogy_pb2.GetRecallImpactResponse(), flat) == orjson.dumps(
        to_json(genealogy_pb2.GetRecallImpactResponse(), flat)
    )  # no root at all: null
    assert orjson.loads(dumps(graph, frozenset({"nodes"}))) == to_json(graph, frozenset({"nodes"}))


def test_fill_reads_the_same_dialect() -> None:
    request = fill(
        qc_pb2.RecordQcDecisionRequest(),
        {"lot_code": "RAW-1", "decision": "reject", "reason": "x", "supersedes_id": "12"},
    )
    assert request == qc_pb2.RecordQcDecisionRequest(
        lot_code="RAW-1", decision=qc_pb2.DECISION_REJECT, reason="x", supersedes_id=12
    )
    run = fill(
        genealogy_pb2.ProductionRun(),
        {"started_at": "2026-01-16T08:00:00Z", "inputs": [{"lot_code": "A", "quantity": 3}]},
    )
    assert isinstance(run, genealogy_pb2.ProductionRun)
    assert run.started_at.seconds == 1768550400
    assert (run.inputs[0].lot_code, run.inputs[0].quantity) == ("A", 3.0)
    # null on an optional field leaves it unset
    assert not fill(genealogy_pb2.GetLotBalanceRequest(), {"tolerance": None}).HasField("tolerance")


def test_round_trip() -> None:
    lot = _lot()
    data: dict[str, Any] = {k: v for k, v in to_json(lot).items() if v is not None}
    assert fill(lots_pb2.Lot(), data) == lot


@pytest.mark.parametrize(
    ("message", "data", "field", "words"),
    [
        (qc_pb2.RecordQcDecisionRequest(), {"nope": 1}, "nope", "is not a known field"),
        (qc_pb2.RecordQcDecisionRequest(), {"decision": "unspecified"}, "decision", "must be one of"),
        (qc_pb2.RecordQcDecisionRequest(), {"decision": 2}, "decision", "must be one of"),
        (qc_pb2.RecordQcDecisionRequest(), {"lot_code": 5}, "lot_code", "must be a string"),
        (qc_pb2.RecordQcDecisionRequest(), {"lot_code": None}, "lot_code", "must not be null"),
        (qc_pb2.RecordQcDecisionRequest(), {"supersedes_id": True}, "supersedes_id", "must be a number"),
        (qc_pb2.RecordQcDecisionRequest(), {"supersedes_id": 1.5}, "supersedes_id", "must be an integer"),
        (qc_pb2.RecordQcDecisionRequest(), {"supersedes_id": "x"}, "supersedes_id", "must be an integer"),
        (qc_pb2.RecordQcDecisionRequest(), {"supersedes_id": 2**63}, "supersedes_id", "is out of range"),
        (genealogy_pb2.TraceNode(), {"depth": 2**31}, "depth", "is out of range"),
        (genealogy_pb2.RunLine(), {"quantity": "NaN"}, "quantity", "must be a finite number"),
        (genealogy_pb2.RunLine(), {"quantity": "ten"}, "quantity", "must be a number"),
        (genealogy_pb2.ProductionRun(), {"started_at": "today"}, "started_at", "RFC 3339"),
        (genealogy_pb2.ProductionRun(), {"started_at": 5}, "started_at", "RFC 3339"),
        (genealogy_pb2.ProductionRun(), {"inputs": {}}, "inputs", "must be a list"),
        (genealogy_pb2.ProductionRun(), {"inputs": [1]}, "inputs[0]", "must be an object"),
        (genealogy_pb2.ProductionRun(), {"inputs": [{"uom": 1}]}, "inputs[0].uom", "must be a string"),
        (genealogy_pb2.LinkedLot(), {"lot": []}, "lot", "must be an object"),
        (genealogy_pb2.LinkedLot(), {"lot": {"kind": False}}, "lot.kind", "must be a string"),
        (genealogy_pb2.Cycle(), {"lot_codes": ["A", 2]}, "lot_codes[1]", "must be a string"),
    ],
)
def test_bad_input_names_the_field(message: Any, data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(JsonInputError) as err:
        fill(message, data)
    assert err.value.field == field
    assert words in err.value.message


def test_schema_of_a_message() -> None:
    refs: dict[str, Descriptor] = {}
    schema = message_schema(qc_pb2.QcDecision.DESCRIPTOR, refs)
    props = schema["properties"]
    assert schema["additionalProperties"] is False and schema["required"] == list(props)
    assert props["id"] == {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    assert props["decision"] == {"type": "string", "enum": ["pass", "hold", "release", "reject"]}
    assert props["decided_at"] == {"type": ["string", "null"], "format": "date-time"}
    assert props["signature"] == {"anyOf": [{"$ref": "#/components/schemas/Signature"}, {"type": "null"}]}
    assert set(refs) == {"Signature"}
    assert schema_name(qc_pb2.QcDecision.DESCRIPTOR) == "QcDecision"
    skipped = message_schema(qc_pb2.RecordQcDecisionRequest.DESCRIPTOR, {}, skip=("password",))
    assert "password" not in skipped["properties"]


def test_schema_of_fields() -> None:
    fields = genealogy_pb2.RunBalance.DESCRIPTOR.fields_by_name
    assert field_schema(fields["total_input"], {}) == {"type": ["number", "null"]}
    assert field_schema(fields["flags"], {}) == {"type": "array", "items": {"type": "string"}}
    depth = genealogy_pb2.TraceNode.DESCRIPTOR.fields_by_name["depth"]
    assert field_schema(depth, {}) == {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
    snapshot = genealogy_pb2.Scenario.DESCRIPTOR.fields_by_name["snapshot_json"]
    assert field_schema(snapshot, {}) == {"type": ["object", "null"]}


def test_flat_schema_matches_flatten() -> None:
    schema = flat_schema(genealogy_pb2.TraceNode.DESCRIPTOR, {})
    node = genealogy_pb2.TraceNode(lot=_lot(), depth=1, side="root")
    flat = to_json(genealogy_pb2.GetTraceGraphResponse(nodes=[node]), frozenset({"nodes"}))["nodes"][0]
    assert set(schema["properties"]) == set(flat) == set(schema["required"])


def test_a_timestamp_renders_as_protobufs_own_json_string() -> None:
    rng = random.Random(7)
    cases = [(0, 0), (-1, 999_999_999), (1_733_300_000, 5_000_000), (1_733_300_000, 120_000),
             (1_733_300_000, 7), (-62135596800, 0), (253402300799, 999_999_999), (951_782_400, 0)]  # fmt: skip
    for _ in range(20_000):
        nanos = rng.choice(
            [0, rng.randrange(1000) * 1_000_000, rng.randrange(10**6) * 1000, rng.randrange(10**9)]
        )
        cases.append((rng.randrange(-62135596800, 253402300800), nanos))
    for seconds, nanos in cases:
        t = Timestamp(seconds=seconds, nanos=nanos)
        assert protojson.timestamp(t) == t.ToJsonString(), (seconds, nanos)
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        protojson.timestamp(Timestamp(seconds=253402300800))
