"""`cemsim run HWCONFIG --trace TRACE`: replay a trace on a simulated system (SimPy) and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from cemsim.commands.outputs import check_output_dir, check_output_file
from cemsim.config.loader import load_system
from cemsim.config.units import format_quantity
from cemsim.config.workload import parse_tokens
from cemsim.errors import CemsimError

console = Console()


def parse_sets(sets: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``--set gpu.count=2 --set cem.channel_bandwidth="20 GB/s"`` -> load_system overrides, and how
    each was written (``--set gpu.count=2``) for errors to name."""
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CemsimError(f"--set {item!r}: write dotted.path=value, e.g. --set gpu.count=2")
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            values[key] = raw
        labels[key] = f"--set {key}={raw}"
    return values, labels


def attention_line(att: dict[str, Any]) -> str:
    """One line saying what attention was replayed (the result's ``attention`` record)."""
    if not att:
        return ""
    parts = [str(att.get("policy", "?"))]
    if att.get("k"):
        parts.append(f"k {att['k']} per {str(att.get('topk_scope', 'query_head')).replace('_', ' ')}")
    parts.append(f"window {att.get('window')}, sinks {att.get('sinks')}")
    ratio = att.get("replayed_filter_ratio")
    if ratio:
        src = att.get("survival_source") or ("scenario" if att.get("filter_ratio") else "trace")
        parts.append(f"filter ratio {ratio:.1f}x ({src})")
    if att.get("upper_bound"):
        parts.append("an upper bound (oracle)")
    return "attention: " + "; ".join(parts)


def _table(res: Any, twin: Any) -> Table:
    t = Table(title=f"{res.system}: {res.context_tokens} tokens, batch {res.batch} ({res.kind})")
    t.add_column("quantity")
    t.add_column("simulated (DES)", justify="right")
    t.add_column("analytic estimate", justify="right")

    def row(name: str, a: float | None, b: float | None, dim: str | None) -> None:
        def fmt(v: float | None) -> str:
            if v is None:
                return "-"
            return format_quantity(v, dim) if dim else f"{v:.4g}"

        t.add_row(name, fmt(a), fmt(b))

    row("latency per token", res.latency_per_token_s, twin.latency_per_token_s, "time")
    bounds = twin.latency_bounds_s
    if bounds:
        lo, hi = (format_quantity(bounds[k], "time") for k in ("lower", "upper"))
        t.add_row("  analytic bounds (lower - upper)", "", f"{lo} - {hi}")
    row("throughput (tokens/s)", res.throughput_tokens_per_s, twin.throughput_tokens_per_s, None)
    row("energy per token (J)", res.energy_per_token_j, twin.energy_per_token_j, None)
    for k, v in res.time_breakdown_s.items():
        row(f"  time: {k}", v, twin.time_breakdown_s.get(k), "time")
    for k, v in res.energy_breakdown_j.items():
        row(f"  energy (J): {k}", v, twin.energy_breakdown_j.get(k), None)
    for k, v in res.bandwidth_utilization.items():
        row(f"  utilization: {k}", v, twin.bandwidth_utilization.get(k), None)
    for k, v in res.user_latency_s.items():
        row(f"  user attention latency {k}", v, None, "time")
    t.caption = f"{res.steps} step(s), {res.events} events in {res.wall_s:.2f} s"
    return t


def run(
    hwconfig: Path = typer.Argument(..., metavar="HWCONFIG", help="System YAML (hwconfigs/*.yaml)."),
    trace: Path = typer.Option(
        ..., "--trace", help="Trace file written by `cemsim capture` or `cemsim trace`."
    ),
    context: str | None = typer.Option(
        None,
        "--context",
        help="Context tokens (131072, 128K, 1M); default: the trace's. Below the trace's, survival is scaled; above, project the trace first.",
    ),
    batch: int | None = typer.Option(
        None, "--batch", min=1, help="Users decoding together; default: workload.batch."
    ),
    steps: int | None = typer.Option(
        None, "--steps", help="Decode steps to replay (default: every step of the trace)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Path | None = typer.Option(
        None, "--out", help="Write a run directory: resolved config, result.json, Parquet stats."
    ),
    timeline: Path | None = typer.Option(
        None, "--timeline", help="Write a Perfetto/Chrome trace of the first step."
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Override a config field: dotted.path=value (repeatable)."
    ),
) -> None:
    """Simulate decode steps of TRACE on HWCONFIG: latency, throughput, energy, bandwidth per token."""
    from cemsim.sim.analytic import analytic
    from cemsim.sim.simulate import prepare, simulate
    from cemsim.sim.timeline import write_timeline
    from cemsim.trace.format import TraceReader

    ctx = None
    if context is not None:
        try:
            ctx = parse_tokens(context)
        except ValueError as exc:
            raise CemsimError(f"--context: {exc}") from None
        if ctx < 1:
            raise CemsimError(f"must be at least 1 token, got {context!r}", where="--context")
    if steps is not None and steps < 1:
        raise CemsimError(f"--steps must be at least 1, got {steps}")
    if timeline is not None:
        check_output_file(timeline, "--timeline")
    if out is not None:
        check_output_dir(out, "--out")
    overrides, labels = parse_sets(sets)
    loaded = load_system(hwconfig, overrides or None, labels)
    bar_console = Console(stderr=True)  # stdout holds only the table or the JSON
    with (
        TraceReader(trace) as reader,
        Progress(console=bar_console, transient=True, disable=not bar_console.is_terminal) as bar,
    ):
        total = min(reader.num_steps, steps) if steps else reader.num_steps
        reading = bar.add_task("reading + preparing steps", total=total or None)

        def records():  # advance the bar as prepare consumes the stream
            for rec in reader.iter_steps(topk=False):
                yield rec
                bar.advance(reading)

        prep = prepare(
            loaded.system,
            reader.header,
            records(),
            context=ctx,
            batch=batch,
            max_steps=steps,
            where=str(trace),
        )
        sim_task = bar.add_task("simulating", total=len(prep.works))
        res = simulate(
            prep, timeline=timeline is not None, progress=lambda i: bar.update(sim_task, completed=i + 1)
        )
    twin = analytic(prep)
    try:  # checked before the run; a full disk or a vanished folder can still fail here
        if timeline is not None and res.spans:
            write_timeline(timeline, res.spans, res.system)
        if out is not None:
            from cemsim.sim.output import write_run_dir

            write_run_dir(out, loaded.to_json_dict(), res, twin)
    except OSError as exc:
        raise CemsimError(f"cannot write {exc.filename or 'the outputs'}: {exc.strerror or exc}") from None
    if as_json:
        d = res.to_json_dict()
        keys = ("latency_per_token_s", "energy_per_token_j", "latency_bounds_s")
        d["analytic"] = {k: twin.to_json_dict().get(k) for k in keys}
        typer.echo(json.dumps(d, default=str))
        return
    if not res.fits:
        console.print(
            f"[bold yellow]{escape(res.system)} does not fit[/] at {res.context_tokens} tokens, batch {res.batch}:"
        )
        for why in res.why_not:
            console.print(f"  - {escape(why)}", highlight=False)
        return
    console.print(_table(res, twin))
    line = attention_line(res.attention)
    if line:
        console.print(escape(line), highlight=False)
    if res.truncated:
        console.print(f"[bold red]incomplete:[/] {escape(str(res.truncated))}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
