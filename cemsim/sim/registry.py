"""Simulator classes keyed like the configs: (component, impl), the YAML ``impl:`` field.

config/registry.py maps an ``impl:`` name to its config schema; this maps the same name to the SimPy class
that gives it behaviour. An unknown name fails with the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cemsim.errors import CemsimError

T = TypeVar("T")

_SIMS: dict[str, dict[str, type]] = {}


def register_sim(component: str, *impl_names: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        for impl in impl_names:
            _SIMS.setdefault(component, {})[impl] = cls
        return cls

    return deco


def sim_class(component: str, impl: str) -> type:
    """The simulator class of ``component``'s ``impl``; a CemsimError lists the valid names."""
    table = _SIMS.get(component, {})
    if impl not in table:
        valid = ", ".join(sorted(table)) or "none"
        raise CemsimError(f"no simulator for {component} impl {impl!r}; simulated impls: {valid}")
    return table[impl]


def sim_impls(component: str) -> list[str]:
    return sorted(_SIMS.get(component, {}))
