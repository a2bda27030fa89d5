"""Hostile input: schemathesis against the OpenAPI document (every check, with a token and
without), and generated protobuf messages against every RPC. Each runs on a system of its own,
so what the fuzzers create or change cannot disturb the other tests."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowviz.genealogy.v1 import genealogy_pb2  # noqa: F401 - registers the descriptors
from flowviz.lots.v1 import lots_pb2  # noqa: F401
from flowviz.qc.v1 import qc_pb2  # noqa: F401
from tests.conftest import ROOT, Servers, System, add_users, running_system, token
from tests.test_authz import rpc_caller

CONFIG = Path(__file__).with_name("schemathesis.toml")
# Per operation and phase. Signed in: about 2,600 cases over the 34 operations (~45 s here);
# without a token every answer is a 401, so fewer find as much.
EXAMPLES = {"admin": 30, "anonymous": 10}
PHASES = "examples,coverage,fuzzing,stateful"


@pytest.fixture(scope="module")
def fuzz_system(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    from flowviz.tools import seed

    name = "fuzz"
    with servers.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE flowviz_template')
    url = servers.url(name)
    seed.load(url)
    add_users(url)
    # Its own Valkey database: its thousands of failed logins must not throttle the other tests.
    with running_system(servers, url, suffix="-fuzz", valkey_db=1) as sys_:
        yield sys_


def _schemathesis(
    system: System, examples: int, *headers: str, extra: list[str] | None = None
) -> tuple[int, str]:
    args = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
            f"{system.base}/api/openapi.json", "--checks", "all", "--phases", PHASES, "-n", str(examples),
            "--seed", "1", "--no-color", *(a for h in headers for a in ("-H", h)), *(extra or [])]  # fmt: skip
    # cwd: the config names its hooks file relative to the repository.
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("who", ["admin", "anonymous"])
def test_schemathesis_finds_nothing(fuzz_system: System, who: str) -> None:
    headers = [f"Authorization: Bearer {token('ada')}"] if who == "admin" else []
    # Signed in, signing out would end the token every later request carries (a 401 for a valid one).
    skip = ["--exclude-path", "/api/auth/logout"] if who == "admin" else []
    code, out = _schemathesis(fuzz_system, EXAMPLES[who], *headers, extra=skip)
    summary = re.search(r"(\d+) generated, (\d+) passed", out)
    print(f"\nschemathesis ({who}): {summary.group(0) if summary else out[-400:]}")
    assert code == 0, out[-6000:]
    assert summary is not None and summary.group(1) == summary.group(2)
    assert int(summary.group(1)) >= 60 * EXAMPLES[who]
    assert re.search(r"✅ Stateful", out), out[-3000:]  # the stateful phase ran and passed


# --- protobuf messages generated from the descriptors, against every RPC ---------------------

SERVICES = {"lots": "flowviz.lots.v1.LotsService", "genealogy": "flowviz.genealogy.v1.GenealogyService",
            "qc": "flowviz.qc.v1.QcService"}  # fmt: skip
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: st.one_of(st.text(max_size=80), st.sampled_from(["FG-DONER-X1", "RAW-BEEF-001",
                                                                                "DONER", "kg", "RAW", "ada"])),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_BYTES: st.one_of(st.binary(max_size=200), st.just(b"lot_code,kind,product,quantity,uom,produced_at\nA-1,RAW,x,1,kg,\n")),
}  # fmt: skip


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                value: st.SearchStrategy[Any] = st.builds(
                    dict, seconds=st.integers(-62135596800, 253402300799), nanos=st.integers(0, 999_999_999)
                )
            elif depth > 2:
                continue
            else:
                value = messages(field.message_type, depth + 1)
        elif field.enum_type is not None:
            value = st.integers(-3, len(field.enum_type.values) + 2)
        else:
            value = _SCALARS[field.type]
        fields[field.name] = st.lists(value, max_size=4) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields)


def build(cls: type[Message], data: dict[str, Any]) -> Message:
    message = cls()
    for name, value in data.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        values = value if field.is_repeated else [value]
        for v in values:
            if field.message_type is not None:
                sub = build(GetMessageClass(field.message_type), v)
                if field.is_repeated:
                    getattr(message, name).add().CopyFrom(sub)
                else:
                    getattr(message, name).CopyFrom(sub)
            elif field.is_repeated:
                getattr(message, name).append(v)
            else:
                setattr(message, name, v)
    return message


METHODS = [(svc, m) for svc, full in SERVICES.items()
           for m in descriptor_pool.Default().FindServiceByName(full).methods]  # fmt: skip


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m.name}" for s, m in METHODS])
def test_generated_messages_never_cause_internal_errors(
    fuzz_system: System, service: str, method: Any
) -> None:
    path = f"/{SERVICES[service]}/{method.name}"
    cls = GetMessageClass(method.input_type)
    # Logout ends the caller's tokens: a made-up admin of its own, so ada's token lives on.
    caller = token("fuzz-signout", "admin") if method.name == "Logout" else token("ada")
    metadata = (("authorization", f"Bearer {caller}"),)
    with grpc.insecure_channel(fuzz_system.addr(service)) as channel:
        call = rpc_caller(channel, path, method)

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(messages(method.input_type))
        def check(data: dict[str, Any]) -> None:
            try:
                request = build(cls, data)
            except (ValueError, TypeError, OverflowError):
                return  # not a message protobuf can hold
            try:
                call(request, metadata)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (path, data, exc)

        check()
