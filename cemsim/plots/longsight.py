"""LongSight, side by side: the paper's evaluation (MICRO 2025, section 9) against cemsim's reproduction, from
the results of analysis/longsight_repro.yaml only.

Per model, context and survival scenario: the most users each system holds (``workload.batch: max``), its
per-token latency and throughput, and LongSight's ratios over one H100 (latency: H100 / LongSight; throughput:
LongSight / H100) and over two H100s, data parallel (the paper's 2-GPU baseline) and tensor parallel; and,
where the results hold one-user rows (``workload.batch: 1``), the latency ratio with one user on each system.
The paper's figure sits beside the row at the longest context one H100 holds, where the paper states it.

The chart: throughput and per-token latency against context, one column per model, every system at its most
users, DReX once per scenario, and the paper's ratio range drawn as a bar over one H100's value at the
longest context one H100 holds (where the paper puts LongSight).

``python -m cemsim.plots.longsight RESULTS [--out FILE.md | --doc docs/validation.md]`` prints (or writes, or
fills into a document's marked blocks) the headline and the full table as Markdown.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from cemsim.atomic import atomic_path
from cemsim.errors import CemsimError
from cemsim.plots.data import fits, ok_rows, require
from cemsim.plots.style import MARKERS, TOKENS_FORMATTER, system_colors, tokens_label

GPU, CEM, DP, TP = "h100", "h100-drex", "h100x2-dp", "h100x2"
MODEL = "param.workload.model"
SCENARIO = "param.workload.attention.filter_ratio"
COLUMNS = [
    "system",
    "context_tokens",
    "batch",
    "fits",
    "latency_per_token_s",
    "throughput_tokens_per_s",
    MODEL,
]
# The paper's headline (MICRO 2025, section 9): at the longest context one GPU holds, LongSight against one
# H100 (Hugging Face transformers), Llama-3-1B and -8B, as many users as each system holds; results past
# 128K projected from 128K. The range covers both models; the paper's text gives no per-model split.
PAPER_LATENCY_RATIO = (3.6, 11.9)
PAPER_THROUGHPUT_RATIO = (8.1, 9.6)
PAPER_SOURCE = "LongSight (MICRO 2025), section 9"
PAPER_FILTER_RATIO = 20.0  # "about 20x at < 5 % perplexity" (LongSight, section 8)


def scenario_label(value: object) -> str:
    """A filter-ratio axis value as the table names it: the paper's 20x, another ratio, or the projection."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "projected"
    ratio = float(value)  # type: ignore[arg-type]
    return f"{ratio:g}x (paper)" if ratio == PAPER_FILTER_RATIO else f"{ratio:g}x"


def _pick(rows: pd.DataFrame, system: str) -> pd.Series | None:
    hit = rows[rows["system"] == system]
    return hit.iloc[0] if len(hit) else None


def _vals(row: pd.Series | None) -> tuple[float, float, float, str | None]:
    """(users, latency s, throughput tokens/s, limiting memory); NaN where the system holds no user."""
    if row is None or not bool(row.get("fits")) or row.get("status", "ok") != "ok":
        return 0.0, math.nan, math.nan, None
    limit = row.get("batch_limited_by")
    return (
        float(row["batch"]),
        float(row["latency_per_token_s"]),
        float(row["throughput_tokens_per_s"]),
        None if limit is None or (isinstance(limit, float) and math.isnan(limit)) else str(limit),
    )


def longest_gpu_context(frame: pd.DataFrame, model: str) -> float | None:
    """The longest context at which one H100 holds at least one user of ``model`` (None: never)."""
    rows = frame[(frame["system"] == GPU) & (frame[MODEL] == model) & fits(frame)]
    return float(rows["context_tokens"].max()) if len(rows) else None


