"""Which charts exist, what columns each needs, and how a results file picks its charts: the spec's
``plots:`` list (kept in the results file's metadata), else every chart whose columns are present."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from cemsim.errors import CemsimError
from cemsim.plots import (
    breakdown,
    context_scaling,
    energy,
    filter_ratio,
    heatmap,
    longsight,
    pareto,
    users,
)
from cemsim.plots.data import load
from cemsim.plots.style import save

# name -> (figure builder, columns it needs; a trailing "." means "some column under this prefix")
CHARTS: dict[str, tuple[Callable[..., list[tuple[str, Figure]]], list[str]]] = {
    "context_scaling": (context_scaling.figures, context_scaling.COLUMNS),
    "energy": (energy.figures, ["context_tokens", "energy_breakdown_j."]),
    "time_breakdown": (breakdown.figures, ["context_tokens", "time_breakdown_s."]),
    "users": (users.figures, ["batch", "throughput_tokens_per_s"]),
    "heatmap": (heatmap.figures, ["param."]),
    "pareto": (pareto.figures, ["filter_ratio"]),
    "filter_ratio": (filter_ratio.figures, filter_ratio.COLUMNS),
    "longsight": (longsight.figures, [*longsight.COLUMNS, longsight.SCENARIO]),
}


def _has(frame: pd.DataFrame, needs: list[str]) -> bool:
    cols = list(frame.columns)
    return all(any(c.startswith(n) for c in cols) if n.endswith(".") else n in cols for n in needs)


def inferred(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Charts to draw when the spec named none: the ones whose data is there (heatmap only when asked)."""
    names = [n for n, (_, needs) in CHARTS.items() if n not in ("heatmap", "users") and _has(frame, needs)]
    if "batch" in frame and frame["batch"].nunique() > 2 and _has(frame, CHARTS["users"][1]):
        names.append("users")
    return [{"chart": n} for n in names]


def _scenarios(results: Path, name: str) -> pd.DataFrame | None:
    """The results a chart's ``scenarios`` option names (a sweep folder or results.parquet, relative to the
    folder of ``results``); None when that sweep has not been run, so the chart is drawn without it."""
    base = results if results.is_dir() else results.parent
    path = Path(name) if Path(name).is_absolute() else base / name
    if not (path.is_file() or (path / "results.parquet").is_file()):
        return None
    frame, _ = load([path])
    return frame


def plot_results(results: list[Path], out: Path, only: list[str] | None = None) -> list[Path]:
    for name in only or []:
        if name not in CHARTS:
            raise CemsimError(f"unknown chart {name!r}; charts: {', '.join(CHARTS)}")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in results:
        frame, metas = load([path])  # a sweep's results.parquet, or JSON rows of `cemsim eval --json`
        requests = metas[0].get("plots") or inferred(frame)
        if only:
            requests = [r for r in requests if r["chart"] in only] or [{"chart": n} for n in only]
        for req in requests:
            name = req["chart"]
            if name not in CHARTS:
                raise CemsimError(
                    f"{path}: the spec asks for unknown chart {name!r}; charts: {', '.join(CHARTS)}"
                )
            fn, _needs = CHARTS[name]
            options = {k: v for k, v in req.items() if k != "chart"}
            if "scenarios" in options:  # another sweep's results, relative to this results file's folder
                options["scenarios"] = _scenarios(path, str(options["scenarios"]))
            for stem, fig in fn(frame, **options):
                written += save(fig, out, stem)
    return written
