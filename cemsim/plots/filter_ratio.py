"""Throughput against the filter ratio (keys considered / survivors, log x), one panel per context, one line
per system, from a sweep over workload.attention.filter_ratio (analysis/filter_ratio.yaml). A system whose
policy filters nothing (dense) is a flat line: the ratio does not apply to it. Points that do not fit are
left out, and the panel says which systems did not fit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from cemsim.plots.data import fits, ok_rows, require
from cemsim.plots.style import MARKERS, system_colors, system_order, tokens_label

RATIO = "param.workload.attention.filter_ratio"
COLUMNS = ["system", "context_tokens", "batch", "throughput_tokens_per_s", RATIO]


def figures(frame: pd.DataFrame, batch: int | None = None, **_: object) -> list[tuple[str, Figure]]:
    require(frame, COLUMNS, "filter_ratio")
    data = ok_rows(frame)
    figs: list[tuple[str, Figure]] = []
    for b in sorted(data["batch"].dropna().unique()) if batch is None else [batch]:
        sub = data[data["batch"] == b]
        if sub.empty:
            continue
        contexts = sorted(sub["context_tokens"].dropna().unique())
        systems = system_order(sub["system"])
        colors = system_colors(systems)
        fig, axes = plt.subplots(1, len(contexts), figsize=(4.2 * len(contexts), 4.2), squeeze=False)
        for ax, ctx in zip(axes[0], contexts, strict=True):
            at = sub[sub["context_tokens"] == ctx]
            missing = []
            for i, s in enumerate(systems):
                rows = at[at["system"] == s].sort_values(RATIO)
                ok = rows[fits(rows)]
                if ok.empty:
                    missing.append(s)
                    continue
                ax.plot(
                    ok[RATIO],
                    ok["throughput_tokens_per_s"],
                    marker=MARKERS[i % len(MARKERS)],
                    ms=4,
                    lw=1.5,
                    color=colors[s],
                    label=s,
                )
            if len(missing) == len(systems):
                ax.text(0.5, 0.5, "no system fits", ha="center", va="center", transform=ax.transAxes)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("filter ratio (keys considered / survivors, log)")
            ax.set_title(
                f"{tokens_label(ctx)} tokens" + (f"\n(no fit: {', '.join(missing)})" if missing else "")
            )
        axes[0][0].set_ylabel("throughput (tokens/s, log)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        for ax in axes[0][1:]:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        fig.suptitle(f"Decode throughput against the filter ratio, batch {int(b)}")
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.25, top=0.82, wspace=0.25)
        figs.append((f"filter_ratio_b{int(b)}", fig))
    return figs
