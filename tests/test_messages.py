"""Messages that say what to do: every 400 names its field, every 403 the role it needs, every
refused QC transition the decisions allowed, every unknown query parameter itself."""

from __future__ import annotations

import ast
import re
import uuid

import httpx
import pytest

from tests.conftest import ROOT, USERS, System, bearer

# The one 400 that cannot know its field: PostgreSQL refused a value (SQLSTATE class 22) that
# every field rule let through; it is a safety net, not a rule.
NO_FIELD = {("flowviz/core/constraints.py", "VALUE_INVALID")}


def _invalid_arguments() -> list[tuple[str, int, str, bool]]:
    """(file, line, reason, names a field) of every InvalidArgument raised in the sources."""
    found = []
    for folder in ("flowviz", "services", "gateway"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "InvalidArgument"):
                    continue
                first = node.args[0] if node.args else None
                reason = first.value if isinstance(first, ast.Constant) else "?"
                names = any(k.arg == "field" for k in node.keywords)
                found.append((str(path.relative_to(ROOT)), node.lineno, str(reason), names))
    return found


def test_every_invalid_argument_names_its_field() -> None:
    found = _invalid_arguments()
    assert len(found) > 20  # the scan sees the services
    missing = [
        f"{f}:{line} {reason}"
        for f, line, reason, names in found
        if not names and (f, reason) not in NO_FIELD
    ]
    assert not missing, "InvalidArgument without field=: " + ", ".join(missing)


# --- over HTTP, on the running system ----------------------------------------------------------

# A value for each path parameter, so that every route's path matches.
SAMPLE = {"lot_code": "FG-DONER-X1", "code": "DONER", "stream_code": "DONER", "run_code": "RUN-1",
          "username": "ana", "id": "1", "edge_id": "1", "delivery_id": "1"}  # fmt: skip


def _every_route() -> list[tuple[str, str, frozenset[str]]]:
    """(method, path, accepted query parameters) of every route the OpenAPI document lists."""
    from gateway.openapi import DOCUMENT

    return [
        (method.upper(), path, frozenset(p["name"] for p in op.get("parameters", ()) if p["in"] == "query"))
        for path, ops in DOCUMENT["paths"].items()
        for method, op in ops.items()
    ]


def test_the_document_lists_exactly_the_query_parameters_of_the_route_table() -> None:
    from gateway.routes import ROUTES

    listed = {(m, p): q for m, p, q in _every_route()}
    assert len(listed) >= len(ROUTES) + 4  # the RPC routes, the streaming ones, health
    for route in ROUTES:
        assert listed[route.method, route.path] == frozenset(route.query), route.path


@pytest.mark.parametrize(("method", "path", "accepted"), _every_route(), ids=lambda v: str(v)[:60])
def test_an_unknown_query_parameter_is_400_naming_it(
    http: httpx.Client, method: str, path: str, accepted: frozenset[str]
) -> None:
    url = path.format(**SAMPLE)
    r = http.request(method, url, params={"no_such_parameter": "1"})
    assert r.status_code == 400, (method, path, r.text)
    error = r.json()["error"]
    assert error["reason"] == "QUERY_PARAMETER_UNKNOWN"
    assert error["details"]["field"] == "no_such_parameter"
    assert "'no_such_parameter'" in error["message"]
    assert all(name in error["message"] for name in accepted)


