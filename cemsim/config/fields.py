"""Annotated field types for configs: a unit-bearing string becomes an SI float at validation time."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from cemsim.config.units import parse_quantity


def _quantity(dimension: str):
    def parse(value: object) -> float:
        return parse_quantity(value, dimension)

    return BeforeValidator(parse)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _non_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must not be negative")
    return value


_pos = AfterValidator(_positive)
_nonneg = AfterValidator(_non_negative)

# Positive quantities: a zero bandwidth or capacity is a configuration error, not a degenerate system.
Bytes = Annotated[float, _quantity("bytes"), _pos]
Bandwidth = Annotated[float, _quantity("bandwidth"), _pos]
Time = Annotated[float, _quantity("time"), _nonneg]
PositiveTime = Annotated[float, _quantity("time"), _pos]
Frequency = Annotated[float, _quantity("frequency"), _pos]
EnergyPerBit = Annotated[float, _quantity("energy_per_bit"), _nonneg]
Energy = Annotated[float, _quantity("energy"), _nonneg]
Power = Annotated[float, _quantity("power"), _nonneg]
Flops = Annotated[float, _quantity("flops"), _pos]
Area = Annotated[float, _quantity("area"), _nonneg]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Count = Annotated[int, Field(gt=0, strict=False)]

# Which dimension each annotated type carries, so `config show` can print values with units again.
DIMENSION_OF = {
    "Bytes": "bytes",
    "Bandwidth": "bandwidth",
    "Time": "time",
    "PositiveTime": "time",
    "Frequency": "frequency",
    "EnergyPerBit": "energy_per_bit",
    "Energy": "energy",
    "Power": "power",
    "Flops": "flops",
    "Area": "area",
}


class Frozen(BaseModel):
    """Base of every config: immutable, and an unknown key is an error (with a did-you-mean, see loader)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def field_dimension(model: type[BaseModel], name: str) -> str | None:
    """The unit dimension of ``model.name`` (e.g. "bandwidth"), or None for plain numbers and text."""
    info = model.model_fields[name]
    for meta in info.metadata:
        if isinstance(meta, BeforeValidator):
            closure = getattr(meta.func, "__closure__", None) or ()
            for cell in closure:
                if isinstance(cell.cell_contents, str):
                    return cell.cell_contents
    return None
