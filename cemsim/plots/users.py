"""Throughput and per-token latency against the number of concurrent users (batch) at one context length,
with the latency SLO drawn as a line; points over the SLO are hollow in the throughput panel."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from cemsim.plots.data import fits, ok_rows, pick_value, require
from cemsim.plots.style import MARKERS, system_colors, system_order, tokens_label

PLAIN = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}")  # 600, not 6x10^2


def figures(
    frame: pd.DataFrame, context: int | str | None = None, slo_ms: float = 100.0, **_: object
) -> list[tuple[str, Figure]]:
    require(
        frame,
        ["system", "context_tokens", "batch", "latency_per_token_s", "throughput_tokens_per_s"],
        "users",
    )
    data = ok_rows(frame)
    contexts = (
        [pick_value(data, "context_tokens", context)]
        if context is not None
        else sorted(data["context_tokens"].dropna().unique())
    )
    figs: list[tuple[str, Figure]] = []
    for ctx in contexts:
        sub = data[(data["context_tokens"] == ctx) & fits(data)]
        if sub["batch"].nunique() < 2:
            continue
        systems = system_order(sub["system"])
        colors = system_colors(systems)
        fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.8))
        for i, s in enumerate(systems):
            rows = sub[sub["system"] == s].sort_values("batch")
            marker = MARKERS[i % len(MARKERS)]
            ax_t.plot(rows["batch"], rows["throughput_tokens_per_s"], color=colors[s], lw=1.6, label=s)
            within = rows["latency_per_token_s"] * 1e3 <= slo_ms
            ax_t.scatter(
                rows["batch"][within],
                rows["throughput_tokens_per_s"][within],
                color=colors[s],
                marker=marker,
                s=26,
                zorder=3,
            )
            ax_t.scatter(
                rows["batch"][~within],
                rows["throughput_tokens_per_s"][~within],
                facecolors="white",
                edgecolors=colors[s],
                marker=marker,
                s=26,
                zorder=3,
            )
            ax_l.plot(
                rows["batch"],
                rows["latency_per_token_s"] * 1e3,
                color=colors[s],
                marker=marker,
                ms=4.5,
                lw=1.6,
                label=s,
            )
        ax_l.axhline(slo_ms, color="black", ls="--", lw=1.2, label=f"SLO {slo_ms:g} ms/token")
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(PLAIN)
            ax.set_xlabel("concurrent users (batch)")
            ticks = sorted(sub["batch"].unique())
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(int(t)) for t in ticks])
        ax_t.set_ylabel("throughput (tokens/s, log)")
        ax_t.set_title(f"Throughput (hollow: over the {slo_ms:g} ms SLO)")
        ax_l.set_ylabel("per-token latency (ms, log)")
        ax_l.set_title("Per-token latency against the SLO")
        handles, labels = ax_l.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
        fig.suptitle(f"Users at {tokens_label(ctx)} context (points that do not fit are left out)")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        figs.append((f"users_{tokens_label(ctx)}", fig))
    return figs