def _max_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows at the most users each system holds (``workload.batch: max``)."""
    if "batch_rule" not in frame:
        raise CemsimError("these results have no batch_rule column: sweep with `workload.batch: max`")
    return frame[frame["batch_rule"] == "max"]


def side_by_side(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, context, scenario): each system's users, latency and throughput at the most users
    it holds, LongSight's ratios over the GPU baselines there (NaN where a baseline holds no user), and the
    latency ratio with one user on each system where the results have batch-1 rows."""
    require(frame, [*COLUMNS, SCENARIO], "longsight")
    data = ok_rows(frame).copy()
    data["_scenario"] = data[SCENARIO].map(scenario_label)
    single = data[(data.get("batch_rule") != "max") & (data["batch"] == 1)] if "batch_rule" in data else None
    out = []
    for (model, ctx, scen), rows in _max_rows(data).groupby(
        [MODEL, "context_tokens", "_scenario"], sort=False
    ):
        cem = _pick(rows, CEM)
        if cem is None:
            continue
        row: dict[str, object] = {
            "model": model,
            "context_tokens": int(ctx),
            "k": int(cem["attention.k"]) if "attention.k" in cem and pd.notna(cem["attention.k"]) else None,
            "scenario": scen,
            # keys considered / survivors as replayed (the projection's grows with context)
            "replayed_filter_ratio": float(cem.get("attention.replayed_filter_ratio", math.nan)),
        }
        for key, system in (("gpu", GPU), ("cem", CEM), ("dp", DP), ("tp", TP)):
            users, lat, thr, limit = _vals(_pick(rows, system))
            row[f"{key}_users"] = int(users)
            row[f"{key}_latency_ms"] = lat * 1e3
            row[f"{key}_throughput"] = thr
            row[f"{key}_limited_by"] = limit
        row["latency_ratio"] = row["gpu_latency_ms"] / row["cem_latency_ms"]  # type: ignore[operator]
        for key in ("gpu", "dp", "tp"):
            row[f"throughput_ratio_{key}"] = row["cem_throughput"] / row[f"{key}_throughput"]  # type: ignore[operator]
        one = (
            single[
                (single[MODEL] == model) & (single["context_tokens"] == ctx) & (single["_scenario"] == scen)
            ]
            if single is not None
            else None
        )
        for key, system in (("gpu", GPU), ("cem", CEM)):
            _, lat, _, _ = _vals(_pick(one, system) if one is not None else None)
            row[f"{key}_latency_1_ms"] = lat * 1e3
        row["latency_ratio_1"] = row["gpu_latency_1_ms"] / row["cem_latency_1_ms"]  # type: ignore[operator]
        out.append(row)
    if not out:
        raise CemsimError("no LongSight (h100-drex) rows in these results: run analysis/longsight_repro.yaml")
    table = pd.DataFrame(out)
    longest = {m: longest_gpu_context(data, m) for m in table["model"].unique()}
    table["longest_gpu_context"] = [
        longest[m] == c for m, c in zip(table["model"], table["context_tokens"], strict=True)
    ]
    order = {s: i for i, s in enumerate(dict.fromkeys(table["scenario"]))}
    table["_o"] = table["scenario"].map(order)
    return table.sort_values(["model", "context_tokens", "_o"]).drop(columns="_o").reset_index(drop=True)


