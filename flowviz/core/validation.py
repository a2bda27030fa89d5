"""Input rules shared by every service and the gateway."""

from __future__ import annotations

import re

from flowviz.core.errors import InvalidArgument

LOT_CODE_MAX = 64
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
    if not LOT_CODE_PATTERN.match(value):
        raise InvalidArgument("LOT_CODE_INVALID", f"{field} must be {LOT_CODE_RULE}", field=field)
    return value


KIND_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
# Units a lot or an edge may be counted in; mass units convert among themselves.
MASS_UNITS = {"kg": 1.0, "g": 0.001, "lb": 0.45359237, "t": 1000.0}
UNITS = {*MASS_UNITS, "l", "ml", "ea"}
TEXT_MAX = 200


def kind(value: str) -> str:
    if not KIND_PATTERN.match(value):
        raise InvalidArgument(
            "KIND_INVALID", "kind must be 1-16 upper-case letters, digits or _ (RAW, MIX, FG)"
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
    value = value.strip()
    if required and not value:
        raise InvalidArgument("FIELD_REQUIRED", f"{field} is required", field=field)
    if len(value) > max_len or any(ord(c) < 32 for c in value):
        raise InvalidArgument(
            "FIELD_INVALID", f"{field} must be at most {max_len} printable characters", field=field
        )
    return value


CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,63}$")


def code(value: str, field: str = "code") -> str:
    """Codes of streams, phases, gates and runs: upper-case letters, digits, _ . -, max 64."""
    if not CODE_PATTERN.match(value):
        raise InvalidArgument(
            "CODE_INVALID",
            f"{field} must be 1-64 upper-case letters, digits, _ . - (e.g. DONER)",
            field=field,
        )
    return value
