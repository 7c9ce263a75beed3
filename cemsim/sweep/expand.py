"""Expand a spec into points: every base system x the product of the axes (zip groups count as one factor).

Each valid point carries its fully resolved config and a content hash of (config, trace identity, evaluator,
cemsim version): the key of its result file, so a rerun skips it. A point whose config does not load is kept
as an invalid point with the loader's message, reported in the results and never fatal.

``workload.batch: max`` (an axis value or an override) asks for the most users the system holds at the
point's context: the config keeps the base file's batch, and the evaluator searches the capacity model for
the largest batch that fits (cemsim/sweep/fit_batch.py).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cemsim import __version__
from cemsim.code_digest import code_digest
from cemsim.config.loader import ConfigError, load_system
from cemsim.config.system import SystemConfig
from cemsim.sweep.spec import TRACE_AXIS, SweepSpec


@dataclass(frozen=True)
class PointTask:
    """What an evaluate function receives; picklable, so it travels to pool and Ray workers."""

    point_id: str
    system: SystemConfig | None  # None for `kind: eval` points without a base system
    params: dict[str, Any]  # axis name -> value as written in the spec
    trace: str | None
    options: dict[str, Any] = field(default_factory=dict)  # the spec's evaluator options (+ batch: max)


@dataclass
class Point:
    index: int
    base: str  # the base system file ("" when the spec has none)
    params: dict[str, Any]
    overrides: dict[str, Any]
    trace: str | None
    system: SystemConfig | None = None
    point_id: str | None = None  # None when invalid
    error: str | None = None
    resolved: dict[str, Any] = field(default_factory=dict)  # axis name -> resolved (SI) value
    fit_batch: bool = False  # workload.batch: max (the evaluator finds the most users that fit)

    @property
    def valid(self) -> bool:
        return self.error is None

    def task(self, options: dict[str, Any] | None = None) -> PointTask:
        assert self.point_id is not None
        opts = {**(options or {}), **({BATCH_OPTION: FIT_BATCH} if self.fit_batch else {})}
        return PointTask(self.point_id, self.system, dict(self.params), self.trace, opts)


BATCH_PATH = "workload.batch"
BATCH_OPTION = "batch"  # the evaluator option that carries "max"
FIT_BATCH = "max"


def is_fit_batch(value: Any) -> bool:
    """``workload.batch: max``: the most users the system holds (any case, surrounding spaces ignored)."""
    return isinstance(value, str) and value.strip().lower() == FIT_BATCH


def lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path in nested dicts; a path through an absent (None) section is not found."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _known_at(data: Any, dotted: str) -> tuple[bool, list[str]]:
    """Whether the path can exist in this config: known keys, or it passes through an optional section left
    out (None) that an override may fill. Returns the keys at the level where it failed, for a hint."""
    node = data
    for part in dotted.split("."):
        if node is None:
            return True, []
        if not isinstance(node, dict):
            return False, []
        if part not in node:
            return False, list(node)
        node = node[part]
    return True, []


def check_axis_paths(spec: SweepSpec, dumps: list[dict[str, Any]]) -> None:
    """An axis path that no base system knows is a spec error (a typo), not thousands of invalid points."""
    if not dumps:
        return
    for section, names in (("overrides", list(spec.overrides)), ("axes", list(spec.axes))):
        for name in names:
            _check_one(spec, dumps, (section, name), name)
    for i, group in enumerate(spec.zips):
        for name in group:
            _check_one(spec, dumps, ("zip", str(i), name), name)


def _check_one(spec: SweepSpec, dumps: list[dict[str, Any]], at: tuple[str, ...], name: str) -> None:
    if name == TRACE_AXIS:
        return
    hints: list[str] = []
    for dump in dumps:
        ok, keys = _known_at(dump, name)
        if ok:
            return
        hints.extend(keys)
    last = name.split(".")[-1]
    close = difflib.get_close_matches(last, sorted(set(hints)), n=1)
    raise spec.error(
        at,
        f"unknown config path {name!r} in every base system"
        + (f" (did you mean {'.'.join([*name.split('.')[:-1], close[0]])!r}?)" if close else ""),
    )


def _combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    factors: list[list[dict[str, Any]]] = [[{name: v} for v in values] for name, values in spec.axes.items()]
    for group in spec.zips:
        names = list(group)
        factors.append([dict(zip(names, vals, strict=True)) for vals in zip(*group.values(), strict=True)])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*factors)]


@cache
def _file_digest(path: str) -> str:
    """Trace identity: a digest of the trace's bytes (a folder: of every file in it), computed once per run."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def point_hash(
    config: dict[str, Any] | None,
    params: dict[str, Any],
    trace_id: str | None,
    evaluate: str,
    options: dict[str, Any] | None = None,
) -> str:
    payload = {
        "config": config,
        "params": params if config is None else None,
        "trace": trace_id,
        "evaluate": evaluate,
        "options": options or {},
        "cemsim": __version__,
        "code": code_digest(evaluate),
    }
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _trace_for(spec: SweepSpec, template: str | None, system: SystemConfig | None) -> str:
    assert template is not None
    fields = {
        "context": system.workload.context if system else "",
        "system": system.name if system else "",
        "model": system.workload.model if system else "",
    }
    try:
        text = template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise spec.error(
            ("trace",),
            f"unknown placeholder {exc} in trace template; use {{context}}, {{system}} or {{model}}",
        ) from None
    p = Path(text)
    if p.is_absolute():
        return str(p)
    # relative to the working folder first (the CLI's --trace), then to the spec file
    for candidate in (Path.cwd() / p, spec.path.parent / p):
        if candidate.exists():
            return str(candidate.resolve())
    return str((Path.cwd() / p).resolve())


