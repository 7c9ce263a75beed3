"""`cemsim config check` and `cemsim config show`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cemsim.config.fields import field_dimension
from cemsim.config.loader import ConfigError, LoadedConfig, load_system
from cemsim.config.units import format_quantity
from cemsim.errors import CemsimError

config_app = typer.Typer(help="Validate and inspect hardware YAML configs.", no_args_is_help=True)
console = Console()


@config_app.command("check")
def check(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="System YAML files to validate."),
) -> None:
    """Validate FILES; on a problem, name the file, the line and the field, and exit 1."""
    problems: list[str] = []
    for f in files:
        try:
            load_system(f)
            console.print(f"[green]ok[/]  {escape(str(f))}")
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise CemsimError("\n".join(problems))


def _dimension_at(lc: LoadedConfig, dotted: str) -> str | None:
    node: object = lc.system
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = getattr(node, part, None) if not isinstance(node, dict) else node.get(part)
        if node is None:
            return None
    if isinstance(node, dict):  # peak_flops by dtype
        return "flops" if parts[-2] == "peak_flops" else None
    cls = type(node)
    if parts[-1] in getattr(cls, "model_fields", {}):
        return field_dimension(cls, parts[-1])
    return None


def _lookup(data: dict, dotted: str) -> object:
    node: object = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@config_app.command("show")
def show(
    file: Path = typer.Argument(..., metavar="FILE", help="System YAML file."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the resolved config, derived figures and provenance as JSON."
    ),
) -> None:
    """Print the resolved config (values in SI, each with its tag and source) and the derived figures."""
    lc = load_system(file)
    data = lc.to_json_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
        return
    sys = lc.system
    console.print(
        f"[bold]{escape(sys.name)}[/]  kv_location={sys.kv_location}  model={escape(sys.geometry.name)}"
    )
    table = Table(title="Resolved values", show_lines=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", no_wrap=True, justify="right")
    table.add_column("tag", no_wrap=True)
    table.add_column("source", overflow="fold", ratio=1)
    for path, prov in sorted(lc.provenance.items()):
        value = _lookup(data["config"], path)
        dim = _dimension_at(lc, path)
        shown = format_quantity(float(value), dim) if dim and isinstance(value, int | float) else str(value)
        table.add_row(path, shown, prov.tag, prov.source)
    console.print(table)
    derived = Table(title="Derived figures (SI)")
    derived.add_column("figure")
    derived.add_column("value", justify="right")
    for key, value in data["derived"].items():
        derived.add_row(key, f"{value:.6g}")
    console.print(derived)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
