"""A metric over two swept hardware axes (for example CXL link bandwidth x NMAs per device), one heatmap
per system and context, each cell annotated; cells that do not fit are grey and say so."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cemsim.errors import CemsimError
from cemsim.plots.data import fits, ok_rows
from cemsim.plots.style import tokens_label

LABELS = {
    "throughput_tokens_per_s": ("throughput (tokens/s)", 1.0),
    "latency_per_token_s": ("per-token latency (ms)", 1e3),
    "energy_per_token_j": ("energy per token (mJ)", 1e3),
}


def _varied_params(frame: pd.DataFrame) -> list[str]:
    skip = {"param.workload.context", "param.workload.batch", "param.trace"}
    return [c for c in frame.columns if c.startswith("param.") and c not in skip and frame[c].nunique() > 1]


def _tick(value: float, scale: float) -> str:
    v = value / scale
    return f"{v:g}" if abs(v) < 1e4 else f"{v:.3g}"


def figures(
    frame: pd.DataFrame,
    x: str | None = None,
    y: str | None = None,
    metric: str = "throughput_tokens_per_s",
    x_label: str | None = None,
    x_scale: float = 1.0,
    y_label: str | None = None,
    y_scale: float = 1.0,
    **_: object,
) -> list[tuple[str, Figure]]:
    data = ok_rows(frame)
    varied = _varied_params(data)
    xc = f"param.{x}" if x else (varied[0] if len(varied) >= 2 else None)
    yc = f"param.{y}" if y else (varied[1] if len(varied) >= 2 else None)
    if xc is None or yc is None or xc not in data or yc not in data:
        raise CemsimError(
            "the heatmap needs two swept hardware axes (param.* columns); "
            f"found {', '.join(varied) or 'none'}; name them with x: and y: in the spec's plots"
        )
    if metric not in data:
        raise CemsimError(f"the heatmap metric {metric!r} is not a column of the results")
    label, mscale = LABELS.get(metric, (metric, 1.0))
    figs: list[tuple[str, Figure]] = []
    for (system, ctx, batch), sub in data.groupby(["system", "context_tokens", "batch"]):
        xs, ys = sorted(sub[xc].unique()), sorted(sub[yc].unique())
        grid = np.full((len(ys), len(xs)), np.nan)
        nofit = np.zeros_like(grid, dtype=bool)
        for _, row in sub.iterrows():
            i, j = ys.index(row[yc]), xs.index(row[xc])
            if fits(sub.loc[[row.name]]).iloc[0]:
                grid[i, j] = float(row[metric]) * mscale
            else:
                nofit[i, j] = True
        fig, ax = plt.subplots(figsize=(1.4 + 1.15 * len(xs), 1.3 + 0.75 * len(ys)))
        cmap = plt.get_cmap("viridis" if metric.startswith("throughput") else "viridis_r").with_extremes(
            bad="0.85"
        )
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, aspect="auto")
        finite = grid[np.isfinite(grid)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(len(ys)):
            for j in range(len(xs)):
                if nofit[i, j]:
                    text, color = "no fit", "0.3"
                elif np.isfinite(grid[i, j]):
                    v = grid[i, j]
                    text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
                    color = "white" if (v < mid) == metric.startswith("throughput") else "black"
                else:
                    text, color = "", "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([_tick(v, x_scale) for v in xs])
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels([_tick(v, y_scale) for v in ys])
        ax.set_xlabel(x_label or xc.removeprefix("param."))
        ax.set_ylabel(y_label or yc.removeprefix("param."))
        ax.grid(False)
        if finite.size:
            fig.colorbar(im, ax=ax, label=label)
        ax.set_title(f"{system}: {label}\ncontext {tokens_label(ctx)}, batch {int(batch)}")
        fig.tight_layout()
        figs.append((f"heatmap_{system}_{tokens_label(ctx)}_b{int(batch)}", fig))
    return figs
