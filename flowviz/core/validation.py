"""Input rules shared by every service and the gateway."""

from __future__ import annotations

import re
from typing import Any

from flowviz.core import auth, passwords
from flowviz.core.errors import InvalidArgument
from flowviz.core.units import UNITS

LOT_CODE_MAX = 64
# Patterns are used with fullmatch (Python's `$` also matches before a final newline); they keep
# ^...$ for the OpenAPI document (JSON Schema's `$` is the end) and the database's CHECKs (0009).
# Letters, digits and . _ - : (no spaces, controls or "/", so a code is always one URL segment).
LOT_CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
LOT_CODE_RULE = "1-64 characters: letters, digits and . _ - :, starting with a letter or digit"


def lot_code(value: str, field: str = "lot_code") -> str:
    if not value:
        raise InvalidArgument("LOT_CODE_EMPTY", f"{field} must not be empty", field=field)
    if len(value) > LOT_CODE_MAX:
        raise InvalidArgument(
            "LOT_CODE_TOO_LONG",
            f"{field} is {len(value)} characters; the maximum is {LOT_CODE_MAX}",
            field=field,
        )
    if not LOT_CODE_PATTERN.fullmatch(value):
        raise InvalidArgument("LOT_CODE_INVALID", f"{field} must be {LOT_CODE_RULE}", field=field)
    return value


KIND_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
TEXT_MAX = 200


def kind(value: str, field: str = "kind") -> str:
    if not KIND_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "KIND_INVALID",
            f"{field} must be 1-16 upper-case letters, digits or _ (RAW, MIX, FG)",
            field=field,
        )
    return value


def uom(value: str, field: str = "uom") -> str:
    if value not in UNITS:
        raise InvalidArgument(
            "UOM_INVALID", f"{field} must be one of {', '.join(sorted(UNITS))}", field=field
        )
    return value


def quantity(value: float, field: str = "quantity", *, positive: bool = False) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgument("QUANTITY_INVALID", f"{field} must be a finite number", field=field)
    if value < 0 or (positive and value == 0):
        rule = "greater than 0" if positive else "0 or more"
        raise InvalidArgument("QUANTITY_INVALID", f"{field} must be {rule}", field=field)
    if value >= 1e15:
        raise InvalidArgument("QUANTITY_INVALID", f"{field} is too large", field=field)
    return value


def text(value: str, field: str, *, required: bool = True, max_len: int = TEXT_MAX) -> str:
    """Free text: no control characters, at most max_len; when required, not only spaces."""
    if required and not any(ord(c) > 32 for c in value):
        raise InvalidArgument("FIELD_REQUIRED", f"{field} is required", field=field)
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise InvalidArgument(
            "FIELD_INVALID",
            f"{field} must be at most {max_len} characters, none of them control characters",
            field=field,
        )
    return value


CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,63}$")


def code(value: str, field: str = "code") -> str:
    """Codes of streams, phases, gates and runs: upper-case letters, digits, _ . -, max 64."""
    if not CODE_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "CODE_INVALID",
            f"{field} must be 1-64 upper-case letters, digits, _ . - (e.g. DONER)",
            field=field,
        )
    return value


GLN_PATTERN = re.compile(r"^[0-9]{13}$")


