"""Quantities with units: parsed once, at load, into SI floats.

A value in a config is a string such as "3.35 TB/s", "64 GiB", "120.4 ns", "4 pJ/bit", "14 mW" or
"1 GHz". Each config field declares its dimension; a value whose unit belongs to another dimension,
or that has no unit at all, is refused with a message that shows what was expected. Decimal prefixes
(k, M, G, T, P) are powers of 1000 and binary ones (Ki, Mi, Gi, Ti) powers of 1024, as in the
datasheets the presets quote.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SI_PREFIX = {
    "": 1.0,
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "µ": 1e-6,
    "μ": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
}
_BIG_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY_PREFIX = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_SMALL_PREFIX = {"": 1.0, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6, "m": 1e-3}


@dataclass(frozen=True)
class Dimension:
    name: str  # e.g. "bandwidth"
    si_unit: str  # e.g. "B/s"
    example: str  # shown in error messages
    noun: str  # "a bandwidth", for error messages


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in [
        Dimension("bytes", "B", "64 GiB", "a size in bytes"),
        Dimension("bandwidth", "B/s", "3.35 TB/s", "a bandwidth"),
        Dimension("time", "s", "120.4 ns", "a time"),
        Dimension("frequency", "Hz", "1 GHz", "a frequency"),
        Dimension("energy_per_bit", "J/bit", "4 pJ/bit", "an energy per bit"),
        Dimension("energy", "J", "5 pJ", "an energy"),
        Dimension("power", "W", "14 mW", "a power"),
        Dimension("flops", "FLOP/s", "989 TFLOP/s", "a FLOP rate"),
        Dimension("area", "m^2", "0.1 mm2", "an area"),
    ]
}


def _build_table() -> dict[str, tuple[str, float]]:
    table: dict[str, tuple[str, float]] = {}

    def add(dim: str, unit: str, factor: float) -> None:
        table.setdefault(unit, (dim, factor))

    for p, f in {**_BIG_PREFIX, **_BINARY_PREFIX}.items():
        add("bytes", f"{p}B", f)
        add("bandwidth", f"{p}B/s", f)
        add("bandwidth", f"{p}Bps", f)
        if p in _BIG_PREFIX:
            add("bytes", f"{p}bit", f / 8)
            add("bandwidth", f"{p}bit/s", f / 8)
            add("bandwidth", f"{p}b/s", f / 8)
            add("frequency", f"{p}Hz", f)
            add("flops", f"{p}FLOP/s", f)
            add("flops", f"{p}FLOPS", f)
            add("flops", f"{p}OP/s", f)
            add("power", f"{p}W", f)
    for p, f in _SMALL_PREFIX.items():
        add("time", f"{p}s", f)
        add("energy", f"{p}J", f)
        add("energy_per_bit", f"{p}J/bit", f)
        add("energy_per_bit", f"{p}J/b", f)
        add("power", f"{p}W", f)
    add("energy_per_bit", "pJ/B", 1e-12 / 8)
    add("time", "min", 60.0)
    add("area", "mm2", 1e-6)
    add("area", "mm^2", 1e-6)
    add("area", "m2", 1.0)
    return table


UNITS: dict[str, tuple[str, float]] = _build_table()
_QUANTITY = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\s\d][^\s]*)?\s*$")


class UnitError(ValueError):
    """A quantity that cannot be read as the dimension a field expects."""


def parse_quantity(value: object, dimension: str) -> float:
    """Parse ``value`` (a string with a unit) into an SI float of ``dimension``; raise UnitError if not."""
    dim = DIMENSIONS[dimension]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnitError(f"expected {dim.noun} with a unit, like '{dim.example}', got {value!r}")
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise UnitError(f"{value!r} has no unit; write it with one, like '{dim.example}'")
    m = _QUANTITY.match(value)
    if not m:
        raise UnitError(
            f"cannot read {value!r} as {dim.noun}; write a number and a unit, like '{dim.example}'"
        )
    number, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(number):
        raise UnitError(f"{value!r} is not a finite number")
    if unit is None:
        if number == 0:
            return 0.0
        raise UnitError(f"{value!r} has no unit; write it with one, like '{dim.example}'")
    if unit not in UNITS:
        raise UnitError(f"unknown unit {unit!r} in {value!r}; {dim.noun} is written like '{dim.example}'")
    got_dim, factor = UNITS[unit]
    if got_dim != dimension:
        raise UnitError(
            f"{value!r} is {DIMENSIONS[got_dim].noun}, but this field is {dim.noun} (like '{dim.example}')"
        )
    return number * factor


def format_quantity(si_value: float, dimension: str) -> str:
    """A short human string for an SI value ("3.35 TB/s"), for tables; not used for round trips."""
    unit = DIMENSIONS[dimension].si_unit
    if si_value == 0:
        return f"0 {unit}"
    if dimension in {"time", "energy", "energy_per_bit"} or abs(si_value) < 1:
        prefixes = [("", 1.0), ("m", 1e-3), ("u", 1e-6), ("n", 1e-9), ("p", 1e-12), ("f", 1e-15)]
    else:
        prefixes = [("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)]
    for p, f in prefixes:
        if abs(si_value) >= f * 0.9995:
            return f"{si_value / f:.4g} {p}{unit}"
    p, f = prefixes[-1]
    return f"{si_value / f:.4g} {p}{unit}"
