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


# The expectation below is written from the SI and IEC definitions, not from cemsim's unit table: every unit
# the parser accepts must decompose into a prefix and a base unit listed here, with the same dimension and a
# factor equal to prefix x base.
_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_SUBUNIT = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}
_IEC = {"Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4, "Pi": 1024.0**5}
_BASE = {  # base unit: (dimension, SI factor, prefixes it takes)
    "B": ("bytes", 1.0, {**_DECIMAL, **_IEC}),
    "bit": ("bytes", 1 / 8, _DECIMAL),
    "B/s": ("bandwidth", 1.0, {**_DECIMAL, **_IEC}),
    "Bps": ("bandwidth", 1.0, {**_DECIMAL, **_IEC}),
    "bit/s": ("bandwidth", 1 / 8, _DECIMAL),
    "b/s": ("bandwidth", 1 / 8, _DECIMAL),
    "Hz": ("frequency", 1.0, _DECIMAL),
    "FLOP/s": ("flops", 1.0, _DECIMAL),
    "FLOPS": ("flops", 1.0, _DECIMAL),
    "OP/s": ("flops", 1.0, _DECIMAL),
    "W": ("power", 1.0, {**_DECIMAL, **_SUBUNIT}),
    "s": ("time", 1.0, _SUBUNIT),
    "J": ("energy", 1.0, _SUBUNIT),
    "J/bit": ("energy_per_bit", 1.0, _SUBUNIT),
    "J/b": ("energy_per_bit", 1.0, _SUBUNIT),
}
_WHOLE = {"min": ("time", 60.0), "pJ/B": ("energy_per_bit", 1e-12 / 8), "m2": ("area", 1.0)}
_WHOLE |= {"mm2": ("area", 1e-6), "mm^2": ("area", 1e-6)}


def _expected(unit: str) -> tuple[str, float]:
    if unit in _WHOLE:
        return _WHOLE[unit]
    found = [
        (dim, prefixes[unit[: -len(base)]] * factor)
        for base, (dim, factor, prefixes) in _BASE.items()
        if unit.endswith(base) and unit[: -len(base)] in prefixes
    ]
    assert len(found) == 1, f"{unit!r} is not a prefix + base unit of the SI / IEC lists above: {found}"
    return found[0]


def test_the_unit_table_covers_the_usual_spellings() -> None:
    for unit in (
        "B",
        "KiB",
        "GiB",
        "kB",
        "GB",
        "Gbit",
        "GB/s",
        "TB/s",
        "Gb/s",
        "ns",
        "us",
        "µs",
        "ms",
        "min",
    ):
        assert unit in UNITS, unit
    for unit in ("pJ/bit", "fJ/bit", "pJ/B", "W", "mW", "kW", "GHz", "TFLOP/s", "mm2"):
        assert unit in UNITS, unit


@given(number=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_every_unit_parses_to_its_si_and_iec_value(number: float) -> None:
    for unit in UNITS:
        dim, factor = _expected(unit)
        assert math.isclose(parse_quantity(f"{number!r} {unit}", dim), number * factor, rel_tol=1e-12), unit
        # and the same string is refused for every other dimension
        other = next(d for d in DIMENSIONS if d != dim)
        with pytest.raises(UnitError):
            parse_quantity(f"{number!r} {unit}", other)


def test_format_quantity_is_readable() -> None:
    assert format_quantity(3.35e12, "bandwidth") == "3.35 TB/s"
    assert format_quantity(120.4e-9, "time") == "120.4 ns"
    assert format_quantity(0.014, "power") == "14 mW"
