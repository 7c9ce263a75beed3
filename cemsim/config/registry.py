"""Registry of component implementations keyed by the YAML ``impl:`` field (Ramulator 2 / Vidur style).

Configs register here; simulator components register their classes under the same keys (sim/), so an
``impl:`` name picks both the schema and the behaviour. An unknown name fails with the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_CONFIGS: dict[str, dict[str, type]] = {}


def register(component: str, impl: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        _CONFIGS.setdefault(component, {})[impl] = cls
        return cls

    return deco


def config_class(component: str, impl: str) -> type:
    """The config class of ``component``'s implementation ``impl``; KeyError lists the valid names."""
    impls = _CONFIGS.get(component, {})
    if impl not in impls:
        raise KeyError(f"unknown impl {impl!r} for {component}; valid: {', '.join(sorted(impls)) or 'none'}")
    return impls[impl]


def impls(component: str) -> list[str]:
    return sorted(_CONFIGS.get(component, {}))


def components() -> list[str]:
    return sorted(_CONFIGS)
