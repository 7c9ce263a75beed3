"""Load a system YAML: presets plus overrides, provenance, units to SI, validation with file:line errors.

Steps: read the file (keeping lines) -> follow ``base:`` -> expand each component's ``preset:`` and deep-merge
the file's own keys over it -> apply dotted overrides (sweeps, CLI) -> peel ``{value, source, tag}`` leaves into
a provenance table -> validate each component through the ``impl:`` registry -> resolve the model geometry.
Every problem found is reported together, each naming its file, line and field path.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cemsim.config import components as _components  # noqa: F401  (registers the built-in impls)
from cemsim.config.registry import config_class, impls
from cemsim.config.system import SystemConfig
from cemsim.config.units import _QUANTITY
from cemsim.config.workload import ModelGeometry, WorkloadConfig
from cemsim.config.yaml_lines import Path_, Where, YamlSyntaxError, load_with_lines
from cemsim.errors import CemsimError

PRESET_DIR = Path(__file__).parent / "presets"
TAGS = ("measured", "spec", "assumed", "derived")
PROVENANCE_KEYS = {"value", "source", "tag", "note"}
# Component sections that take ``impl:`` and ``preset:``, with the registry component they belong to.
COMPONENT_SECTIONS: dict[Path_, str] = {
    ("gpu",): "gpu",
    ("gpu", "peer_link"): "link",
    ("cem",): "cem",
    ("link",): "link",
    ("host_memory",): "host_memory",
}


@dataclass(frozen=True)
class Provenance:
    tag: str  # measured | spec | assumed | derived | setting (a value written in a system file) | default
    source: str
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line:
            where += f", line {self.line}"
        # An override's label ("--set simulation.max_events=0") names its field already.
        named = f" {self.path}=" in where
        field_txt = f", field {self.path}" if self.path and not named else ""
        return f"{where}{field_txt}: {self.message}"


class ConfigError(CemsimError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        if len(problems) == 1:
            msg = str(problems[0])
        else:
            msg = f"{len(problems)} problems in the configuration:\n" + "\n".join(
                f"  - {p}" for p in problems
            )
        super().__init__(msg)


@dataclass
class LoadedConfig:
    system: SystemConfig
    provenance: dict[str, Provenance]
    files: list[str]

    def to_json_dict(self) -> dict[str, Any]:
        from cemsim.config.derived import derived_figures

        return {
            "config": self.system.model_dump(mode="json"),
            "derived": derived_figures(self.system),
            "provenance": {k: vars(v) for k, v in sorted(self.provenance.items())},
            "files": self.files,
        }


@dataclass
class _Ctx:
    lines: dict[Path_, Where] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def where(self, path: Path_) -> Where | tuple[None, None]:
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return (None, None)

    def add(self, path: Path_, message: str) -> None:
        file, line = self.where(path)
        self.problems.append(Problem(".".join(path), message, file, line))


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict) and not _is_provenance_leaf(over):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else v
        return out
    return copy.deepcopy(over)


def _is_provenance_leaf(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and set(value) <= PROVENANCE_KEYS


def _read(path: Path, ctx: _Ctx, at: Path_ = ()) -> Any:
    try:
        data, lines = load_with_lines(path)
    except YamlSyntaxError as exc:
        raise ConfigError([Problem("", str(exc), exc.file, exc.line)]) from None
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read the file: {exc.strerror or exc}", str(path))]) from None
    ctx.files.append(str(path))
    for p, w in lines.items():
        ctx.lines[(*at, *p)] = w
    return data


def available_presets(component: str) -> list[str]:
    folder = PRESET_DIR / component
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _expand_presets(data: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    for section, component in COMPONENT_SECTIONS.items():
        parent = data
        for key in section[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or not isinstance(parent.get(section[-1]), dict):
            continue
        node = parent[section[-1]]
        name = node.get("preset")
        if name is None:
            continue
        preset_file = PRESET_DIR / component / f"{name}.yaml"
        if not preset_file.is_file():
            choices = available_presets(component)
            hint = difflib.get_close_matches(str(name), choices, n=1)
            ctx.add(
                (*section, "preset"),
                f"unknown {component} preset {name!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; available: {', '.join(choices)}",
            )
            continue
        own_lines = {p: w for p, w in ctx.lines.items() if p[: len(section)] == section}
        preset = _read(preset_file, ctx, at=section)
        ctx.lines.update(own_lines)  # the system file's own lines win over the preset's
        body = {k: v for k, v in node.items() if k != "preset"}
        parent[section[-1]] = _deep_merge(preset, body)
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, label: str) -> None:
    keys = dotted.split(".")
    node = data
    for i, k in enumerate(keys[:-1]):
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(
                [Problem(dotted, f"{where} is a value ({node!r}), not a section with fields", label)]
            )
    if isinstance(node.get(keys[-1]), dict) and _is_provenance_leaf(node[keys[-1]]):
        node[keys[-1]] = dict(node[keys[-1]], value=value, tag="setting", source="override")
    else:
        node[keys[-1]] = value


def _peel_provenance(
    data: Any, path: Path_, ctx: _Ctx, prov: dict[str, Provenance], preset_files: set[str]
) -> Any:
    if _is_provenance_leaf(data):
        tag, source = data.get("tag"), data.get("source")
        if tag not in (*TAGS, "setting"):
            ctx.add((*path, "tag"), f"tag must be one of {', '.join(TAGS)}; got {tag!r}")
        if not source:
            ctx.add(path, "a value written as {value: ...} needs a 'source'")
        file, line = ctx.where(path)
        prov[".".join(path)] = Provenance(str(tag), str(source), file, line)
        return data["value"]
    if isinstance(data, dict):
        return {k: _peel_provenance(v, (*path, k), ctx, prov, preset_files) for k, v in data.items()}
    if isinstance(data, list):
        return [_peel_provenance(v, (*path, str(i)), ctx, prov, preset_files) for i, v in enumerate(data)]
    file, line = ctx.where(path)
    if path and _is_number_like(data):
        tag = "preset-unsourced" if file in preset_files else "setting"
        prov[".".join(path)] = Provenance(tag, file or "override", file, line)
    return data


def _is_number_like(value: Any) -> bool:
    """Numbers and quantity strings ("3.35 TB/s") carry provenance; names and choices do not."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or (isinstance(value, str) and _QUANTITY.match(value) is not None)


