"""Accuracy against filter ratio from threshold sweeps (rows of `cemsim eval --json`, gathered by a
`kind: eval` sweep): every setting as a point, the Pareto front (no other setting filters more at a smaller
perplexity increase) as a line, and the perplexity budget as a dashed line."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cemsim.plots.data import ok_rows, require
from cemsim.plots.style import MARKERS


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats: larger x (filter ratio) and smaller y (accuracy loss)."""
    order = np.lexsort((y, -x))  # by x descending, ties by y ascending
    front, best_y = [], np.inf
    for i in order:
        if y[i] < best_y:
            front.append(i)
            best_y = y[i]
    return np.array(front[::-1], dtype=int)


def figures(
    frame: pd.DataFrame,
    x: str = "filter_ratio",
    y: str = "ppl_increase",
    group: str | None = None,
    budget: float = 0.05,
    y_percent: bool = True,
    **_: object,
) -> list[tuple[str, Figure]]:
    require(frame, [x, y], "pareto")
    data = ok_rows(frame).dropna(subset=[x, y])
    if group is None:
        group = next(
            (
                c
                for c in ("param.itq", "itq", "model", "param.workload.attention.itq")
                if c in data and data[c].nunique() > 1
            ),
            None,
        )
    groups = list(data.groupby(group)) if group else [("all settings", data)]
    scale = 100.0 if y_percent else 1.0
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.get_cmap("tab10").colors
    for k, (name, sub) in enumerate(groups):
        xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float) * scale
        color = colors[k % len(colors)]
        label = f"{group.removeprefix('param.')}={name}" if group else str(name)
        ax.scatter(
            xs,
            ys,
            s=22,
            color=color,
            alpha=0.45,
            marker=MARKERS[k % len(MARKERS)],
            label=f"{label}: settings",
        )
        front = pareto_front(xs, ys)
        ax.plot(
            xs[front],
            ys[front],
            color=color,
            lw=1.8,
            marker=MARKERS[k % len(MARKERS)],
            ms=5,
            label=f"{label}: Pareto front",
        )
        tcol = next((c for c in ("param.threshold", "param.workload.attention.threshold") if c in sub), None)
        if tcol is not None:
            for i in front:
                ax.annotate(
                    f"T={sub[tcol].iloc[i]:g}",
                    (xs[i], ys[i]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=color,
                )
    ax.axhline(budget * scale, color="black", ls="--", lw=1.1, label=f"budget {budget * scale:g}%")
    ax.set_xscale("log")
    ax.set_xlabel("filter ratio (keys considered / keys surviving, log)")
    ax.set_ylabel("perplexity increase over dense (%)" if y_percent else y)
    ax.set_title("Accuracy against filter ratio (sign-concordance thresholds)")
    ax.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return [("pareto_accuracy_filter_ratio", fig)]
