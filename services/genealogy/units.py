"""Units of quantity: the one place quantities are converted (recall, balance, runs).

Mass units (MASS_UNITS) convert among themselves through kg; any other unit (ea, l, ml)
converts only to itself. A set of quantities is summed in its common unit: kg when all are
mass, else the one unit they share, else there is none (None) and no sum is given.
"""

from __future__ import annotations

from collections.abc import Iterable

from flowviz.core.validation import MASS_UNITS

KG = "kg"


def to_kg(quantity: float, uom: str) -> float | None:
    factor = MASS_UNITS.get(uom)
    return None if factor is None else quantity * factor


def common_unit(uoms: Iterable[str]) -> str | None:
    """kg when every unit is a mass unit, else the one unit they all share, else None."""
    units = set(uoms)
    if units <= MASS_UNITS.keys():
        return KG
    return units.pop() if len(units) == 1 else None


def convert(quantity: float, uom: str, unit: str) -> float:
    """quantity in `unit`, which common_unit chose (kg for mass units, else uom itself)."""
    return quantity * MASS_UNITS[uom] if unit == KG else quantity


def to_unit(quantity: float, uom: str, unit: str) -> float | None:
    """quantity in any `unit`; None when the two do not convert."""
    if uom == unit:
        return quantity
    if uom in MASS_UNITS and unit in MASS_UNITS:
        return quantity * MASS_UNITS[uom] / MASS_UNITS[unit]
    return None


def to_unit_sql(quantity: str, uom: str, unit: str) -> str:
    """to_unit() as a SQL expression over the given SQL expressions (float8; NULL: no conversion)."""
    kg = " ".join(f"WHEN '{u}' THEN {f!r}::float8" for u, f in MASS_UNITS.items())
    return (
        f"(CASE WHEN {uom} = {unit} THEN ({quantity})::float8 "
        f"ELSE ({quantity})::float8 * (CASE {uom} {kg} END) / (CASE {unit} {kg} END) END)"
    )