def gs1_check_digit(digits: str) -> int:
    """The GS1 check digit of `digits` (the identifier without it): weights 3, 1, 3, ... from
    the right, then up to the next multiple of 10 (GS1 General Specifications 7.9)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10


def gln(value: str, field: str = "gln") -> str:
    """A GS1 Global Location Number: 13 digits, the last the check digit of the other 12."""
    if not GLN_PATTERN.fullmatch(value):
        raise InvalidArgument("GLN_INVALID", f"{field} must be 13 digits (a GS1 GLN)", field=field)
    expected = gs1_check_digit(value[:12])
    if int(value[12]) != expected:
        raise InvalidArgument(
            "GLN_CHECK_DIGIT",
            f"{field} {value} ends in {value[12]}; its GS1 check digit is {expected}",
            field=field,
        )
    return value


PARTNER_ROLES = ("supplier", "customer", "carrier")
# Reference documents of receipts and shipments (EPCIS business transaction types po, bol, inv, desadv).
DOCUMENT_TYPES = ("PO", "BOL", "INVOICE", "ASN")
# Spelled without \s, whose meaning differs between Python and the JSON Schema (ECMA) regexes of
# the OpenAPI document (\x85 is white space to Python only): no controls, no spaces, no @.
_EMAIL_CHAR = r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
EMAIL_PATTERN = re.compile(rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}{{1,190}}\.{_EMAIL_CHAR}{{1,63}}$")
COUNTRY_PATTERN = re.compile(r"^[A-Z]{2}$")


def email(value: str, field: str = "contact_email") -> str:
    if not EMAIL_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "EMAIL_INVALID", f"{field} must be an e-mail address (name@domain)", field=field
        )
    return value


def country(value: str, field: str = "country") -> str:
    if not COUNTRY_PATTERN.fullmatch(value):
        raise InvalidArgument(
            "COUNTRY_INVALID",
            f"{field} must be an ISO 3166-1 alpha-2 code (two capitals, e.g. DE)",
            field=field,
        )
    return value


# --- the same rules as JSON Schema, for the OpenAPI document ---------------------------------

# The event types of flowviz.core.outbox (not imported: outbox needs the database layer).
EVENT_TYPES = (
    "qc.decision.recorded",
    "lot.blocked",
    "lot.unblocked",
    "run.recorded",
    "drill.completed",
    "shipment.recorded",
    "shipment.refused",
)

_TEXT = r"^[^\x00-\x1f]*$"
_TEXT_REQUIRED = r"^[^\x00-\x1f]*[^\x00-\x20][^\x00-\x1f]*$"


def _text(max_len: int) -> tuple[dict[str, object], dict[str, object]]:
    return (
        {"type": "string", "pattern": _TEXT_REQUIRED, "maxLength": max_len},
        {"type": "string", "pattern": _TEXT, "maxLength": max_len},
    )


def _either(pattern: str) -> tuple[dict[str, object], dict[str, object]]:
    """(required form, optional form): an optional field may be empty, meaning "not set"."""
    return {"type": "string", "pattern": pattern}, {"type": "string", "pattern": f"^$|{pattern}"}


INT64_MAX = 2**63 - 1
_QUANTITY = {"type": "number", "minimum": 0, "exclusiveMaximum": 1e15}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e15}
_CODE = _either(CODE_PATTERN.pattern)
# The password policy (flowviz.core.passwords): its length and no control characters. (At least
# MIN_DISTINCT_CHARS different characters needs back-references, which generators of JSON Schema
# cannot use: it is said in words.)
_PASSWORD = f"^[^{passwords.CONTROL_CLASS}]{{{passwords.MIN_LENGTH},{passwords.MAX_LENGTH}}}$"
PASSWORD_WORDS = (
    f"{passwords.MIN_LENGTH}-{passwords.MAX_LENGTH} characters as typed, no control characters (the pattern). "
    "Also refused with PASSWORD_WEAK, as no schema here can say it (details.rule): fewer than "
    f"{passwords.MIN_DISTINCT_CHARS} different characters (`{passwords.RULE_DISTINCT}`), a common password "
    f"(`{passwords.RULE_COMMON}`), one that contains the username (`{passwords.RULE_USERNAME}`)."
)
OWN_PASSWORD_WORDS = (
    " Changing your own password needs `current_password` (400 CURRENT_PASSWORD_REQUIRED or "
    "CURRENT_PASSWORD_WRONG otherwise)."
)


def _password(words: str) -> tuple[dict[str, Any], dict[str, Any]]:
    required, optional = _either(_PASSWORD)
    required |= {"minLength": passwords.MIN_LENGTH, "maxLength": passwords.MAX_LENGTH, "description": words}
    return required, optional | {"maxLength": passwords.MAX_LENGTH, "description": words}


# Opaque (flowviz.core.paging): which strings this API issued no schema can state.
_PAGE_TOKEN = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9_-]{0,64}$",
    "description": "Opaque: a next_page_token this API gave, passed back unchanged; empty for the "
    "first page. Any other string is a 400 PAGE_TOKEN_INVALID.",
}


# field name -> (schema when the field is required, schema when it may be left out or empty);
# "Message.field" overrides "field".
FIELD_RULES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "lot_code": ({"type": "string", "pattern": LOT_CODE_PATTERN.pattern, "maxLength": LOT_CODE_MAX},) * 2,
    "kind": _either(KIND_PATTERN.pattern),
    "uom": ({"type": "string", "enum": sorted(UNITS)}, {"type": "string", "enum": ["", *sorted(UNITS)]}),
    "quantity": (_QUANTITY, _QUANTITY),
    "RunLine.quantity": (_POSITIVE, _POSITIVE),
    "product": _text(TEXT_MAX),
    "name": _text(TEXT_MAX),
    "display_name": _text(TEXT_MAX),
    "operator": _text(TEXT_MAX),
    "description": _text(1000),
    "reason": _text(1000),
    "idempotency_key": _text(200),
    "code": _CODE,
    "stream_code": _CODE,
    "phase_code": _CODE,
    "gate_code": _CODE,
    "run_code": _CODE,
    "page_size": ({"type": "integer", "minimum": 0, "maximum": 500},) * 2,
    "page_token": (_PAGE_TOKEN,) * 2,
    "seq": (
        {"type": "integer", "minimum": 1, "maximum": 1000},
        {"type": "integer", "minimum": 0, "maximum": 1000},
    ),
    "supersedes_id": ({"type": "integer", "minimum": 0, "maximum": INT64_MAX},) * 2,
    "id": ({"type": "integer", "minimum": 1, "maximum": INT64_MAX},) * 2,
    "username": _either(r"^[a-z0-9_.-]{1,64}$"),
    "IssueTokenRequest.username": ({"type": "string", "minLength": 1, "maxLength": 64},) * 2,
    "IssueTokenRequest.password": ({"type": "string", "minLength": 1, "maxLength": 1024},) * 2,
    "password": _password(PASSWORD_WORDS),
    "UpdateUserRequest.password": _password(PASSWORD_WORDS + OWN_PASSWORD_WORDS),
    "current_password": (
        {"type": "string", "maxLength": passwords.MAX_LENGTH, "description": OWN_PASSWORD_WORDS},
    )
    * 2,
    "role": (
        {"type": "string", "enum": ["viewer", "operator", "qc", "admin"]},
        {"type": "string", "enum": ["", "viewer", "operator", "qc", "admin"]},
    ),
    "max_depth": ({"type": "integer", "minimum": 0, "maximum": 200},) * 2,
    "max_nodes": ({"type": "integer", "minimum": 0, "maximum": 100_000},) * 2,
    "tolerance": ({"type": "number", "minimum": 0, "maximum": 1},) * 2,
    "ListLotsRequest.kind": (_either(KIND_PATTERN.pattern)[1],) * 2,
    "ListLotsRequest.status": (
        {"type": "string", "enum": ["", "pending", "passed", "on_hold", "released", "rejected"]},
    )
    * 2,
    "ListLotsRequest.product": _text(TEXT_MAX),
    "ListLotsRequest.effective_status": (
        {"type": "string", "enum": ["", "pending", "passed", "on_hold", "released", "rejected"]},
    )
    * 2,
    "lot_code_prefix": _either(r"^[A-Za-z0-9._:-]{1,64}$"),
    "edge_id": ({"type": "integer", "minimum": 1},) * 2,
    "gln": _either(GLN_PATTERN.pattern),
    "partner_code": _CODE,
    "contact_email": _either(EMAIL_PATTERN.pattern),
    "country": _either(COUNTRY_PATTERN.pattern),
    "contact_name": _text(TEXT_MAX),
    "contact_phone": _text(TEXT_MAX),
    "address": _text(500),
    "city": _text(TEXT_MAX),
    "postal_code": _text(TEXT_MAX),
    "roles": (
        {"type": "array", "items": {"enum": list(PARTNER_ROLES)}, "minItems": 1, "uniqueItems": True},
        {"type": "array", "items": {"enum": list(PARTNER_ROLES)}, "uniqueItems": True},
    ),
    "ListTradingPartnersRequest.role": ({"type": "string", "enum": ["", *PARTNER_ROLES]},) * 2,
    "supplier_code": _CODE,
    "customer_code": _CODE,
    "carrier_code": _CODE,
    "ship_from_location_code": _CODE,
    "ship_to_location_code": _CODE,
    "receiving_location_code": _CODE,
    "document_type": ({"type": "string", "enum": list(DOCUMENT_TYPES)},) * 2,
    "document_number": _text(100),
    "supplier_lot_code": _text(64),
    "expires_on": (
        {"type": "string", "format": "date"},
        {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}]},
    ),
    "RecordReceiptRequest.quantity": (_POSITIVE, _POSITIVE),
    "RecordShipmentRequest.quantity": (_POSITIVE, _POSITIVE),
    "GetReceiptRequest.id": ({"type": "integer", "minimum": 1, "maximum": 2**63 - 1},) * 2,
    "GetShipmentRequest.id": ({"type": "integer", "minimum": 1, "maximum": 2**63 - 1},) * 2,
    # The time of a tracking event is required (a run's times are optional).
    "received_at": ({"type": "string", "format": "date-time"},) * 2,
    "shipped_at": ({"type": "string", "format": "date-time"},) * 2,
    # Webhooks (issue 16). Which addresses a target may have is said in words (IN_WORDS).
    "target_url": ({"type": "string", "pattern": r"^https?://[^\s/?#@]+(/[^\s#]*)?$", "maxLength": 2048},)
    * 2,
    "event_types": (
        {"type": "array", "items": {"enum": list(EVENT_TYPES)}, "minItems": 1, "uniqueItems": True},
        {"type": "array", "items": {"enum": list(EVENT_TYPES)}, "uniqueItems": True},
    ),
    "CreateSubscriptionRequest.format": ({"type": "string", "enum": ["", "native", "epcis"]},) * 2,
    "ListDeliveriesRequest.status": ({"type": "string", "enum": ["", "pending", "delivered", "failed"]},) * 2,
    "delivery_id": ({"type": "integer", "minimum": 1, "maximum": INT64_MAX},) * 2,
}


# Fields each item of a list of messages must carry, by "Message.field" of the list.
NESTED_REQUIRED: dict[str, tuple[str, ...]] = {
    "RecordProductionRunRequest.inputs": ("lot_code", "quantity", "uom"),
    "RecordProductionRunRequest.outputs": ("lot_code", "kind", "product", "quantity", "uom"),
}
# Fields of such items the service does not read there (any string is accepted and ignored).
NESTED_IGNORED: dict[str, tuple[str, ...]] = {"RecordProductionRunRequest.inputs": ("kind", "product")}
MAX_ITEMS = 100
# Rules across fields of one request, as JSON Schema (allOf), by request message.
CONDITIONS: dict[str, list[dict[str, Any]]] = {
    # A reason is required unless the decision is pass.
    "RecordQcDecisionRequest": [
        {
            "if": {"properties": {"decision": {"const": "pass"}}},
            "else": {"required": ["reason"], "properties": {"reason": FIELD_RULES["reason"][0]}},
        }
    ],
    # A phase belongs to a stream: phase_code needs stream_code (STREAM_REQUIRED).
    "RecordProductionRunRequest": [
        {
            "if": {"required": ["phase_code"], "properties": {"phase_code": {"minLength": 1}}},
            "then": {"required": ["stream_code"], "properties": {"stream_code": {"minLength": 1}}},
        }
    ],
}
# Rules no JSON Schema here can state, in words, by request message (the document's description
# of the request body; tests/schemathesis_hooks.py names the same reasons).
IN_WORDS: dict[str, str] = {
    "RecordProductionRunRequest": "Each lot appears once among inputs and outputs (400 DUPLICATE_INPUT, "
    "DUPLICATE_LOT); ended_at is not before started_at (400 TIMES_INVALID). The data decides the rest: inputs "
    "exist (404), convert to their lot's unit and hold enough (409), are not on hold (409 LOT_BLOCKED); "
    "outputs and the run code are new (409). An Idempotency-Key reused with another body: 422.",
    "RecordQcDecisionRequest": "A release or reject (a hold too where FLOWVIZ_SIGN_HOLDS is set) is signed: "
    "password is the caller's own, re-entered (400 SIGNATURE_REQUIRED, SIGNATURE_INVALID; 429 after repeated "
    "wrong ones). The decision records the signer's name, the time and the meaning.",
    "CreateUserRequest": PASSWORD_WORDS,
    "CreateSubscriptionRequest": "Every address of the target's host must be public (400 TARGET_REFUSED: "
    "loopback, private and link-local ones only where FLOWVIZ_WEBHOOKS_ALLOW_PRIVATE is set, cloud metadata "
    "never); the address is known only after DNS. An epcis subscription takes only event types with an EPCIS "
    "event (400 EVENT_TYPE_NOT_EPCIS).",
    "UpdateUserRequest": "At least one active administrator always remains: disabling or demoting the last "
    "one is refused (409 LAST_ADMIN)." + OWN_PASSWORD_WORDS,
}


def field_rule(message: str, field: str, *, required: bool) -> dict[str, object] | None:
    rule = FIELD_RULES.get(f"{message}.{field}") or FIELD_RULES.get(field)
    return None if rule is None else rule[0 if required else 1]


USERNAME = re.compile(r"^[a-z0-9_.-]{1,64}$")


def username(value: str) -> str:
    if not USERNAME.fullmatch(value):
        raise InvalidArgument("USERNAME_INVALID", "username must be 1-64 of a-z 0-9 _ . -", field="username")
    return value


def role(value: str) -> str:
    if value not in auth.USER_ROLES:
        raise InvalidArgument(
            "ROLE_INVALID", f"role must be one of {', '.join(auth.USER_ROLES)}", field="role"
        )
    return value
