"""The policy tables (flowviz/core/auth.py's `check` over each service's POLICY): every served
method is in its table, and the table grants what the roles promise. No processes: the methods
come from the services' descriptors."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from flowviz.core import auth
from flowviz.core.auth import Identity, PermissionDenied, Unauthenticated
from flowviz.genealogy.v1 import genealogy_pb2
from flowviz.lots.v1 import lots_pb2
from flowviz.qc.v1 import qc_pb2
from services.genealogy.servicer import POLICY as GENEALOGY
from services.lots.servicer import POLICY as LOTS
from services.lots.servicer import PUBLIC as LOTS_PUBLIC
from services.qc.servicer import POLICY as QC

SERVICES: list[tuple[ServiceDescriptor, auth.Policy, frozenset[str]]] = [
    (lots_pb2.DESCRIPTOR.services_by_name["LotsService"], LOTS, LOTS_PUBLIC),
    (genealogy_pb2.DESCRIPTOR.services_by_name["GenealogyService"], GENEALOGY, frozenset()),
    (qc_pb2.DESCRIPTOR.services_by_name["QcService"], QC, frozenset()),
]
ALL: auth.Policy = {**LOTS, **GENEALOGY, **QC}
# Read-only verbs: open to every signed-in role (but the user list, which is an admin's).
# Writing verbs: never to a viewer.
ADMIN_READS = {"/flowviz.lots.v1.LotsService/ListUsers"}
READS = ("Get", "List", "BatchGet", "Export", "Render", "Stream", "Trace")
WRITES = ("Create", "Update", "Record", "Void", "Correct", "Import", "Capture", "QcStatusChanged")
# Signing out and refreshing one's own token.
SESSION = {"Logout", "RefreshToken"}
# The only calls a service makes to another (service:<name> with role `service`).
SERVICE_CALLS = {
    "/flowviz.genealogy.v1.GenealogyService/BatchGetEffectiveStatus",
    "/flowviz.genealogy.v1.GenealogyService/QcStatusChanged",
    "/flowviz.qc.v1.QcService/BatchGetQcStatus",
}


def _who(role: str) -> Identity:
    subject = "service:genealogy" if role == auth.SERVICE else f"{role}-user"
    return Identity(subject, role, role == auth.SERVICE)


def _allowed(method: str, role: str) -> bool:
    try:
        auth.check(ALL, method, _who(role))
    except PermissionDenied:
        return False
    return True


@pytest.mark.parametrize(("service", "policy", "public"), SERVICES, ids=lambda s: getattr(s, "name", ""))
def test_every_served_method_is_in_its_table(
    service: ServiceDescriptor, policy: auth.Policy, public: frozenset[str]
) -> None:
    served = [f"/{service.full_name}/{m.name}" for m in service.methods]
    assert len(served) == len(policy) + len(public)
    auth.validate_policy(policy, [m for m in served if m not in public])  # what serve() checks


def test_sign_in_is_the_only_public_method() -> None:
    assert {"/flowviz.lots.v1.LotsService/IssueToken"} == LOTS_PUBLIC
    assert not LOTS_PUBLIC & ALL.keys()


@pytest.mark.parametrize("method", sorted(ALL))
def test_each_method_by_role(method: str) -> None:
    name = method.rsplit("/", 1)[1]
    allowed = {role: _allowed(method, role) for role in sorted(auth.ROLES)}
    assert allowed[auth.ADMIN]  # admin everywhere
    with pytest.raises(Unauthenticated):
        auth.check(ALL, method, None)
    assert allowed[auth.SERVICE] is (method in SERVICE_CALLS)
    if name in SESSION:  # one's own session: every signed-in role
        assert all(allowed[r] for r in (auth.VIEWER, auth.OPERATOR, auth.QC)), method
    elif name.startswith(WRITES) or method in ADMIN_READS:
        assert not allowed[auth.VIEWER], method
    elif name.startswith(READS):
        assert allowed[auth.VIEWER] and allowed[auth.OPERATOR] and allowed[auth.QC], method
    else:
        pytest.fail(f"{method}: neither a reading nor a writing verb; add it to READS or WRITES")


def test_who_writes_what() -> None:
    by_set = {
        auth.OPERATE: {m.rsplit("/", 1)[1] for m, roles in ALL.items() if roles == auth.OPERATE},
        auth.QUALITY: {m.rsplit("/", 1)[1] for m, roles in ALL.items() if roles == auth.QUALITY},
    }
    assert by_set[auth.QUALITY] == {"RecordQcDecision", "CreateScenario"}
    assert {"CreateLot", "RecordProductionRun", "ImportGenealogy", "RecordShipment"} <= by_set[auth.OPERATE]
    for admin_only in ("CreateUser", "ListUsers", "UpdateUser", "CreateStream", "CreateQcGate"):
        (method,) = [m for m in ALL if m.endswith("/" + admin_only)]
        assert [r for r in sorted(auth.ROLES) if _allowed(method, r)] == [auth.ADMIN], method


def test_a_denial_names_the_roles_needed() -> None:
    with pytest.raises(PermissionDenied) as err:
        auth.check(ALL, "/flowviz.qc.v1.QcService/RecordQcDecision", _who(auth.OPERATOR))
    assert err.value.reason == auth.ROLE_FORBIDDEN
    assert err.value.metadata == {"role": "operator", "needed_roles": "qc,admin"}
