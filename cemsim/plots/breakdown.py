"""Per-token decode time split by phase, stacked, against context length: one panel per system (the
layout of LongSight's Figures 8 and 9). Contexts that do not fit are labelled, not drawn."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from cemsim.plots.data import fits, ok_rows, prefixed, require
from cemsim.plots.style import system_order, tokens_label

PALETTE = plt.get_cmap("tab20").colors


def stacked_bars(
    ax,
    labels: list[str],
    rows: list[pd.Series | None],
    parts: list[str],
    colors: dict[str, tuple],
    scale: float,
    normalize: bool = False,
    unit: str = "",
) -> None:
    """Bars at positions 0..n-1 stacked by ``parts``; a None row is written as 'does not fit'. When one bar
    dwarfs the rest (over 4x the runner-up), the axis stops above the runner-up and the tall bar is cut with
    its total written on it, so the small bars stay readable."""
    totals = [
        sum(max(0.0, float(row.get(p) or 0.0)) for p in parts) * scale if row is not None else 0.0
        for row in rows
    ]
    ranked = sorted(totals, reverse=True)
    top = ranked[0] if ranked else 1.0
    if not normalize and len(ranked) > 2 and ranked[1] > 0 and ranked[0] > 4 * ranked[1]:
        top = ranked[1] * 1.6
    for x, row in enumerate(rows):
        if row is None:
            ax.text(
                x,
                0.03,
                "does not fit",
                rotation=90,
                ha="center",
                va="bottom",
                fontsize=8.5,
                color="0.25",
                transform=ax.get_xaxis_transform(),
            )
            continue
        values = [max(0.0, float(row.get(p) or 0.0)) * scale for p in parts]
        total = sum(values) or 1.0
        bottom = 0.0
        for p, v in zip(parts, values, strict=True):
            v = v / total * 100 if normalize else v
            ax.bar(x, v, bottom=bottom, color=colors[p], width=0.7, edgecolor="white", linewidth=0.4)
            bottom += v
        if not normalize and totals[x] > top:
            ax.text(
                x,
                top * 0.97,
                f"cut: {totals[x]:,.0f} {unit}".strip(),
                rotation=90,
                ha="center",
                va="top",
                fontsize=8,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "lw": 0},
            )
    ax.set_ylim(0, 100 if normalize else top * 1.06)
    ax.set_xlim(-0.6, len(labels) - 0.4)  # keep room for a missing first or last bar's label
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)


def figures(
    frame: pd.DataFrame, batch: int | None = None, normalize: bool = False, **_: object
) -> list[tuple[str, Figure]]:
    require(frame, ["system", "context_tokens", "batch"], "time_breakdown")
    data = ok_rows(frame)
    parts = prefixed(data, "time_breakdown_s")
    if not parts:
        require(frame, ["time_breakdown_s.*"], "time_breakdown")
    figs: list[tuple[str, Figure]] = []
    for b in [batch] if batch is not None else sorted(data["batch"].dropna().unique()):
        sub = data[data["batch"] == b]
        systems = system_order(sub["system"])
        if not systems:
            continue
        contexts = sorted(sub["context_tokens"].unique())
        colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(parts)}  # phases: distinct hues
        ncols = min(3, len(systems))
        nrows = math.ceil(len(systems) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows + 0.8), squeeze=False)
        for ax, s in zip(axes.flat, systems, strict=False):
            rows = []
            for c in contexts:
                hit = sub[(sub["system"] == s) & (sub["context_tokens"] == c)]
                rows.append(hit.iloc[0] if len(hit) and fits(hit).iloc[0] else None)
            stacked_bars(ax, [tokens_label(c) for c in contexts], rows, parts, colors, 1e3, normalize, "ms")
            ax.set_title(s)
            ax.set_ylabel("share of step time (%)" if normalize else "time per token (ms)")
            ax.tick_params(axis="x", labelrotation=45)
        for ax in list(axes.flat)[len(systems) :]:
            ax.set_visible(False)
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p]) for p in parts]
        fig.legend(
            handles,
            [p.removeprefix("time_breakdown_s.") for p in parts],
            loc="lower center",
            ncol=min(len(parts), 6),
            frameon=False,
            title="phase",
            bbox_to_anchor=(0.5, -0.02),
        )
        fig.suptitle(f"Decode time per token by phase against context length, batch {int(b)}")
        fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
        figs.append((f"time_breakdown_b{int(b)}", fig))
    return figs
