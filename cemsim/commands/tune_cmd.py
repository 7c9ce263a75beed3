"""`cemsim tune`: per-(layer, KV head) SCF thresholds under a perplexity budget (the LongSight procedure)."""

from __future__ import annotations

from pathlib import Path

import typer

from cemsim.commands.model_help import MODEL_HELP
from cemsim.commands.outputs import check_output_file
from cemsim.errors import CemsimError


def tune_command(
    ppl_budget: float = typer.Option(
        0.05, "--ppl-budget", help="Allowed relative perplexity increase over dense."
    ),
    model: str = typer.Option("smollm2-135m", "--model", help=MODEL_HELP),
    tokens: int = typer.Option(
        2048, "--tokens", help="Tokens of the tuning span (shorter than eval: see docs)."
    ),
    window: int = typer.Option(256, "--window", help="Dense window W during tuning (scaled with the span)."),
    sinks: int = typer.Option(16, "--sinks", help="Sink tokens S."),
    k: int | None = typer.Option(None, "--k", help="Top-k per query head (default: LongSight's schedule)."),
    step: int = typer.Option(2, "--step", help="Threshold increment per accepted move."),
    start: int | None = typer.Option(
        None,
        "--start",
        help="Initial threshold of every head (default 0, as published; "
        "D/2 skips moves that filter almost nothing for roughly isotropic signs).",
    ),
    max_evals: int = typer.Option(60, "--max-evals", help="Stop after this many perplexity evaluations."),
    itq: bool = typer.Option(True, "--itq/--no-itq", help="Tune for ITQ-rotated signs."),
    itq_file: Path | None = typer.Option(
        None, "--itq-file", help="ITQ rotations (.npz) to use instead of the model's cached file."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu or cuda: where the model runs (fp32 either way)."
    ),
    text: Path | None = typer.Option(
        None, "--text", help="UTF-8 text file (default: Python's bundled language reference)."
    ),
    out: Path = typer.Option(
        Path("thresholds.json"), "--out", help="Thresholds file to write (.json or .yaml)."
    ),
) -> None:
    """Raise the threshold of the KV head with the lowest filter ratio until perplexity would exceed the budget."""
    if ppl_budget <= 0:
        raise CemsimError(f"--ppl-budget must be positive, got {ppl_budget}", where="--ppl-budget")
    check_output_file(out, "--out")
    if itq_file is not None and not itq:
        raise CemsimError("--itq-file needs --itq", where="--itq-file")
    if itq_file is not None and not itq_file.is_file():
        raise CemsimError("no such ITQ file", where=str(itq_file))
    from cemsim.attention.tune import tune_thresholds  # torch: seconds to import, so after the checks

    tune_thresholds(
        model=model,
        tokens=tokens,
        window=window,
        sinks=sinks,
        k=k,
        step=step,
        start=start,
        max_evals=max_evals,
        ppl_budget=ppl_budget,
        itq=itq,
        itq_file=itq_file,
        text_path=text,
        out=out,
        device=device,
    )


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
