"""flowviz/core/validation.py: each input rule, and its JSON Schema form (the OpenAPI document's)
accepting exactly what the Python rule accepts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from flowviz.core import validation as v
from flowviz.core.errors import InvalidArgument


def _reason(rule: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, dict[str, str]]:
    with pytest.raises(InvalidArgument) as err:
        rule(*args, **kwargs)
    return err.value.reason, err.value.metadata


def _pattern(field: str, *, required: bool = True, message: str = "") -> re.Pattern[str]:
    rule = v.field_rule(message, field, required=required)
    assert rule is not None
    return re.compile(str(rule["pattern"]))


LOT_CODES = {
    "RAW-BEEF-001": True,
    "a": True,
    "9.x_y:z-": True,
    "A" * 64: True,
    "A" * 65: False,
    "": False,
    "-lead": False,
    ".lead": False,
    "has space": False,
    "a/b": False,
    "ümlaut": False,
    "trail\n": False,  # Python's $ would match before a final newline; fullmatch does not
}


@pytest.mark.parametrize(("value", "ok"), LOT_CODES.items())
def test_lot_code(value: str, ok: bool) -> None:
    if ok:
        assert v.lot_code(value) == value
    else:
        reason, meta = _reason(v.lot_code, value, "parent")
        assert reason in {"LOT_CODE_EMPTY", "LOT_CODE_TOO_LONG", "LOT_CODE_INVALID"}
        assert meta == {"field": "parent"}
    assert bool(_pattern("lot_code").fullmatch(value)) is ok


def test_lot_code_reasons() -> None:
    assert _reason(v.lot_code, "")[0] == "LOT_CODE_EMPTY"
    assert _reason(v.lot_code, "A" * 65)[0] == "LOT_CODE_TOO_LONG"
    assert _reason(v.lot_code, "a b")[0] == "LOT_CODE_INVALID"


@pytest.mark.parametrize(
    ("rule", "field", "good", "bad", "reason"),
    [
        (
            v.kind,
            "kind",
            ["RAW", "FG", "MIX_2", "A" * 16],
            ["raw", "", "2FG", "A" * 17, "F G"],
            "KIND_INVALID",
        ),
        (v.code, "code", ["DONER", "RUN-1.2_X", "9"], ["doner", "", "-X", "A" * 65, "A B"], "CODE_INVALID"),
        (v.country, "country", ["DE", "US"], ["de", "DEU", "", "D1"], "COUNTRY_INVALID"),
        (
            v.email,
            "contact_email",
            ["qa@example.com", "a.b+c@mail.example.org"],
            ["no-at.example", "a@b", "a b@example.com", "a@@example.com", "@example.com", ""],
            "EMAIL_INVALID",
        ),
    ],
)
def test_pattern_rules_agree_with_their_schema(
    rule: Callable[[str], str], field: str, good: list[str], bad: list[str], reason: str
) -> None:
    pattern = _pattern(field)
    for value in good:
        assert rule(value) == value
        assert pattern.fullmatch(value), value
    for value in bad:
        assert _reason(rule, value)[0] == reason, value
        assert not pattern.fullmatch(value), value
    # An optional field may also be left empty ("not set").
    assert _pattern(field, required=False).fullmatch("")


def test_uom() -> None:
    assert [v.uom(u) for u in ("kg", "g", "lb", "t", "l", "ml", "ea")]
    assert _reason(v.uom, "KG") == ("UOM_INVALID", {"field": "uom"})
    assert _reason(v.uom, "", "edge_uom") == ("UOM_INVALID", {"field": "edge_uom"})
    rule = v.field_rule("", "uom", required=True)
    assert rule == {"type": "string", "enum": ["ea", "g", "kg", "l", "lb", "ml", "t"]}


@pytest.mark.parametrize("value", [0.0, 1.5, 1e15 - 1])
def test_quantity_accepts(value: float) -> None:
    assert v.quantity(value) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.001, 1e15])
def test_quantity_refuses(value: float) -> None:
    assert _reason(v.quantity, value) == ("QUANTITY_INVALID", {"field": "quantity"})


def test_positive_quantity() -> None:
    assert v.quantity(0.1, positive=True) == 0.1
    assert _reason(v.quantity, 0.0, "inputs[0].quantity", positive=True) == (
        "QUANTITY_INVALID",
        {"field": "inputs[0].quantity"},
    )
    assert v.field_rule("RunLine", "quantity", required=True) == {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1e15,
    }


TEXTS = {
    "doner mix": (True, True),
    "": (False, True),  # (accepted when required, accepted when optional)
    "   ": (False, True),
    "tab\there": (False, False),
    "nul\x00": (False, False),
    "ünïcode ✓": (True, True),
    "x" * 200: (True, True),
    "x" * 201: (False, False),
}


@pytest.mark.parametrize(("value", "expected"), TEXTS.items())
def test_text_and_its_schema(value: str, expected: tuple[bool, bool]) -> None:
    for required, ok in zip((True, False), expected, strict=True):
        rule = v.field_rule("", "product", required=required)
        assert rule is not None
        schema_ok = bool(re.fullmatch(str(rule["pattern"]), value)) and len(value) <= int(
            str(rule["maxLength"])
        )
        if ok:
            assert v.text(value, "product", required=required) == value
        else:
            reason, meta = _reason(v.text, value, "product", required=required)
            assert reason in {"FIELD_REQUIRED", "FIELD_INVALID"} and meta == {"field": "product"}
        assert schema_ok is ok, (value, required)


def test_gln_check_digit() -> None:
    # GS1's own example: 629104150021 -> check digit 3.
    assert v.gs1_check_digit("629104150021") == 3
    assert v.gln("6291041500213") == "6291041500213"
    reason, meta = _reason(v.gln, "6291041500214")
    assert (reason, meta) == ("GLN_CHECK_DIGIT", {"field": "gln"})
    assert _reason(v.gln, "629104150021")[0] == "GLN_INVALID"
    assert _reason(v.gln, "62910415002a3")[0] == "GLN_INVALID"
    assert _pattern("gln").fullmatch("6291041500214")  # the check digit is stated in words


def test_message_rules_override_field_rules() -> None:
    assert v.field_rule("ListLotsRequest", "kind", required=True) == v.field_rule("", "kind", required=False)
    assert v.field_rule("GetReceiptRequest", "id", required=True) == {
        "type": "integer",
        "minimum": 1,
        "maximum": 2**63 - 1,
    }
    assert v.field_rule("", "no_such_field", required=True) is None