def expand(spec: SweepSpec, trace_override: str | None = None) -> list[Point]:
    """All points of the spec, valid and invalid, in a stable order."""
    combos = _combinations(spec)
    bases = [str(p) for p in spec.systems] or [""]  # "": a `kind: eval` spec without base systems
    dumps = []
    for base in map(str, spec.systems):
        try:
            dumps.append(load_system(base).system.model_dump(mode="json"))
        except ConfigError as exc:
            raise spec.error(("systems",), f"base system does not load: {exc}") from None
    check_axis_paths(spec, dumps)
    points: list[Point] = []
    for base, combo in itertools.product(bases, combos):
        params = dict(combo)
        trace_tmpl = params.pop(TRACE_AXIS, None) or trace_override or spec.trace
        overrides = {**spec.overrides, **params}
        fit_batch = is_fit_batch(overrides.get(BATCH_PATH))
        if fit_batch:  # the config keeps the base's batch; the evaluator searches the capacity model
            overrides.pop(BATCH_PATH)
        pt = Point(len(points), base, dict(combo), overrides, None, fit_batch=fit_batch)
        points.append(pt)
        config_dump = None
        if base:
            try:
                pt.system = load_system(base, overrides).system
            except ConfigError as exc:
                pt.error = f"invalid config: {exc}"
                continue
            config_dump = pt.system.model_dump(mode="json")
            pt.resolved = {
                k: FIT_BATCH if fit_batch and k == BATCH_PATH else lookup(config_dump, k)[1] for k in params
            }
        trace_id = None
        if trace_tmpl is not None:
            pt.trace = _trace_for(spec, str(trace_tmpl), pt.system)
            if not Path(pt.trace).exists():
                pt.error = f"trace {pt.trace} does not exist"
                continue
            trace_id = _file_digest(pt.trace)
        if TRACE_AXIS in combo:
            pt.resolved[TRACE_AXIS] = pt.trace
        options = {**spec.options, BATCH_OPTION: FIT_BATCH} if fit_batch else spec.options
        pt.point_id = point_hash(config_dump, combo, trace_id, spec.evaluate, options)
    return points
