"""Per-token latency and throughput against context length (log x), one line per system; a point that does
not fit the system's memory is marked with a cross on the panel's top edge instead of a value.

``scenarios``: a second results frame of the same systems at other survival scenarios (a sweep over
workload.attention.filter_ratio, e.g. analysis/drex_filter_ratio.yaml). Each of its systems gets a shaded
band from its lowest to its highest value over the scenarios and the main line, and a legend entry naming
the filter ratios; the main line stays the trace's own survival."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cemsim.plots.data import fits, ok_rows, require
from cemsim.plots.style import MARKERS, TOKENS_FORMATTER, system_colors, system_order, tokens_label

COLUMNS = ["system", "context_tokens", "batch", "latency_per_token_s", "throughput_tokens_per_s"]


RATIO = "attention.filter_ratio"


def _band(ax, main: pd.DataFrame, extra: pd.DataFrame, metric: str, scale: float, color: str) -> str | None:
    """Shade min..max of ``metric`` per context over the main rows and the scenario rows; the legend text."""
    rows = pd.concat([main, extra[fits(extra)]])
    if extra.empty or rows.empty:
        return None
    span = rows.groupby("context_tokens")[metric].agg(["min", "max"]).sort_index()
    if ((span["max"] - span["min"]) <= 1e-9 * span["max"].abs()).all():
        return None  # the scenarios do not move this system (a dense one: nothing is filtered)
    ax.fill_between(span.index, span["min"] * scale, span["max"] * scale, color=color, alpha=0.18, lw=0)
    ratios = sorted(extra[RATIO].dropna().unique()) if RATIO in extra else []
    return ", ".join(f"{r:g}x" for r in ratios)


def _panel(
    ax,
    strip,
    sub: pd.DataFrame,
    metric: str,
    scale: float,
    systems: list[str],
    colors: dict[str, str],
    scenarios: pd.DataFrame | None = None,
) -> None:
    """Lines on ``ax``; crosses for points that do not fit on ``strip``, a thin band above it, one row per
    system, so a cross is never mistaken for a value."""
    for i, s in enumerate(systems):
        rows = sub[sub["system"] == s].sort_values("context_tokens")
        ok = rows[fits(rows)]
        label = s
        if scenarios is not None and s in set(scenarios["system"]):
            ratios = _band(ax, ok, scenarios[scenarios["system"] == s], metric, scale, colors[s])
            if ratios:
                label = f"{s} (band: filter ratio {ratios}; line: the trace's)"
        ax.plot(
            ok["context_tokens"],
            ok[metric] * scale,
            marker=MARKERS[i % len(MARKERS)],
            ms=4.5,
            lw=1.6,
            color=colors[s],
            label=label,
        )
        nofit = rows[~fits(rows)]
        strip.scatter(
            nofit["context_tokens"],
            [len(systems) - 1 - i] * len(nofit),
            marker="x",
            s=30,
            color=colors[s],
            clip_on=False,
        )
    strip.set_ylim(-0.7, len(systems) - 0.3)
    strip.set_yticks([])
    strip.set_ylabel("does not\nfit", rotation=0, ha="right", va="center", fontsize=8, color="0.3")
    strip.grid(axis="y", visible=False)
    strip.tick_params(axis="x", labelbottom=False)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
    ax.set_xlabel("context length (tokens)")


def figures(
    frame: pd.DataFrame,
    batch: int | list[int] | None = None,
    scenarios: pd.DataFrame | None = None,
    **_: object,
) -> list[tuple[str, Figure]]:
    require(frame, COLUMNS, "context_scaling")
    data = ok_rows(frame)
    extra = ok_rows(scenarios) if scenarios is not None else None
    batches = (
        sorted(data["batch"].dropna().unique())
        if batch is None
        else ([batch] if isinstance(batch, int) else batch)
    )
    figs: list[tuple[str, Figure]] = []
    for b in batches:
        sub = data[data["batch"] == b]
        if sub.empty:
            continue
        systems = system_order(sub["system"])
        colors = system_colors(systems)
        fig, axes = plt.subplots(
            2, 2, figsize=(12, 5.8), sharex="col", gridspec_kw={"height_ratios": [1.4, 5.5], "hspace": 0.05}
        )
        (strip_lat, strip_thr), (ax_lat, ax_thr) = axes
        band = None if extra is None else extra[extra["batch"] == b]
        _panel(ax_lat, strip_lat, sub, "latency_per_token_s", 1e3, systems, colors, band)
        ax_lat.set_ylabel("per-token latency (ms, log)")
        strip_lat.set_title("Per-token decode latency (lower is better)")
        _panel(ax_thr, strip_thr, sub, "throughput_tokens_per_s", 1.0, systems, colors, band)
        ax_thr.set_ylabel("throughput (tokens/s, log)")
        strip_thr.set_title("Decode throughput (higher is better)")
        ticks = sorted(sub["context_tokens"].unique())
        for ax in (ax_lat, ax_thr):
            ax.set_xticks(ticks)
            ax.set_xticklabels([tokens_label(t) for t in ticks])
        handles, labels = ax_lat.get_legend_handles_labels()
        handles.append(Line2D([], [], ls="", marker="x", color="0.3"))
        labels.append("does not fit in memory")
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(len(labels), 4),
            frameon=False,
            bbox_to_anchor=(0.5, -0.02),
        )
        model = sub["trace_model"].iloc[0] if "trace_model" in sub else None
        fig.suptitle(
            f"Context scaling, batch {int(b)}" + (f", {model}" if isinstance(model, str) else ""), y=1.0
        )
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.88, wspace=0.22, hspace=0.05)
        figs.append((f"context_scaling_b{int(b)}", fig))
    return figs
