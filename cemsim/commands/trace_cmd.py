"""`cemsim trace info` and `cemsim trace project`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cemsim.commands.outputs import check_output_file
from cemsim.commands.progress import step_progress
from cemsim.config.workload import parse_tokens
from cemsim.errors import CemsimError

trace_app = typer.Typer(help="Inspect and project key-access traces.", no_args_is_help=True)
console = Console()


def trace_summary(path: Path) -> dict[str, Any]:
    """Everything `trace info` shows, as plain data (streams the scalar columns only)."""
    from cemsim.trace.format import TraceReader

    with TraceReader(path) as r:
        h = r.header
        df = r.to_pandas()
    steps = max(r.num_steps, 1)
    # Per-head statistics over the full-attention layers only: sliding-window layers (Gemma 3's local ones)
    # have no sparse stage, and their all-zero rows would drag every mean and minimum toward 0.
    full = h.full_layers
    df = df[df["layer"].isin(full)]
    per_head = df.groupby(["layer", "kv_head"])[["keys_considered", "survivors", "values_fetched"]].mean()
    surv = per_head["survivors"].to_numpy()
    kc = per_head["keys_considered"].to_numpy()
    fr_head = np.divide(kc, surv, out=np.full(kc.shape, np.inf), where=surv > 0)
    total_kc, total_s = float(df["keys_considered"].sum()), float(df["survivors"].sum())
    out: dict[str, Any] = {
        "file": str(path),
        "bytes": os.path.getsize(path),
        "bytes_per_step": os.path.getsize(path) / steps,
        "model": h.model,
        "geometry": {
            "layers": h.layers,
            "q_heads": h.q_heads,
            "kv_heads": h.kv_heads,
            "head_dim": h.head_dim,
        },
        "dtype": h.dtype,
        "policy": h.policy,
        "window": h.window,
        "sinks": h.sinks,
        "k": h.k,
        "topk_scope": h.topk_scope,
        "block_size": h.block_size,
        "itq": h.itq,
        "thresholded": h.thresholds is not None,
        "text_source": h.text_source,
        "cemsim_version": h.cemsim_version,
        "schema_version": h.schema_version,
        "layer_types": {
            "full": full,
            "sliding": h.sliding_layers,
            "local_window": h.local_window,
            "per_head_statistics_over": "full-attention layers",
        },
        "steps": r.num_steps,
        "context_min": r.summary.get("context_min"),
        "context_max": r.summary.get("context_max"),
        "survivors_per_head": _stats(surv),
        "values_fetched_per_head": _stats(per_head["values_fetched"].to_numpy()),
        "keys_considered_per_head": float(kc.mean()) if kc.size else 0.0,
        "filter_ratio": total_kc / total_s if total_s else None,
        "filter_ratio_per_head": _stats(fr_head[np.isfinite(fr_head)]),
        "projected": h.projected,
    }
    if h.projected and h.projection:
        p = h.projection
        fit = p.get("fit", {})
        out["projection"] = {
            "model": p.get("model"),
            "source_model": p.get("source_model"),
            "sources": [s.get("path") for s in fit.get("sources", [])],
            "head_mapping": p.get("head_mapping"),
            "beta_per_head": _stats(np.asarray(fit.get("beta", []), dtype=float).ravel()),
            "expected_survivors_at_target": p.get("expected_survivors_at_target"),
        }
    return out


def _stats(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"mean": 0.0, "min": 0.0, "p50": 0.0, "max": 0.0}
    return {"mean": float(a.mean()), "min": float(a.min()), "p50": float(np.median(a)), "max": float(a.max())}


def _fmt_stats(s: dict[str, float], digits: int = 1) -> str:
    return f"mean {s['mean']:,.{digits}f}  min {s['min']:,.{digits}f}  p50 {s['p50']:,.{digits}f}  max {s['max']:,.{digits}f}"


@trace_app.command("info")
def info(
    trace: Annotated[Path, typer.Argument(metavar="TRACE", help="A trace file (.parquet).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
) -> None:
    """Summary of TRACE: geometry, policy, steps, context, survivors per head, filter ratio, projection."""
    s = trace_summary(trace)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    t = Table(title=f"trace {trace}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    g = s["geometry"]
    t.add_row(
        "model",
        f"{s['model']}: {g['layers']} layers, {g['q_heads']} query / {g['kv_heads']} KV heads, "
        f"head dim {g['head_dim']}, {s['dtype']}",
    )
    t.add_row(
        "policy",
        f"{s['policy']}  (window {s['window']}, sinks {s['sinks']}, k {s['k']} per {s['topk_scope']}, "
        f"ITQ {'yes' if s['itq'] else 'no'}, thresholds {'yes' if s['thresholded'] else 'none'})",
    )
    lt = s["layer_types"]
    if lt["sliding"]:
        t.add_row(
            "layer types",
            f"{len(lt['full'])} full-attention ({', '.join(map(str, lt['full']))}), {len(lt['sliding'])} "
            f"sliding-window ({lt['local_window']} keys, dense); per-head rows below: full layers only",
        )
    t.add_row("steps", f"{s['steps']}  (context {s['context_min']:,} .. {s['context_max']:,} tokens)")
    t.add_row("text", s["text_source"])
    t.add_row("block size", f"{s['block_size']} keys")
    t.add_row("keys considered / head", f"{s['keys_considered_per_head']:,.1f}")
    t.add_row("survivors / head", _fmt_stats(s["survivors_per_head"]))
    t.add_row("values fetched / head", _fmt_stats(s["values_fetched_per_head"]))
    fr = s["filter_ratio"]
    t.add_row("filter ratio", "n/a (no survivors)" if fr is None else f"{fr:,.1f}x overall")
    t.add_row("filter ratio / head", _fmt_stats(s["filter_ratio_per_head"]))
    t.add_row(
        "file",
        f"{s['bytes'] / 1e6:,.2f} MB, {s['bytes_per_step'] / 1e6:,.3f} MB per step; "
        f"schema v{s['schema_version']}, cemsim {s['cemsim_version']}",
    )
    if s["projected"]:
        p = s.get("projection", {})
        e = p.get("expected_survivors_at_target") or {}
        t.add_row(
            "projected",
            f"yes: {p.get('model')} from {p.get('source_model')} ({', '.join(p.get('sources') or [])})",
        )
        t.add_row("head mapping", str(p.get("head_mapping")))
        t.add_row("beta / head", _fmt_stats(p.get("beta_per_head", _stats(np.zeros(0))), 3))
        if e:
            t.add_row(
                "fit uncertainty",
                f"survivors per head ±{100 * e.get('rel_se_median', 0):.1f}% (median 1 s.e.), "
                f"worst head ±{100 * e.get('rel_se_max', 0):.1f}%",
            )
    else:
        t.add_row("projected", "no (captured)")
    console.print(t)


Opt = typer.Option


@trace_app.command("project")
def project(
    traces: Annotated[
        list[Path],
        typer.Argument(metavar="TRACE", help="Captured source trace(s); several lengths constrain the fit."),
    ],
    context: Annotated[str, Opt("--context", help="Target context in tokens: 1048576, 128K or 1M.")],
    out: Annotated[Path, Opt("--out", help="Projected trace to write.")],
    geometry: Annotated[
        str | None, Opt("--geometry", help="Target geometry (llama3-1b, llama3-8b, ...).")
    ] = None,
    steps: Annotated[
        int | None, Opt("--steps", min=1, help="Decode steps (default: the source's, <= 32).")
    ] = None,
    k: Annotated[int | None, Opt("--k", min=1, help="Top-k of the target (default: the source's).")] = None,
    early_tokens: Annotated[
        int,
        Opt(
            "--early-tokens", min=0, help="Sparse positions after the sinks kept at their measured survival."
        ),
    ] = 0,
    seed: Annotated[int, Opt("--seed", help="Seed of the block-count draws.")] = 0,
    allow_extrapolation: Annotated[
        bool,
        Opt(
            "--allow-extrapolation",
            help="Project past the source model's trained positions (refused otherwise; the header says so).",
        ),
    ] = False,
) -> None:
    """Extend captured TRACES to --context tokens (and --geometry) through the survival model of projection.py."""
    from cemsim.trace.projection import project_file

    try:
        n = parse_tokens(context)
    except ValueError as exc:
        raise CemsimError(str(exc), where="--context") from None
    check_output_file(out, "--out")
    with step_progress() as bar:
        task = bar.add_task("projecting", total=None)

        def progress(_: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        header = project_file(
            traces,
            out,
            context=n,
            target=geometry,
            steps=steps,
            k=k,
            early_tokens=early_tokens,
            seed=seed,
            progress=progress,
            allow_extrapolation=allow_extrapolation,
        )
    e = (header.projection or {}).get("expected_survivors_at_target", {})
    ex = (header.projection or {}).get("extrapolation") or {}
    if ex.get("allowed_by_override"):
        console.print(
            f"[yellow]extrapolated[/] {ex['factor']:g}x past the {ex['source_trained_positions']:,} positions "
            f"{header.extra.get('projected_from')} was trained on (--allow-extrapolation): the survival law is "
            "unvalidated there"
        )
    console.print(
        f"[green]wrote[/] {escape(str(out))}: {header.model} at {n:,} tokens, "
        f"{os.path.getsize(out) / 1e6:,.2f} MB; expected survivors per head {e.get('mean_per_head', 0):,.0f} "
        f"(±{100 * e.get('rel_se_median', 0):.1f}% median s.e.)"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
