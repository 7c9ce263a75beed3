"""Sweep specs: read and check a YAML spec, keeping file and line for every key so errors can point at them.

A spec names base system files and axes over dotted config paths (the same paths `load_system` takes as
overrides). Axes under ``axes:`` form a product; each group under ``zip:`` varies together and is one more
factor of the product. Expansion into points lives in expand.py.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cemsim.config.yaml_lines import Path_, Where, YamlSyntaxError, load_with_lines
from cemsim.errors import CemsimError
from cemsim.paths import repo_root

TRACE_AXIS = "trace"  # a reserved axis name: the trace file of each point, not a config override
DEFAULT_EVALUATE = {
    "run": "cemsim.sweep.evaluate:simulate_point",
    "eval": "cemsim.sweep.evaluate:eval_point",
}
TOP_KEYS = (
    "name",
    "description",
    "kind",
    "evaluate",
    "options",
    "systems",
    "trace",
    "overrides",
    "axes",
    "zip",
    "plots",
)


class SpecError(CemsimError):
    """A malformed sweep spec: names the file, the line where known, and the field."""

    def __init__(self, file: str | Path, line: int | None, field_path: str, message: str) -> None:
        where = str(file) + (f", line {line}" if line else "")
        super().__init__(f"{where}, field {field_path}: {message}" if field_path else f"{where}: {message}")


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    kind: Literal["run", "eval"]
    evaluate: str
    systems: list[Path]
    trace: str | None  # a file path, or a template with {context} / {system} / {model}
    overrides: dict[str, Any]
    axes: dict[str, list[Any]]
    zips: list[dict[str, list[Any]]]
    plots: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)  # passed to the evaluate function (e.g. steps)
    description: str = ""
    lines: dict[Path_, Where] = field(default_factory=dict, repr=False, compare=False)

    def line_of(self, *path: str) -> int | None:
        where = self.lines.get(tuple(path))
        return where[1] if where else None

    def error(self, path: tuple[str, ...], message: str) -> SpecError:
        return SpecError(self.path, self.line_of(*path), ".".join(path), message)

    def axis_names(self) -> list[str]:
        return [*self.axes, *(k for group in self.zips for k in group)]


def _resolve_file(raw: str, spec_dir: Path) -> Path | None:
    """A base system: relative to the spec, else to the repo root (so `hwconfigs/h100.yaml` works too)."""
    candidates = [Path(raw)] if Path(raw).is_absolute() else [spec_dir / raw, Path.cwd() / raw]
    root = repo_root()
    if root is not None and not Path(raw).is_absolute():
        candidates.append(root / raw)
    return next((c.resolve() for c in candidates if c.is_file()), None)


def _axis_block(data: Any, at: tuple[str, ...], err) -> dict[str, list[Any]]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise err(at, "expected a mapping from a dotted config path to a list of values")
    out: dict[str, list[Any]] = {}
    for key, values in data.items():
        if not isinstance(values, list) or not values:
            raise err((*at, key), f"axis values must be a non-empty list, got {values!r}")
        out[str(key)] = values
    return out


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep spec; raise SpecError naming file, line and field on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(path, None, "", "no such sweep spec" if not path.exists() else "not a file")
    try:
        data, lines = load_with_lines(path)
    except YamlSyntaxError as exc:
        raise SpecError(exc.file, exc.line, "", str(exc)) from None
    if not isinstance(data, dict):
        raise SpecError(path, 1, "", "a sweep spec must be a YAML mapping at the top level")

    def err(at: tuple[str, ...], message: str) -> SpecError:
        where = lines.get(at) or lines.get(at[:1])
        return SpecError(path, where[1] if where else None, ".".join(at), message)

    for key in data:
        if key not in TOP_KEYS:
            hint = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            raise err(
                (str(key),),
                f"unknown key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid keys: {', '.join(TOP_KEYS)}",
            )
    kind = data.get("kind", "run")
    if kind not in DEFAULT_EVALUATE:
        raise err(("kind",), f"kind must be one of {', '.join(DEFAULT_EVALUATE)}; got {kind!r}")
    evaluate = data.get("evaluate") or DEFAULT_EVALUATE[kind]
    if not isinstance(evaluate, str) or evaluate.count(":") != 1:
        raise err(
            ("evaluate",), f"evaluate must be an import path 'package.module:function'; got {evaluate!r}"
        )

    raw_systems = data.get("systems")
    if kind == "run" and not raw_systems:
        raise err(
            ("systems",), "a 'run' sweep needs 'systems:', a list of base system files (hwconfigs/*.yaml)"
        )
    if raw_systems is None:
        raw_systems = []
    if not isinstance(raw_systems, list):
        raise err(("systems",), "expected a list of system files")
    systems: list[Path] = []
    for i, raw in enumerate(raw_systems):
        found = _resolve_file(str(raw), path.parent)
        if found is None:
            raise err(
                ("systems", str(i)),
                f"base system file {raw!r} not found (relative to {path.parent} or the repo root)",
            )
        systems.append(found)

    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise err(("options",), "expected a mapping of evaluator options, e.g. {steps: 4}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise err(("overrides",), "expected a mapping from a dotted config path to one value")
    axes = _axis_block(data.get("axes"), ("axes",), err)
    raw_zip = data.get("zip") or []
    if isinstance(raw_zip, dict):
        raw_zip = [raw_zip]
    if not isinstance(raw_zip, list):
        raise err(("zip",), "expected a list of groups, each a mapping of axes of equal length")
    zips = []
    for i, group in enumerate(raw_zip):
        block = _axis_block(group, ("zip", str(i)), err)
        lengths = {k: len(v) for k, v in block.items()}
        if len(set(lengths.values())) > 1:
            raise err(("zip", str(i)), f"zipped axes must have equal lengths; got {lengths}")
        zips.append(block)
    seen: set[str] = set(overrides)
    for name in [*axes, *(k for g in zips for k in g)]:
        if name in seen:
            raise err(("axes",), f"path {name!r} is given more than once (overrides, axes, zip)")
        seen.add(name)

    trace = data.get("trace")
    if trace is not None and not isinstance(trace, str):
        raise err(("trace",), "trace must be a file path or a template such as 'traces/ctx{context}.parquet'")
    plots = data.get("plots") or []
    if isinstance(plots, dict):
        plots = [plots]
    if not isinstance(plots, list) or not all(isinstance(p, dict) and "chart" in p for p in plots):
        raise err(("plots",), "plots must be a list of mappings, each with a 'chart:' name and its options")
    return SweepSpec(
        path=path.resolve(),
        name=str(data.get("name") or path.stem),
        kind=kind,
        evaluate=evaluate,
        systems=systems,
        trace=trace,
        overrides=overrides,
        axes=axes,
        zips=zips,
        plots=plots,
        options=options,
        description=str(data.get("description") or ""),
        lines=lines,
    )
