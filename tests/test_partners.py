"""Trading partners and locations: GLN check digits, CRUD through HTTP and gRPC by role, audit."""

from __future__ import annotations

import uuid

import grpc
import httpx
import psycopg
import pytest

from flowviz.core import validation
from flowviz.core.errors import InvalidArgument
from flowviz.lots.v1 import lots_pb2, lots_pb2_grpc
from tests.conftest import System, bearer, grpc_channel

# Published EAN-13 / GLN-13 numbers with their GS1 check digit (same algorithm for both).
GOOD_GLNS = ["4006381333931", "0614141000012", "5901234123457"]


def tag() -> str:
    return uuid.uuid4().hex[:6].upper()


def gln_for(twelve: str) -> str:
    """A GLN from 12 digits, its check digit computed independently of the code under test."""
    odd = sum(int(d) for d in twelve[1::2]) * 3  # positions 2, 4, ... 12 from the left weigh 3
    even = sum(int(d) for d in twelve[0::2])
    return twelve + str((10 - (odd + even) % 10) % 10)


@pytest.mark.parametrize("value", GOOD_GLNS)
def test_gln_with_its_check_digit_is_accepted(value: str) -> None:
    assert validation.gln(value) == value
    assert gln_for(value[:12]) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("4006381333932", "GLN_CHECK_DIGIT"),  # last digit off by one
        ("0614141000013", "GLN_CHECK_DIGIT"),
        ("400638133393", "GLN_INVALID"),  # 12 digits
        ("40063813339310", "GLN_INVALID"),  # 14 digits
        ("40063813339A1", "GLN_INVALID"),
        ("", "GLN_INVALID"),
    ],
)
def test_gln_without_a_valid_check_digit_is_refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.gln(value, "ship_to.gln")
    assert err.value.reason == reason and err.value.metadata["field"] == "ship_to.gln"


def partner_body(code: str, **extra: object) -> dict[str, object]:
    return {"code": code, "name": f"Partner {code}", "roles": ["supplier"], **extra}


def test_partner_crud_by_admin_and_reads_by_everyone(system: System, http: httpx.Client) -> None:
    code = f"SUP-{tag()}"
    gln = gln_for(str(uuid.uuid4().int)[:12])
    r = http.post(
        "/api/partners",
        json=partner_body(code, gln=gln, roles=["customer", "supplier"], contact_name="Eda Yilmaz",
                          contact_email="recall@spice.example", contact_phone="+49 30 1234"),
    )  # fmt: skip
    assert r.status_code == 201, r.text
    partner = r.json()["partner"]
    assert partner["roles"] == ["supplier", "customer"] and partner["gln"] == gln
    assert partner["contact_email"] == "recall@spice.example"
    # Everyone who reads lots reads partners; only an admin writes them.
    for user in ("ana", "omar", "quinn"):
        got = httpx.get(f"{system.base}/api/partners/{code}", headers=bearer(user), timeout=10)
        assert got.status_code == 200 and got.json()["partner"]["name"] == f"Partner {code}"
        denied = httpx.post(
            f"{system.base}/api/partners", json=partner_body(f"X{code}"), headers=bearer(user), timeout=10
        )
        assert denied.status_code == 403, denied.text
        denied = httpx.patch(
            f"{system.base}/api/partners/{code}", json={"name": "Renamed"}, headers=bearer(user), timeout=10
        )
        assert denied.status_code == 403
    r = http.patch(f"/api/partners/{code}", json={"contact_name": "Jan Novak", "roles": ["supplier"]})
    assert r.status_code == 200, r.text
    assert r.json()["partner"]["contact_name"] == "Jan Novak" and r.json()["partner"]["roles"] == ["supplier"]
    assert r.json()["partner"]["gln"] == gln  # left out: unchanged
    listed = http.get("/api/partners", params={"role": "supplier", "page_size": 500}).json()["partners"]
    assert code in {p["code"] for p in listed}
    assert all("supplier" in p["roles"] for p in listed)
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        actions = conn.execute(
            "SELECT action, actor FROM audit_log WHERE entity = 'trading_partner' AND entity_key = %s ORDER BY id",
            (code,),
        ).fetchall()
    assert actions == [("create", "ada"), ("update", "ada")]


