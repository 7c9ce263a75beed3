"""`cemsim eval`: dense vs sparse perplexity, filter ratio, top-k recall, KV-load reduction, bytes per token."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cemsim.commands.model_help import MODEL_HELP
from cemsim.errors import CemsimError

console = Console()
err = Console(stderr=True)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else format(x, spec)


def eval_command(
    model: str = typer.Option("smollm2-135m", "--model", help=MODEL_HELP),
    tokens: int = typer.Option(
        8192, "--tokens", help="Tokens of the evaluation text (at most the model's positions)."
    ),
    policy: str = typer.Option(
        "longsight", "--policy", help="dense | longsight | window | oracle-topk | quest"
    ),
    window: int = typer.Option(1024, "--window", help="Dense window W (tokens, the current one included)."),
    sinks: int = typer.Option(16, "--sinks", help="Sink tokens S attended densely."),
    k: int | None = typer.Option(
        None, "--k", help="Top-k per query head (default: LongSight's schedule, 256 to 32K)."
    ),
    threshold: int | None = typer.Option(
        None, "--threshold", help="One SCF threshold for every head (keep if matches >= T)."
    ),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", help="Thresholds file from `cemsim tune` (JSON/YAML)."
    ),
    itq: bool = typer.Option(
        True, "--itq/--no-itq", help="Rotate q and k by per-head ITQ rotations before taking signs."
    ),
    itq_file: Path | None = typer.Option(
        None, "--itq-file", help="ITQ rotations (.npz) to use instead of the model's cached file."
    ),
    topk_per: str = typer.Option(
        "head", "--topk-per", help="head (published) or group (one top-k per KV group)."
    ),
    backend: str = typer.Option("auto", "--backend", help="SCF kernel backend: auto | numpy | numba | cupy."),
    device: str = typer.Option(
        "cpu", "--device", help="cpu or cuda: where the model runs (fp32 either way)."
    ),
    text: Path | None = typer.Option(
        None, "--text", help="UTF-8 text file (default: Python's bundled language reference)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Dense vs sparse perplexity of a sparse-attention policy on a long text, with LongSight's metrics."""
    from cemsim.attention.eval import evaluate
    from cemsim.attention.model_loader import load_model
    from cemsim.attention.policies import POLICIES
    from cemsim.attention.runner import make_policy
    from cemsim.attention.text import load_text
    from cemsim.kernels import BACKENDS

    if tokens < 2:
        raise CemsimError(f"--tokens must be at least 2, got {tokens}", where="--tokens")
    # Checked before the model loads (seconds), not after.
    if policy not in POLICIES:
        raise CemsimError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}", where="--policy")
    if itq_file is not None and not (itq and policy == "longsight"):
        raise CemsimError("--itq-file applies to --policy longsight with --itq", where="--itq-file")
    if itq_file is not None and not itq_file.is_file():
        raise CemsimError("no such ITQ file", where=str(itq_file))
    if topk_per not in ("head", "group"):
        raise CemsimError(f"must be 'head' or 'group', got {topk_per!r}", where="--topk-per")
    if backend != "auto" and backend not in BACKENDS:
        raise CemsimError(
            f"unknown kernel backend {backend!r}; valid: auto, {', '.join(BACKENDS)}", where="--backend"
        )
    with err.status("loading model"):
        lm = load_model(model, device=device, dtype="fp32")
    if tokens > lm.max_positions:
        raise CemsimError(
            f"{tokens} tokens exceed the model's {lm.max_positions} positions", where="--tokens"
        )
    txt = load_text(text)
    with err.status("preparing policy (ITQ trains once per model, about a minute)"):
        cfg, info = make_policy(
            lm,
            txt,
            kind=policy,
            context=tokens,
            window=window,
            sinks=sinks,
            k=k,
            threshold=threshold,
            thresholds_file=thresholds,
            itq=itq,
            itq_file=itq_file,
            topk_per=topk_per,
            backend=backend,
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("layer {task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as prog:
        task = prog.add_task(f"{policy} over {tokens} tokens (dense pass first, cached)", total=lm.num_layers)
        rep = evaluate(
            lm,
            txt,
            tokens,
            cfg,
            itq=itq and policy == "longsight",
            on_layer=lambda layer: prog.update(task, completed=layer + 1),
        )
    out = rep.to_json()
    out["policy_info"] = info
    if as_json:
        typer.echo(json.dumps(out, allow_nan=True))
        return
    _print(rep, info)


def _print(rep, info: dict) -> None:
    t = Table(title=f"cemsim eval: {rep.model}, {rep.tokens} tokens, policy {rep.policy}", show_header=False)
    rows = [
        ("perplexity dense", _fmt(rep.ppl_dense, ".4f")),
        ("perplexity sparse", _fmt(rep.ppl_sparse, ".4f")),
        ("perplexity increase", f"{rep.ppl_increase * 100:+.2f} %"),
        ("filter ratio (considered / survivors)", _fmt(rep.filter_ratio, ".2f") + "x"),
        ("top-k recall vs oracle", _fmt(rep.topk_recall, ".3f")),
        ("KV-load reduction (artifact metric)", _fmt(rep.kv_load_reduction, ".2f") + "x"),
        (
            "bytes read per token",
            f"{rep.bytes_per_token / 1e6:.3f} MB (dense {rep.dense_bytes_per_token / 1e6:.3f} MB)",
        ),
        ("W / S / k", f"{rep.window} / {rep.sinks} / {rep.k}"),
        ("ITQ", str(rep.itq)),
        ("SCF backend", rep.backend),
        (
            "time dense / sparse",
            f"{rep.seconds['dense']:.1f} s{' (cached)' if rep.dense_cached else ''} / {rep.seconds['sparse']:.1f} s",
        ),
        ("text", rep.text),
    ]
    rows += [(key, str(v)) for key, v in info.items()]
    for a, b in rows:
        t.add_row(a, b)
    console.print(t)
    if rep.policy in ("longsight", "quest", "oracle-topk"):
        h = Table(title="per (layer, KV head) filter ratio; recall per layer")
        h.add_column("layer", justify="right")
        for i in range(len(rep.filter_ratio_per_head[0])):
            h.add_column(f"kv{i}", justify="right")
        h.add_column("recall", justify="right")
        for layer, row in enumerate(rep.filter_ratio_per_head):
            h.add_row(
                str(layer), *[_fmt(x, ".1f") for x in row], _fmt(rep.topk_recall_per_layer[layer], ".2f")
            )
        console.print(h)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