def test_a_misspelt_filter_is_refused_not_ignored(http: httpx.Client) -> None:
    r = http.get("/api/lots", params={"lot_code": "RAW-SPICE"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "lot_code", r.text
    assert http.get("/api/lots", params={"kind": "RAW"}).status_code == 200  # a known one still works
    r = http.get("/api/traceability/FG-DONER-X1/export.csv", params={"direction": "upstream", "depth": "2"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "depth", r.text


def test_unknown_parameters_are_checked_after_the_token(anonymous: httpx.Client) -> None:
    assert anonymous.get("/api/lots", params={"nope": "1"}).status_code == 401
    r = anonymous.get("/api/health", params={"nope": "1"})
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "nope"


@pytest.mark.parametrize(
    ("user", "method", "path", "body", "needed"),
    [("ana", "POST", "/api/lots", {"lot_code": "X-403", "kind": "RAW", "product": "x", "quantity": 1, "uom": "kg"},
      "operator,admin"),
     ("omar", "GET", "/api/users", None, "admin"),
     ("ana", "POST", "/api/lots/FG-DONER-X1/qc-decisions", {"decision": "pass"}, "qc,admin")],
)  # fmt: skip
def test_a_403_names_the_role_needed(
    system: System, user: str, method: str, path: str, body: object, needed: str
) -> None:
    with httpx.Client(base_url=system.base, headers=bearer(user), timeout=10) as client:
        r = client.request(method, path, json=body)
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["details"]["needed_roles"] == needed
    roles = needed.split(",")
    assert all(role in error["message"] for role in roles), error["message"]
    assert f"'{USERS[user]}'" in error["message"]


def _decide(http: httpx.Client, code: str, decision: str, **extra: object) -> httpx.Response:
    if decision in ("release", "reject"):  # signed with the password of ada, whom `http` is
        extra.setdefault("password", "admin-pass-2026")
    return http.post(f"/api/lots/{code}/qc-decisions", json={"decision": decision, "reason": "test", **extra})


def test_a_refused_qc_transition_lists_the_allowed_decisions(http: httpx.Client) -> None:
    code = f"RAW-M-{uuid.uuid4().hex[:6]}"
    assert http.post("/api/lots", json={"lot_code": code, "kind": "RAW", "product": "x", "quantity": 1,
                                        "uom": "kg"}).status_code == 201  # fmt: skip
    assert _decide(http, code, "pass").status_code == 201
    r = _decide(http, code, "release")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["reason"] == "TRANSITION_NOT_ALLOWED"
    assert error["details"]["allowed"] == "hold,reject" and error["details"]["field"] == "decision"
    assert "allowed: hold, reject" in error["message"]
    assert _decide(http, code, "reject").status_code == 201
    r = _decide(http, code, "release")
    assert r.status_code == 409 and r.json()["error"]["details"]["allowed"] == "", r.text
    assert "rejected is final" in r.json()["error"]["message"]


def test_a_correction_that_may_not_supersede_lists_what_it_may(http: httpx.Client) -> None:
    codes = [f"RAW-S-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for code in codes:
        assert http.post("/api/lots", json={"lot_code": code, "kind": "RAW", "product": "x", "quantity": 1,
                                            "uom": "kg"}).status_code == 201  # fmt: skip
    mine = _decide(http, codes[0], "hold").json()["decision"]["id"]
    other = _decide(http, codes[1], "hold").json()["decision"]["id"]
    r = _decide(http, codes[0], "release", supersedes_id=other)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["reason"] == "SUPERSEDES_OTHER_LOT" and error["details"]["field"] == "supersedes_id"
    assert error["details"]["allowed"] == str(mine) and str(mine) in error["message"]
    # A gate that does not exist is the body's fault, not the lot's: 409 naming it, never 404.
    r = _decide(http, codes[0], "release", gate_code="NO-SUCH-GATE")
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "gate_code", r.text
    r = _decide(http, codes[0], "release", supersedes_id=2**62)
    assert r.status_code == 409 and r.json()["error"]["reason"] == "SUPERSEDES_UNKNOWN", r.text
    assert r.json()["error"]["details"]["allowed"] == str(mine)


def test_a_run_output_without_kind_is_refused_naming_it_and_the_schema_forbids_it(http: httpx.Client) -> None:
    from gateway.openapi import DOCUMENT

    body = DOCUMENT["paths"]["/api/production-runs"]["post"]["requestBody"]["content"]["application/json"]
    output = body["schema"]["properties"]["outputs"]["items"]
    assert "kind" in output["required"] and not re.search(output["properties"]["kind"]["pattern"], "")
    t = uuid.uuid4().hex[:6].upper()
    run = {"run_code": f"RUN-K-{t}", "inputs": [{"lot_code": "RAW-BEEF-001", "quantity": 0.001, "uom": "kg"}],
           "outputs": [{"lot_code": f"OUT-K-{t}", "kind": "", "product": "x", "quantity": 1, "uom": "kg"}]}  # fmt: skip
    r = http.post("/api/production-runs", json=run)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["reason"] == "KIND_INVALID" and error["details"]["field"] == "outputs[0].kind"
    assert error["message"].startswith("outputs[0].kind ")
    del run["outputs"][0]["kind"]  # left out: the same
    assert (
        http.post("/api/production-runs", json=run).json()["error"]["details"]["field"] == "outputs[0].kind"
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [("/api/lots", {"lot_code": "X-1", "kind": "RAW", "product": "x", "quantity": 1}, "uom"),
     ("/api/users", {"username": "zed", "role": "qc", "password": "aaaaaaaaaaaaaaaa"}, "password"),
     ("/api/streams", {"code": "bad code", "name": "x"}, "code"),
     ("/api/lots/FG-DONER-X1/qc-decisions", {"decision": "maybe"}, "decision")],
)  # fmt: skip
def test_a_400_names_its_field(http: httpx.Client, path: str, body: dict[str, object], field: str) -> None:
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"]["field"] == field, r.text


def test_every_scalar_input_of_every_route_has_its_rule_in_the_document() -> None:
    """A new route's fields get their rules from flowviz.core.validation, or this fails: the
    document and the services cannot drift apart by a field nobody described."""
    from google.protobuf.descriptor import Descriptor, FieldDescriptor

    from flowviz.core.validation import field_rule
    from gateway.routes import ROUTES

    def undescribed(message: Descriptor) -> list[str]:
        found = []
        for f in message.fields:
            if f.message_type is not None:
                if f.message_type.full_name != "google.protobuf.Timestamp":
                    found += undescribed(f.message_type)
            elif f.enum_type is None and f.type != FieldDescriptor.TYPE_BOOL:
                found += (
                    [] if field_rule(message.name, f.name, required=False) else [f"{message.name}.{f.name}"]
                )
        return found

    missing = sorted({name for route in ROUTES for name in undescribed(route.input)})
    assert not missing, f"add their rules to flowviz.core.validation.FIELD_RULES: {missing}"


def test_the_import_files_are_documented_as_the_importers_csv_formats() -> None:
    from flowviz.core import importformat
    from gateway.openapi import DOCUMENT

    form = DOCUMENT["paths"]["/api/import"]["post"]["requestBody"]["content"]["multipart/form-data"]
    for name, columns in (("lots", importformat.LOTS_COLUMNS), ("genealogy", importformat.GENEALOGY_COLUMNS)):
        file = form["schema"]["properties"][name]
        header = ",".join(columns)
        assert re.search(file["pattern"], f"{header}\nA-1,RAW,x,1,kg,\n") and not re.search(
            file["pattern"], "x,y\n"
        )
        assert header in file["description"] and form["encoding"][name]["contentType"] == "text/csv"
    assert form["schema"]["additionalProperties"] is False
