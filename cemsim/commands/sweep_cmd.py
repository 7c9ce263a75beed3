"""`cemsim sweep SPEC --out DIR [--engine local|ray] [--workers N] [--address ADDR]`: resumable sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cemsim.commands.outputs import check_output_dir
from cemsim.errors import CemsimError
from cemsim.sweep.engines import ENGINES

console = Console()
err_console = Console(stderr=True)


def sweep(
    spec: Annotated[
        Path, typer.Argument(metavar="SPEC", help="Sweep spec (YAML), e.g. analysis/context_scaling.yaml.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder: points/<hash>.parquet and results.parquet.")
    ],
    engine: Annotated[str, typer.Option("--engine", help="local (a process pool) or ray.")] = "local",
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Parallel workers (default: all cores).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster address (ray engine); default: start a local Ray for this run."
        ),
    ] = None,
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace", help="Trace file, or a template with {context} / {system}; replaces the spec's trace."
        ),
    ] = None,
    evaluate: Annotated[
        str | None,
        typer.Option(
            "--evaluate",
            help="Evaluate function 'module:function' (default: the spec's, else the simulator).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars and no summary table.")
    ] = False,
) -> None:
    """Evaluate every point of SPEC; finished points are skipped, so a killed sweep resumes where it stopped."""
    if engine not in ENGINES:
        raise CemsimError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if address and engine != "ray":
        raise CemsimError("--address names a Ray cluster; it needs --engine ray")
    check_output_dir(out, "--out")
    from cemsim.sweep.runner import run_sweep  # pandas and the store load only when a sweep runs
    from cemsim.sweep.summary import summary_tables

    report = run_sweep(
        spec,
        out,
        engine=engine,
        workers=workers,
        address=address,
        trace=trace,
        evaluate=evaluate,
        console=err_console,
        progress=not quiet,
    )
    if not quiet:
        for table in summary_tables(report.frame):
            console.print(table)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(report.counts.items()))
    err_console.print(
        f"{escape(str(report.results_path))}: {len(report.frame)} rows ({counts}); "
        f"{report.evaluated} evaluated now, {report.skipped} reused",
        highlight=False,
    )
    bad = report.frame[report.frame["status"] != "ok"] if len(report.frame) else report.frame
    for _, row in bad.head(5).iterrows():
        err_console.print(
            f"  [yellow]{row['status']}[/] {escape(str(row['system']))} {escape(str(row['params']))}: "
            f"{escape(str(row['error']).strip().splitlines()[-1])}",
            highlight=False,
            soft_wrap=True,
        )
    if report.counts.get("failed"):
        raise CemsimError(
            f"{report.counts['failed']} points failed with an unexpected exception (not stored; "
            "rerun to retry them); see the 'error' column of the results"
        )


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
