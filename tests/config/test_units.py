import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cemsim.config.units import DIMENSIONS, UNITS, UnitError, format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "dimension", "si"),
    [
        ("3.35 TB/s", "bandwidth", 3.35e12),
        ("512 GB", "bytes", 512e9),
        ("64 GiB", "bytes", 64 * 2**30),
        ("120.4 ns", "time", 120.4e-9),
        ("4 pJ/bit", "energy_per_bit", 4e-12),
        ("14 mW", "power", 0.014),
        ("1 GHz", "frequency", 1e9),
        ("989 TFLOP/s", "flops", 989e12),
        ("2 KiB", "bytes", 2048),
        ("50 fJ/bit", "energy_per_bit", 50e-15),
        ("1e3 ns", "time", 1e-6),
        ("0.1 mm2", "area", 0.1e-6),
    ],
)
def test_parse_known_quantities(text: str, dimension: str, si: float) -> None:
    assert math.isclose(parse_quantity(text, dimension), si, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("text", "dimension", "fragment"),
    [
        ("3.35 TB", "bandwidth", "is a size in bytes, but this field is a bandwidth"),
        ("3.35", "bandwidth", "has no unit"),
        (3.35, "bandwidth", "has no unit"),
        ("3 XB/s", "bandwidth", "unknown unit 'XB/s'"),
        ("fast", "bandwidth", "cannot read 'fast'"),
        ("4 pJ", "energy_per_bit", "is an energy, but this field is an energy per bit"),
        (True, "time", "expected a time"),
    ],
)
def test_bad_quantities_say_what_was_expected(text: object, dimension: str, fragment: str) -> None:
    with pytest.raises(UnitError, match=fragment.replace("(", r"\(")):
        parse_quantity(text, dimension)


@given(
    number=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    unit=st.sampled_from(sorted(UNITS)),
)
def test_every_unit_round_trips_through_its_factor(number: float, unit: str) -> None:
    dim, factor = UNITS[unit]
    assert math.isclose(parse_quantity(f"{number!r} {unit}", dim), number * factor, rel_tol=1e-12)
    # and the same string is refused for every other dimension
    other = next(d for d in DIMENSIONS if d != dim)
    with pytest.raises(UnitError):
        parse_quantity(f"{number!r} {unit}", other)


def test_format_quantity_is_readable() -> None:
    assert format_quantity(3.35e12, "bandwidth") == "3.35 TB/s"
    assert format_quantity(120.4e-9, "time") == "120.4 ns"
    assert format_quantity(0.014, "power") == "14 mW"
