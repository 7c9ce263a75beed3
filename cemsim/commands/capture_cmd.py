"""`cemsim capture`: run the model over a long text, decode under sparse-attention policies, write traces."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cemsim.commands.model_help import MODEL_HELP
from cemsim.commands.outputs import check_output_file
from cemsim.commands.progress import step_progress
from cemsim.config.workload import parse_tokens
from cemsim.errors import CemsimError

console = Console()
Opt = typer.Option


def capture_command(
    tokens: Annotated[str, Opt("--tokens", help="Prompt (prefill) length in tokens: 4096 or 4K.")],
    decode_steps: Annotated[int, Opt("--decode-steps", min=1, help="Decode steps to record.")],
    out: Annotated[
        Path, Opt("--out", help="Trace to write (more policies: <stem>.<policy>.parquet beside it).")
    ],
    model: Annotated[str, Opt("--model", help=MODEL_HELP)] = "smollm2-135m",
    policy: Annotated[
        str, Opt("--policy", help="longsight, dense, window, oracle-topk, quest, a comma list, or 'all'.")
    ] = "longsight",
    thresholds: Annotated[
        Path | None, Opt("--thresholds", help="Per-(layer, KV head) SCF thresholds from `cemsim tune`.")
    ] = None,
    target_ratio: Annotated[
        float, Opt("--target-ratio", min=1.0, help="Without --thresholds: calibrate to this filter ratio.")
    ] = 20.0,
    k: Annotated[
        int | None, Opt("--k", min=1, help="Top-k per query head (default: the published schedule).")
    ] = None,
    window: Annotated[int, Opt("--window", min=1, help="Dense window W.")] = 1024,
    sinks: Annotated[int, Opt("--sinks", min=0, help="Sink tokens S.")] = 16,
    block_size: Annotated[int, Opt("--block-size", min=1, max=128, help="Keys per position block.")] = 128,
    no_itq: Annotated[bool, Opt("--no-itq", help="LongSight signs without the ITQ rotation.")] = False,
    text: Annotated[
        str | None,
        Opt(
            "--text",
            help="UTF-8 text file, or pydoc-topics (default), pydoc-topics-3.11.7, stdlib-docs or stdlib-source.",
        ),
    ] = None,
    device: Annotated[str, Opt("--device", help="cpu or cuda.")] = "cpu",
    dtype: Annotated[
        str | None, Opt("--dtype", help="fp32 or bf16 (default: fp32 on cpu, bf16 on cuda).")
    ] = None,
    prefill_chunk: Annotated[
        int | None,
        Opt(
            "--prefill-chunk",
            min=1,
            help="Prefill in chunks of N tokens (default: one shot on cpu, 8192 on cuda).",
        ),
    ] = None,
    allow_extrapolation: Annotated[
        bool,
        Opt("--allow-extrapolation", help="Run past the model's trained positions (recorded in the header)."),
    ] = False,
    repeat_text: Annotated[
        bool, Opt("--repeat-text", help="Cycle a text shorter than the tokens asked for (recorded).")
    ] = False,
    itq_file: Annotated[
        Path | None, Opt("--itq-file", help="ITQ rotations (.npz) to use instead of the model's cached file.")
    ] = None,
) -> None:
    """Capture key-access traces: dense prefill of --tokens tokens, then --decode-steps decode steps per policy."""
    try:
        n = parse_tokens(tokens)
    except ValueError as exc:
        raise CemsimError(str(exc), where="--tokens") from None
    check_output_file(out, "--out")
    from cemsim.trace.capture import CaptureSpec, capture, parse_policies  # torch: after the checks

    spec = CaptureSpec(
        model=model,
        tokens=n,
        decode_steps=decode_steps,
        policies=parse_policies(policy),
        thresholds_file=thresholds,
        target_ratio=target_ratio,
        itq=not no_itq,
        k=k,
        window=window,
        sinks=sinks,
        block_size=block_size,
        text=text,
        device=device,
        dtype=dtype,
        prefill_chunk=prefill_chunk,
        allow_extrapolation=allow_extrapolation,
        repeat_text=repeat_text,
        itq_file=itq_file,
    )
    t0 = time.perf_counter()
    with step_progress() as bar:
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        paths = capture(spec, out, progress)
    for pol, p in paths.items():
        console.print(f"[green]wrote[/] {escape(str(p))}  ({pol}, {os.path.getsize(p) / 1e6:,.2f} MB)")
    console.print(f"capture took {time.perf_counter() - t0:,.1f} s")


def register(app: typer.Typer) -> None:
    app.command("capture")(capture_command)
