"""`cemsim plot RESULTS... --out DIR [--chart NAME]`: charts from result files only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cemsim.commands.outputs import check_output_dir
from cemsim.errors import CemsimError

console = Console(stderr=True)


def plot(
    results: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULTS",
            help="results.parquet files, sweep output folders, or .json/.jsonl "
            "files of `cemsim eval --json` rows.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the charts (PNG and SVG).")],
    chart: Annotated[
        list[str] | None,
        typer.Option(
            "--chart",
            "-c",
            help="Only these charts (repeatable): "
            "context_scaling, energy, time_breakdown, users, heatmap, pareto.",
        ),
    ] = None,
) -> None:
    """Draw the charts each results file's sweep spec asks for (else every chart its columns allow)."""
    check_output_dir(out, "--out")
    from cemsim.plots.charts import plot_results  # matplotlib loads after the checks

    written = plot_results(results, out, chart)
    if not written:
        raise CemsimError("no chart could be drawn from these results (no rows with the needed columns)")
    for p in written:
        if p.suffix == ".png":
            console.print(f"wrote {escape(str(p))} (+ .svg)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)
