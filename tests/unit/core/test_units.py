"""flowviz/core/units.py: the one conversion rule, in Python and as SQL."""

from __future__ import annotations

import pytest

from flowviz.core.units import KG, MASS_UNITS, UNITS, common_unit, in_unit, to_unit, to_unit_sql


def test_mass_units_convert_through_kg() -> None:
    assert to_unit(1000, "g", KG) == 1.0
    assert to_unit(2, "t", "g") == 2_000_000.0
    assert to_unit(1, "lb", KG) == 0.45359237
    assert to_unit(1, KG, "lb") == pytest.approx(2.2046226218)
    assert to_unit(3.5, KG, KG) == 3.5


def test_other_units_convert_only_to_themselves() -> None:
    assert to_unit(4, "ea", "ea") == 4
    assert to_unit(4, "ea", KG) is None
    assert to_unit(4, KG, "ea") is None
    assert to_unit(1, "l", "ml") is None  # volume is not converted (no density known)


def test_in_unit_raises_where_to_unit_gives_none() -> None:
    assert in_unit(500, "g", KG) == 0.5
    with pytest.raises(ValueError, match="ea does not convert to kg"):
        in_unit(1, "ea", KG)


def test_common_unit() -> None:
    assert common_unit(["kg", "g", "lb", "t"]) == KG
    assert common_unit(["ea", "ea"]) == "ea"
    assert common_unit(["kg", "ea"]) is None
    assert common_unit(["l", "ml"]) is None
    assert common_unit([]) == KG


def test_units_are_the_mass_units_and_the_others() -> None:
    assert MASS_UNITS.keys() <= UNITS
    assert sorted(UNITS - MASS_UNITS.keys()) == ["ea", "l", "ml"]


def test_sql_names_every_mass_factor() -> None:
    sql = to_unit_sql("e.quantity", "e.uom", "l.uom")
    assert sql.startswith("(CASE WHEN e.uom = l.uom THEN (e.quantity)::float8 ELSE")
    for unit, factor in MASS_UNITS.items():
        assert f"WHEN '{unit}' THEN {factor!r}::float8" in sql
