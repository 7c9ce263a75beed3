"""`cemsim demo [--out DIR]`: the whole pipeline on the bundled model, on CPU, in a few minutes.

capture a LongSight trace from SmolLM2-135M  ->  project it to Llama-3-8B geometry at 1M tokens  ->
sweep analysis/context_scaling.yaml (every shipped system, 4K..1M, batch 1/8/32) on the simulator  ->
summary table  ->  charts. Each stage runs as the `cemsim` command a user would type (printed first), so
the demo doubles as a tour of the CLI. Finished stages are reused when their outputs exist.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cemsim.commands.outputs import check_output_dir
from cemsim.errors import CemsimError
from cemsim.paths import repo_root

console = Console(stderr=True)
CAPTURE_TOKENS = "4K"  # the bundled model's own range (8K positions); projection takes it to 1M
CAPTURE_STEPS = 4
# the text as Python 3.11.7 ships it (cemsim/data; cemsim.attention.text.PINNED_TOPICS, not imported here: that
# package loads torch): the same tokens, so the same trace, on any Python
CAPTURE_TEXT = "pydoc-topics-3.11.7"
TARGET_CONTEXT = "1M"  # the simulator replays it below 1M with survival scaled to each context
GEOMETRY = "llama3-8b"  # the shipped hwconfigs model Llama-3-8B


def _cli_commands(ctx: typer.Context) -> set[str]:
    """The subcommands of the running `cemsim` (read from click's context: importing cemsim.cli here would
    be an import cycle, and a second copy of the module under `python -m cemsim.cli`)."""
    return set(getattr(ctx.find_root().command, "commands", {}))


def _run(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "cemsim.cli", *args]
    console.rule(f"[bold]{what}")
    console.print("$ cemsim " + escape(shlex.join(args)), highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise CemsimError(f"demo stage '{what}' failed (exit {proc.returncode}); its message is above")
    console.print(f"[dim]{what}: {time.perf_counter() - t0:,.1f} s[/]", highlight=False)


def _synthetic_source(path: Path) -> None:
    """A survival-law trace in the bundled model's geometry, for an installation without `cemsim capture`."""
    from cemsim.trace.format import TraceWriter
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    header = synthetic_header(
        "smollm2-135m", k=256, text_source="synthetic survival law (no capture available)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with TraceWriter(path, header) as writer:
        for rec in synthetic_steps(header, context=4096, steps=CAPTURE_STEPS):
            writer.write(rec)


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for traces, results and charts.")] = Path(
        "results/demo"
    ),
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Sweep workers (default: all cores).")
    ] = None,
    engine: Annotated[str, typer.Option("--engine", help="Sweep engine: local or ray.")] = "local",
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Redo every stage, even those whose outputs exist.")
    ] = False,
) -> None:
    """Capture -> project -> sweep every shipped system from 4K to 1M tokens -> table + charts."""
    from cemsim.sweep.engines import ENGINES

    if engine not in ENGINES:  # checked here, not minutes later when the sweep stage starts
        raise CemsimError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    check_output_dir(out, "--out")
    root = repo_root()
    spec = root / "analysis" / "context_scaling.yaml" if root else None
    if spec is None or not spec.is_file():
        raise CemsimError(
            "the demo runs analysis/context_scaling.yaml from a cemsim source checkout; "
            "run it from a clone of the repository"
        )
    t0 = time.perf_counter()
    traces = out / "traces"
    source = traces / f"smollm2-135m-{CAPTURE_TOKENS}.parquet"
    projected = traces / f"{GEOMETRY}-{TARGET_CONTEXT}.parquet"
    if fresh:
        for p in (source, projected):
            p.unlink(missing_ok=True)
    commands = _cli_commands(ctx)
    if not source.is_file():
        if "capture" in commands:
            _run(
                [
                    "capture",
                    "--tokens",
                    CAPTURE_TOKENS,
                    "--decode-steps",
                    str(CAPTURE_STEPS),
                    "--device",
                    "cpu",
                    "--policy",
                    "longsight",
                    "--text",
                    CAPTURE_TEXT,
                    "--out",
                    str(source),
                ],
                "capture a trace from the bundled model (CPU)",
            )
        else:
            console.rule("[bold]source trace")
            console.print(
                "[yellow]`cemsim capture` is not in this installation: using a synthetic survival-law "
                "trace in the bundled model's geometry instead[/]"
            )
            _synthetic_source(source)
    if not projected.is_file() or projected.stat().st_mtime < source.stat().st_mtime:
        _run(
            [
                "trace",
                "project",
                str(source),
                "--context",
                TARGET_CONTEXT,
                "--geometry",
                GEOMETRY,
                # SmolLM2 was trained to 8K: the 1M projection extrapolates past it, and says so
                "--allow-extrapolation",
                "--out",
                str(projected),
            ],
            f"project to {GEOMETRY} at {TARGET_CONTEXT} tokens",
        )
    sweep_args = [
        "sweep",
        str(spec.relative_to(Path.cwd()) if spec.is_relative_to(Path.cwd()) else spec),
        "--trace",
        str(projected),
        "--out",
        str(out / "context_scaling"),
        "--engine",
        engine,
    ]
    if workers:
        sweep_args += ["--workers", str(workers)]
    if fresh:
        shutil.rmtree(out / "context_scaling", ignore_errors=True)
    _run(sweep_args, "sweep: 6 systems x 9 contexts x 3 batch sizes on the simulator")
    # DReX at two more survival scenarios (20x, 28.9x): the band on the context-scaling chart (issue 15)
    band = spec.parent / "drex_filter_ratio.yaml"
    band_args = [
        *sweep_args[:1],
        str(band.relative_to(Path.cwd()) if band.is_relative_to(Path.cwd()) else band),
    ]
    band_args += sweep_args[2:]
    band_args[band_args.index("--out") + 1] = str(out / "drex_filter_ratio")
    if fresh:
        shutil.rmtree(out / "drex_filter_ratio", ignore_errors=True)
    _run(band_args, "sweep: DReX at filter ratios 20x and 28.9x (9 contexts x 3 batch sizes)")
    _run(["plot", str(out / "context_scaling"), "--out", str(out / "charts")], "charts")
    console.rule("[bold]done")
    console.print(
        f"results: {escape(str(out / 'context_scaling' / 'results.parquet'))}\n"
        f"charts:  {escape(str(out / 'charts'))}\n"
        f"demo took {time.perf_counter() - t0:,.0f} s",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
