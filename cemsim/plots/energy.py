"""Energy per token stacked by component, one bar per system, one panel per context length."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from cemsim.config.workload import parse_tokens
from cemsim.plots.breakdown import stacked_bars
from cemsim.plots.data import fits, ok_rows, pick_value, prefixed, require
from cemsim.plots.style import component_colors, system_order, tokens_label

PREFERRED = (32 * 1024, 128 * 1024, 1024 * 1024)  # the contexts the LongSight paper discusses most


def figures(
    frame: pd.DataFrame, batch: int | None = None, contexts: list | None = None, **_: object
) -> list[tuple[str, Figure]]:
    require(frame, ["system", "context_tokens", "batch"], "energy")
    data = ok_rows(frame)
    parts = prefixed(data, "energy_breakdown_j")
    if not parts:
        require(frame, ["energy_breakdown_j.*"], "energy")
    b = pick_value(data, "batch", batch)
    sub = data[data["batch"] == b]
    present = sorted(sub["context_tokens"].unique())
    if contexts:
        chosen = [parse_tokens(c) for c in contexts]
    else:
        chosen = [c for c in PREFERRED if c in present] or present[-3:]
    systems = system_order(sub["system"])
    colors = component_colors(parts, "energy_breakdown_j")
    fig, axes = plt.subplots(
        1, len(chosen), figsize=(1.2 + 0.85 * len(systems) * len(chosen), 4.8), squeeze=False, sharey=False
    )
    for ax, c in zip(axes.flat, chosen, strict=True):
        rows = []
        for s in systems:
            hit = sub[(sub["system"] == s) & (sub["context_tokens"] == c)]
            rows.append(hit.iloc[0] if len(hit) and fits(hit).iloc[0] else None)
        stacked_bars(ax, systems, rows, parts, colors, 1e3, unit="mJ")
        ax.set_title(f"context {tokens_label(c)}")
        ax.set_ylabel("energy per token (mJ)")
        ax.tick_params(axis="x", labelrotation=35)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p]) for p in parts]
    fig.legend(
        handles,
        [p.removeprefix("energy_breakdown_j.") for p in parts],
        loc="upper center",
        ncol=min(len(parts), 6),
        frameon=False,
        title="component",
        bbox_to_anchor=(0.5, 0.02),
    )
    fig.suptitle(f"Energy per generated token by component, batch {int(b)}")
    fig.tight_layout()
    return [(f"energy_breakdown_b{int(b)}", fig)]