def _num(value: float, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _scenario_cell(r: pd.Series) -> str:
    ratio = r.get("replayed_filter_ratio")
    if r["scenario"] == "projected" and ratio is not None and not math.isnan(ratio):
        return f"projected ({ratio:.0f}x)"
    return str(r["scenario"])


def markdown(table: pd.DataFrame) -> str:
    """The table for docs/validation.md: per model and context, one row per scenario."""
    head = (
        "| model | context | k | filter ratio | users: H100 / 2xH100 DP / LongSight | ms/token at most users: "
        "H100 / LongSight | latency ratio (H100 / LongSight): 1 user / most users | throughput ratio at most "
        "users: over H100 / 2xH100 DP / 2xH100 TP | paper (latency / throughput over H100) |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for _, r in table.iterrows():
        paper = (
            f"{PAPER_LATENCY_RATIO[0]:g}-{PAPER_LATENCY_RATIO[1]:g}x / "
            f"{PAPER_THROUGHPUT_RATIO[0]:g}-{PAPER_THROUGHPUT_RATIO[1]:g}x"
            if r["longest_gpu_context"]
            else ""
        )
        lines.append(
            f"| {r['model']} | {tokens_label(r['context_tokens'])}"
            + (" (longest on one H100)" if r["longest_gpu_context"] else "")
            + f" | {r['k'] if r['k'] is not None else '-'} | {_scenario_cell(r)} "
            f"| {r['gpu_users']} / {r['dp_users']} / {r['cem_users']} "
            f"| {_num(r['gpu_latency_ms'], '.1f')} / {_num(r['cem_latency_ms'], '.1f')} "
            f"| {_num(r['latency_ratio_1'], '.2f')} / {_num(r['latency_ratio'], '.2f')} "
            f"| {_num(r['throughput_ratio_gpu'], '.2f')} / {_num(r['throughput_ratio_dp'], '.2f')} / "
            f"{_num(r['throughput_ratio_tp'], '.2f')} | {paper} |"
        )
    return "\n".join(lines) + "\n"


def gap(value: float, paper: tuple[float, float]) -> float:
    """How far a reproduced ratio lies from the paper's range: 0 inside it, else value / nearest end - 1
    (-0.49: 49 % below the paper's lower end). NaN when there is no value."""
    lo, hi = paper
    if value is None or math.isnan(value):
        return math.nan
    return 0.0 if lo <= value <= hi else value / (lo if value < lo else hi) - 1.0


def _gap_cell(value: float, paper: tuple[float, float]) -> str:
    g = gap(value, paper)
    if math.isnan(g):
        return "-"
    return f"{value:.2f}x (inside)" if g == 0 else f"{value:.2f}x ({g:+.0%})"


def headline(table: pd.DataFrame) -> str:
    """Per model, at the longest context one H100 holds: the paper's ranges beside cemsim's ratios under each
    scenario, with the gap to the paper's range (latency with one user on each system; throughput at the
    most users each holds)."""
    head = (
        f"| model | context | users: H100 / LongSight | filter ratio | latency ratio, 1 user (paper "
        f"{PAPER_LATENCY_RATIO[0]:g}-{PAPER_LATENCY_RATIO[1]:g}x) | throughput ratio, most users (paper "
        f"{PAPER_THROUGHPUT_RATIO[0]:g}-{PAPER_THROUGHPUT_RATIO[1]:g}x) |\n|---|---|---|---|---|---|"
    )
    lines = [head]
    for _, r in table[table["longest_gpu_context"]].iterrows():
        lines.append(
            f"| {r['model']} | {tokens_label(r['context_tokens'])} | {r['gpu_users']} / {r['cem_users']} "
            f"| {_scenario_cell(r)} | {_gap_cell(r['latency_ratio_1'], PAPER_LATENCY_RATIO)} "
            f"| {_gap_cell(r['throughput_ratio_gpu'], PAPER_THROUGHPUT_RATIO)} |"
        )
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- longsight:{}:begin -->", "<!-- longsight:{}:end -->"


def replace_blocks(text: str, blocks: dict[str, str], where: str) -> str:
    """``text`` with the content between each block's begin and end markers replaced."""
    for name, body in blocks.items():
        begin, end = BEGIN.format(name), END.format(name)
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise CemsimError(f"{where}: no '{begin}' ... '{end}' block to fill")
        text = text[: i + len(begin)] + "\n" + body + text[j:]
    return text


SCENARIO_STYLES = ("-", "--", ":", "-.")
PLAIN = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}")  # 60, not 6x10^1
# minor ticks labelled at 2 and 5 x a power of ten only, so a panel spanning decades stays legible
SPARSE = FuncFormatter(lambda v, _pos: PLAIN(v) if v > 0 and f"{v:.0e}"[0] in "25" else "")


def _lines(ax, at: pd.DataFrame, metric: str, scale: float, systems, scenarios, colors) -> None:
    for i, s in enumerate(systems):
        runs = scenarios if s == CEM else scenarios[:1]  # dense systems: one scenario, all identical
        for j, scen in enumerate(runs):
            rows = at[(at["system"] == s) & (at["_scenario"] == scen)].sort_values("context_tokens")
            if rows.empty:
                continue
            style = {"color": colors[s], "marker": MARKERS[i % len(MARKERS)], "ms": 4, "lw": 1.5, "ls": "-"}
            if s == CEM:
                style["ls"] = SCENARIO_STYLES[j % len(SCENARIO_STYLES)]
            if s == GPU:  # under the 2-GPU data-parallel line where they coincide (same users per GPU)
                style.update(lw=4.5, alpha=0.45, ms=7)
            label = f"{s}, filter ratio {scen}" if s == CEM else s
            ax.plot(rows["context_tokens"], rows[metric] * scale, label=label, **style)


def figures(frame: pd.DataFrame, **_: object) -> list[tuple[str, Figure]]:
    """Top: throughput at the most users each system holds. Bottom: per-token latency with one user on each
    system (at the most users where the results have no one-user rows). The paper's ranges as black bars
    over one H100's value at the longest context one H100 holds."""
    require(frame, [*COLUMNS, SCENARIO], "longsight")
    data = ok_rows(frame).copy()
    data["_scenario"] = data[SCENARIO].map(scenario_label)
    most = _max_rows(data)
    one = data[(data["batch_rule"] == "given") & (data["batch"] == 1)]
    latency_rows, latency_users = (one, "one user") if len(one) else (most, "most users")
    models = sorted(most[MODEL].dropna().unique())
    systems = [s for s in (GPU, DP, TP, CEM) if s in set(most["system"])]
    colors = system_colors(systems)
    scenarios = list(dict.fromkeys(most.loc[most["system"] == CEM, "_scenario"]))
    fig, axes = plt.subplots(2, len(models), figsize=(6.2 * len(models), 8.4), squeeze=False)
    for col, model in enumerate(models):
        ax_t, ax_l = axes[0][col], axes[1][col]
        at_most = most[(most[MODEL] == model) & fits(most)]
        at_lat = latency_rows[(latency_rows[MODEL] == model) & fits(latency_rows)]
        _lines(ax_t, at_most, "throughput_tokens_per_s", 1.0, systems, scenarios, colors)
        _lines(ax_l, at_lat, "latency_per_token_s", 1e3, systems, scenarios, colors)
        longest = longest_gpu_context(most, model)
        for ax, rows, metric, scale, (lo, hi), label in (
            (ax_t, at_most, "throughput_tokens_per_s", 1.0, PAPER_THROUGHPUT_RATIO, "paper: LongSight"),
            (
                ax_l,
                at_lat,
                "latency_per_token_s",
                1e3,
                (1 / PAPER_LATENCY_RATIO[1], 1 / PAPER_LATENCY_RATIO[0]),
                None,
            ),
        ):
            gpu = rows[(rows["system"] == GPU) & (rows["context_tokens"] == longest)]
            if len(gpu):
                value = float(gpu[metric].iloc[0]) * scale
                ax.vlines(longest, value * lo, value * hi, color="black", lw=5, alpha=0.55, label=label)
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
            ax.yaxis.set_major_formatter(PLAIN)
            ax.yaxis.set_minor_formatter(SPARSE)
            ax.set_xlabel("context (tokens)")
        ax_t.set_title(f"{model}: throughput, as many users as each system holds")
        ax_l.set_title(f"{model}: per-token latency, {latency_users}")
        ax_t.set_ylabel("throughput (tokens/s, log)")
        ax_l.set_ylabel("per-token latency (ms, log)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    fig.suptitle(
        "LongSight side by side: cemsim at the paper's setups; black bar: the paper's range over one H100 at "
        f"the\nlongest context one H100 holds ({PAPER_SOURCE}: throughput 8.1-9.6x, latency 3.6-11.9x lower)"
    )
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.9, hspace=0.32, wspace=0.22)
    return [("longsight_repro", fig)]


def main(argv: list[str] | None = None) -> int:
    from cemsim.plots.data import load

    parser = argparse.ArgumentParser(
        prog="python -m cemsim.plots.longsight", description=__doc__.split("\n")[0]
    )
    parser.add_argument("results", type=Path, help="results.parquet or the sweep's output folder")
    parser.add_argument("--out", type=Path, help="write the Markdown tables here instead of printing them")
    parser.add_argument(
        "--doc",
        type=Path,
        help="fill the tables into this Markdown file, between its '<!-- longsight:headline:begin -->' / "
        "'...:end -->' and '<!-- longsight:table:begin -->' / '...:end -->' markers",
    )
    args = parser.parse_args(argv)
    try:
        frame, _ = load([args.results])
        table = side_by_side(frame)
        blocks = {"headline": headline(table), "table": markdown(table)}
        if args.doc is not None:
            text = replace_blocks(args.doc.read_text(), blocks, str(args.doc))
            with atomic_path(args.doc) as tmp:
                Path(tmp).write_text(text)
            return 0
    except (CemsimError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = blocks["headline"] + "\n" + blocks["table"]
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