def test_partner_refusals_name_the_field(http: httpx.Client) -> None:
    code = f"SUP-{tag()}"
    cases = [
        (partner_body(code, gln="4006381333932"), "GLN_CHECK_DIGIT", "gln"),
        (partner_body(code, gln="12345"), "GLN_INVALID", "gln"),
        (partner_body(code, roles=["importer"]), "ROLE_INVALID", "roles"),
        (partner_body(code, roles=[]), "FIELD_REQUIRED", "roles"),
        (partner_body(code, contact_email="not an address"), "EMAIL_INVALID", "contact_email"),
        (partner_body(code.lower()), "CODE_INVALID", "code"),
    ]
    for body, reason, field in cases:
        r = http.post("/api/partners", json=body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["reason"] == reason and field in error["message"], (body, error)
    assert http.post("/api/partners", json=partner_body(code)).status_code == 201
    again = http.post("/api/partners", json=partner_body(code))
    assert again.status_code == 409 and again.json()["error"]["reason"] == "PARTNER_EXISTS"
    gln = gln_for(str(uuid.uuid4().int)[:12])
    assert http.patch(f"/api/partners/{code}", json={"gln": gln}).status_code == 200
    other = http.post("/api/partners", json=partner_body(f"{code}-2", gln=gln))
    assert other.status_code == 409 and other.json()["error"]["reason"] == "GLN_TAKEN", other.text
    assert http.get("/api/partners/NO-SUCH-PARTNER").status_code == 404
    assert http.get("/api/partners", params={"role": "importer"}).status_code == 400


def test_locations_own_and_a_partners(system: System, http: httpx.Client) -> None:
    t = tag()
    partner = f"CUS-{t}"
    assert http.post("/api/partners", json=partner_body(partner, roles=["customer"])).status_code == 201
    own = http.post("/api/locations", json={"code": f"WH-{t}", "name": "Our warehouse", "country": "DE"})
    assert own.status_code == 201, own.text
    assert own.json()["location"]["partner_code"] == ""
    gln = gln_for(str(uuid.uuid4().int)[:12])
    site = http.post(
        "/api/locations",
        json={"code": f"DC-{t}", "name": "Customer DC", "partner_code": partner, "gln": gln,
              "address": "Hafenstr. 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"},
    )  # fmt: skip
    assert site.status_code == 201, site.text
    assert site.json()["location"]["partner_code"] == partner
    listed = http.get("/api/locations", params={"partner_code": partner}).json()["locations"]
    assert [loc["code"] for loc in listed] == [f"DC-{t}"]
    r = http.patch(f"/api/locations/DC-{t}", json={"city": "Bremen"})
    assert r.status_code == 200 and r.json()["location"]["city"] == "Bremen"
    assert r.json()["location"]["gln"] == gln
    bad = http.post("/api/locations", json={"code": f"X-{t}", "name": "x", "country": "Germany"})
    assert bad.status_code == 400 and bad.json()["error"]["reason"] == "COUNTRY_INVALID"
    bad = http.post("/api/locations", json={"code": f"X-{t}", "name": "x", "partner_code": "NOBODY"})
    assert bad.status_code == 404 and bad.json()["error"]["reason"] == "PARTNER_NOT_FOUND"
    denied = httpx.post(
        f"{system.base}/api/locations",
        json={"code": f"Y-{t}", "name": "y"},
        headers=bearer("omar"),
        timeout=10,
    )
    assert denied.status_code == 403
    # The same over gRPC, as the viewer reads it.
    with grpc_channel(system.addr("lots"), "ana") as channel:
        stub = lots_pb2_grpc.LotsServiceStub(channel)
        got = stub.GetLocation(lots_pb2.GetLocationRequest(code=f"DC-{t}"), timeout=10)
        assert got.location.city == "Bremen" and got.location.partner_code == partner
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateLocation(lots_pb2.CreateLocationRequest(code=f"Z-{t}", name="z"), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
