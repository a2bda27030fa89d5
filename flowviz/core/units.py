"""Units of quantity: the one place they are named and converted (validation, recall, balance,
runs, corrections, notifications, the importer's SQL).

Mass units (MASS_UNITS, kg per unit) convert among themselves through kg; any other unit
(ea, l, ml) converts only to itself. `to_unit` is the conversion; `in_unit` is the same for a
unit known to convert (one `common_unit` chose); `to_unit_sql` writes the same rule as SQL. A
set of quantities is summed in its common unit: kg when all are mass, else the one unit they
share, else there is none (None) and no sum is given.
"""

from __future__ import annotations

from collections.abc import Iterable

KG = "kg"
# kg per unit. Hot loops (recall.flows) read the factors directly; the rule is the same.
MASS_UNITS = {KG: 1.0, "g": 0.001, "lb": 0.45359237, "t": 1000.0}
# Units a lot or an edge may be counted in.
UNITS = {*MASS_UNITS, "l", "ml", "ea"}


def to_unit(quantity: float, uom: str, unit: str) -> float | None:
    """quantity (in uom) in `unit`; None when the two do not convert."""
    if uom == unit:
        return quantity
    if uom in MASS_UNITS and unit in MASS_UNITS:
        return quantity * MASS_UNITS[uom] / MASS_UNITS[unit]
    return None


def in_unit(quantity: float, uom: str, unit: str) -> float:
    """to_unit for a unit that converts (one common_unit chose); ValueError when it does not."""
    converted = to_unit(quantity, uom, unit)
    if converted is None:
        raise ValueError(f"{uom} does not convert to {unit}")
    return converted


def common_unit(uoms: Iterable[str]) -> str | None:
    """kg when every unit is a mass unit, else the one unit they all share, else None."""
    units = set(uoms)
    if units <= MASS_UNITS.keys():
        return KG
    return units.pop() if len(units) == 1 else None


def to_unit_sql(quantity: str, uom: str, unit: str) -> str:
    """to_unit() as a SQL expression over the given SQL expressions (float8; NULL: no conversion)."""
    kg = " ".join(f"WHEN '{u}' THEN {f!r}::float8" for u, f in MASS_UNITS.items())
    return (
        f"(CASE WHEN {uom} = {unit} THEN ({quantity})::float8 "
        f"ELSE ({quantity})::float8 * (CASE {uom} {kg} END) / (CASE {unit} {kg} END) END)"
    )
