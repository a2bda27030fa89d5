"""Schemathesis hooks for tests/test_fuzz.py (loaded through tests/schemathesis.toml).

"Schema-valid request rejected" (positive_data_acceptance) runs on every operation. The only
400s it lets through are the rules no JSON Schema here can state, which the document says in
words (flowviz.core.validation.IN_WORDS and the password's description); each is named below by
its operation, reason and (for passwords) details.rule, with why it cannot be a schema."""

from __future__ import annotations

from typing import Any

import schemathesis

from flowviz.core import passwords

WORDS_ONLY: dict[tuple[str, str, str], str] = {
    # Needs back-references (or a set of the characters), which generators cannot use.
    ("POST /api/users", "PASSWORD_WEAK", passwords.RULE_DISTINCT): "at least 4 different characters",
    (
        "PATCH /api/users/{username}",
        "PASSWORD_WEAK",
        passwords.RULE_DISTINCT,
    ): "at least 4 different characters",
    # Compared on the NFKC, case-folded password: no pattern states "not one of these, in any case".
    ("POST /api/users", "PASSWORD_WEAK", passwords.RULE_COMMON): "not a common password",
    ("PATCH /api/users/{username}", "PASSWORD_WEAK", passwords.RULE_COMMON): "not a common password",
    # Across two fields (body and body, or path and body).
    ("POST /api/users", "PASSWORD_WEAK", passwords.RULE_USERNAME): "does not contain the username",
    (
        "PATCH /api/users/{username}",
        "PASSWORD_WEAK",
        passwords.RULE_USERNAME,
    ): "does not contain the username",
    # Depends on who calls: your own password needs the current one.
    ("PATCH /api/users/{username}", "CURRENT_PASSWORD_REQUIRED", ""): "own password needs the current one",
    ("PATCH /api/users/{username}", "CURRENT_PASSWORD_WRONG", ""): "own password needs the current one",
    # Depends on who calls: a signature is the caller's own password (and holds are signed only
    # where FLOWVIZ_SIGN_HOLDS is set, so no schema of the document can require it).
    ("POST /api/lots/{lot_code}/qc-decisions", "SIGNATURE_REQUIRED", ""): "a release or reject is signed",
    ("POST /api/lots/{lot_code}/qc-decisions", "SIGNATURE_INVALID", ""): "signed with your own password",
    # uniqueItems compares whole items; here one field of the items of two lists must not repeat.
    ("POST /api/production-runs", "DUPLICATE_INPUT", ""): "each lot once among the inputs",
    ("POST /api/production-runs", "DUPLICATE_LOT", ""): "each lot once among inputs and outputs",
    # A GS1 check digit: the 13th digit is a weighted sum of the other twelve, modulo 10.
    ("POST /api/partners", "GLN_CHECK_DIGIT", ""): "a GLN's 13th digit is its GS1 check digit",
    ("PATCH /api/partners/{code}", "GLN_CHECK_DIGIT", ""): "a GLN's 13th digit is its GS1 check digit",
    ("POST /api/locations", "GLN_CHECK_DIGIT", ""): "a GLN's 13th digit is its GS1 check digit",
    ("PATCH /api/locations/{code}", "GLN_CHECK_DIGIT", ""): "a GLN's 13th digit is its GS1 check digit",
    # Known only after DNS (server-side request forgery), or across two fields (format, event_types).
    ("POST /api/webhooks/subscriptions", "TARGET_REFUSED", ""): "every address of the host public",
    ("POST /api/webhooks/subscriptions", "EVENT_TYPE_NOT_EPCIS", ""): "epcis takes EPCIS event types",
    # An order between two timestamps.
    ("POST /api/production-runs", "TIMES_INVALID", ""): "ended_at not before started_at",
    # An order between two query parameters (times, lot codes).
    ("GET /api/fsma204", "TIME_RANGE_INVALID", ""): "from before to",
    ("GET /api/fsma204", "LOT_CODE_RANGE_INVALID", ""): "lot_code_from not after lot_code_to",
    ("GET /api/epcis", "TIME_RANGE_INVALID", ""): "from before to",
    ("GET /api/epcis", "LOT_CODE_RANGE_INVALID", ""): "lot_code_from not after lot_code_to",
}
# The EPCIS capture's body is an EPCIS 2.0 document: GS1's schema (named in the operation's
# description, too large and conditional to embed) and the rules of receipts, runs and shipments.
CAPTURE_REFUSALS = frozenset({"DOCUMENT_INVALID", "EPCIS_SCHEMA_INVALID", "EPCIS_EVENTS_COUNT"})


def _capture_refusal(body: Any) -> bool:
    """The capture refused the document itself, or answered its report of refused events."""
    if not isinstance(body, dict):
        return False
    if body.get("ok") is False and isinstance(body.get("events"), list):
        return True
    return (body.get("error") or {}).get("reason") in CAPTURE_REFUSALS


# Rules of a field on every operation that has it.
ANY_OPERATION: dict[str, str] = {
    # Opaque page tokens carry a digest (flowviz.core.paging): only tokens this API issued pass.
    "PAGE_TOKEN_INVALID": "a next_page_token this API gave",
}


def _import_report(body: Any) -> bool:
    """The import answered with its report of the files' content. To JSON Schema a file part is
    binary: the document states the CSV formats (contentMediaType, the header as a pattern, the
    rows' rules in words) but generators send arbitrary bytes, and the rows' rules span rows and
    the data already there. A malformed upload (an error body) still counts."""
    return isinstance(body, dict) and body.get("ok") is False and bool(body.get("errors"))


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """False (drop the failure) only for a 400 of a rule the document states in words."""
    if getattr(failure, "code", "") != "ST202" or response.status_code != 400:
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    label = f"{case.method.upper()} {case.path}"
    if label == "POST /api/import":
        return not _import_report(body)
    if label == "POST /api/epcis/capture":
        return not _capture_refusal(body)
    error = body.get("error", {}) if isinstance(body, dict) else {}
    if error.get("reason") in ANY_OPERATION:
        return False
    rule = (error.get("details") or {}).get("rule", "") if error.get("reason") == "PASSWORD_WEAK" else ""
    return (label, error.get("reason", ""), rule) not in WORDS_ONLY