def _model_fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    for key in loc:
        if model is None or not isinstance(key, str) or key not in model.model_fields:
            return []
        ann = model.model_fields[key].annotation
        model = next(
            (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
    return list(model.model_fields) if model is not None else []


def _pydantic_problems(exc: ValidationError, model: type[BaseModel], at: Path_, ctx: _Ctx) -> None:
    for err in exc.errors():
        loc = tuple(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            valid = _model_fields_at(model, err["loc"][:-1])
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            msg = f"unknown key {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
            if valid:
                msg += f"; valid keys here: {', '.join(valid)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        ctx.add((*at, *loc), msg)


def _validate_component(data: Any, section: Path_, component: str, ctx: _Ctx) -> Any:
    if not isinstance(data, dict):
        ctx.add(section, f"expected a section (a mapping) for {component}, got {data!r}")
        return None
    impl = data.get("impl")
    if impl is None:
        ctx.add(section, f"missing 'impl:'; valid for {component}: {', '.join(impls(component))}")
        return None
    try:
        cls = config_class(component, str(impl))
    except KeyError:
        hint = difflib.get_close_matches(str(impl), impls(component), n=1)
        ctx.add(
            (*section, "impl"),
            f"unknown impl {impl!r} for {component}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; valid: {', '.join(impls(component))}",
        )
        return None
    body = dict(data)
    if section == ("gpu",) and isinstance(body.get("peer_link"), dict):
        link = _validate_component(body["peer_link"], (*section, "peer_link"), "link", ctx)
        if link is None:
            body.pop("peer_link")
        else:
            body["peer_link"] = link
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        _pydantic_problems(exc, cls, section, ctx)
        return None


def resolve_geometry(model: str, ctx: _Ctx | None = None, base_dir: Path | None = None) -> ModelGeometry:
    """A geometry preset name, or a HuggingFace ``config.json`` (or a folder holding one)."""
    preset = PRESET_DIR / "model" / f"{model}.yaml"
    if preset.is_file():
        data, _ = load_with_lines(preset)
        return ModelGeometry.model_validate(
            {k: (v["value"] if _is_provenance_leaf(v) else v) for k, v in data.items()}
        )
    path = Path(model)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.is_file():
        return geometry_from_hf_config(path)
    raise CemsimError(
        f"model {model!r} is neither a geometry preset ({', '.join(available_presets('model'))}) "
        "nor a HuggingFace config.json path"
    )


def geometry_from_hf_config(path: Path) -> ModelGeometry:
    try:
        cfg = json.loads(path.read_text())
        if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
            cfg = cfg["text_config"]  # multimodal checkpoints (Gemma 3 4B-27B) nest the decoder's config
        heads = int(cfg["num_attention_heads"])
        types = cfg.get("layer_types")
        if types is None and cfg.get("sliding_window_pattern") and cfg.get("sliding_window"):
            types = f"pattern-{int(cfg['sliding_window_pattern'])}"
        hybrid = types is not None and (isinstance(types, str) or "sliding_attention" in types)
        return ModelGeometry(
            name=str(cfg.get("_name_or_path") or path.parent.name),
            layers=int(cfg["num_hidden_layers"]),
            hidden=int(cfg["hidden_size"]),
            q_heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            max_positions=cfg.get("max_position_embeddings"),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            **({"layer_types": types, "local_window": cfg.get("sliding_window")} if hybrid else {}),
        )
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise CemsimError(
            f"{path}: not a usable HuggingFace config.json ({type(exc).__name__}: {exc})"
        ) from None


def load_system(
    path: str | Path, overrides: dict[str, Any] | None = None, labels: dict[str, str] | None = None
) -> LoadedConfig:
    """Load, merge, validate and resolve one system file. Raises ConfigError listing every problem.

    ``overrides`` maps dotted field paths to values; ``labels`` says how each was written (for the CLI,
    ``--set simulation.max_events=0``) so that an error in an override names it rather than the file."""
    path = Path(path)
    ctx = _Ctx()
    if not path.is_file():
        raise ConfigError([Problem("", "no such file" if not path.exists() else "not a file", str(path))])
    data = _read(path, ctx)
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem("", "a system file must be a YAML mapping at the top level", str(path), 1)]
        )
    seen = {path.resolve()}
    while "base" in data:  # `base: other.yaml` (relative to this file): inherit, then override
        base_path = (path.parent / str(data.pop("base"))).resolve()
        if base_path in seen or not base_path.is_file():
            ctx.add(
                ("base",),
                f"base file {base_path} " + ("is a cycle" if base_path in seen else "does not exist"),
            )
            raise ConfigError(ctx.problems)
        seen.add(base_path)
        own = dict(ctx.lines)
        base_data = _read(base_path, ctx)
        ctx.lines.update(own)
        data = _deep_merge(base_data, data)
        path = base_path
    data = _expand_presets(data, ctx)
    for dotted, value in (overrides or {}).items():
        label = (labels or {}).get(dotted) or f"override {dotted}={value}"
        _set_dotted(data, dotted, value, label)
        # Problems at or below an overridden field point at the override, not at the line it replaced.
        at = tuple(dotted.split("."))
        for p in [p for p in ctx.lines if p[: len(at)] == at]:
            del ctx.lines[p]
        ctx.lines[at] = (label, None)
    preset_files = {f for f in ctx.files if Path(f).resolve().is_relative_to(PRESET_DIR.resolve())}
    provenance: dict[str, Provenance] = {}
    data = _peel_provenance(data, (), ctx, provenance, preset_files)

    built: dict[str, Any] = {}
    for section, component in COMPONENT_SECTIONS.items():
        if len(section) == 1 and section[0] in data:
            obj = _validate_component(data[section[0]], section, component, ctx)
            if obj is not None:
                built[section[0]] = obj
    workload = None
    if "workload" not in data:
        ctx.add(("workload",), "required section 'workload' is missing")
    else:
        try:
            workload = WorkloadConfig.model_validate(data["workload"])
        except ValidationError as exc:
            _pydantic_problems(exc, WorkloadConfig, ("workload",), ctx)
    if workload is not None:
        try:
            built["geometry"] = resolve_geometry(workload.model, base_dir=Path(ctx.files[0]).parent)
        except CemsimError as exc:
            ctx.add(("workload", "model"), str(exc))
        built["workload"] = workload
    rest = {
        k: v
        for k, v in data.items()
        if k not in built and k not in ("gpu", "cem", "link", "host_memory", "workload")
    }
    if ctx.problems:
        raise ConfigError(ctx.problems)
    try:
        system = SystemConfig.model_validate({**rest, **built})
    except ValidationError as exc:
        _pydantic_problems(exc, SystemConfig, (), ctx)
        raise ConfigError(ctx.problems) from None
    return LoadedConfig(system, provenance, ctx.files)
