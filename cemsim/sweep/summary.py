"""The table printed after a sweep: per-token latency by context and system (the question most sweeps ask),
else a plain listing of the points and their headline numbers."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

HEADLINE = (
    "latency_per_token_s",
    "throughput_tokens_per_s",
    "energy_per_token_j",
    "filter_ratio",
    "ppl_increase",
)


def tokens_label(n: float) -> str:
    """131072 -> "128K", 1048576 -> "1M" (binary multiples, as the papers write context lengths)."""
    n = round(float(n))
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}K"
    return f"{n:,}"


def _header(name: str, width: int = 8) -> str:
    """Break a long system name at its hyphens so narrow terminals show it whole."""
    lines, line = [], ""
    for part in name.split("-"):
        piece = part if not line else f"-{part}"
        if line and len(line) + len(piece) > width:
            lines.append(line + "-")
            piece = part
            line = ""
        line += piece
    return "\n".join([*lines, line])


def _cell(row: pd.Series, metric: str, scale: float, fmt: str) -> str:
    if row.get("status") != "ok":
        return f"[red]{row.get('status')}[/]"
    if row.get("fits") is False or pd.isna(row.get(metric)):
        return "[yellow]no fit[/]"
    return format(row[metric] * scale, fmt)


def _pivot(frame: pd.DataFrame, batch: int, metric: str, scale: float, fmt: str, title: str) -> Table:
    sub = frame[frame["batch"] == batch]
    systems = list(dict.fromkeys(sub["system"]))
    table = Table(title=f"{title}, batch {batch}")
    table.add_column("context", justify="right")
    for s in systems:
        table.add_column(_header(s), justify="right", overflow="fold")
    for ctx in sorted(sub["context_tokens"].dropna().unique()):
        cells = []
        for s in systems:
            hit = sub[(sub["system"] == s) & (sub["context_tokens"] == ctx)]
            cells.append(_cell(hit.iloc[0], metric, scale, fmt) if len(hit) else "")
        table.add_row(tokens_label(ctx), *cells)
    return table


def summary_tables(frame: pd.DataFrame, limit: int = 40) -> list[Table]:
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    # `workload.batch: max` points run at each system's own batch: a pivot by one batch would hide them
    fit_batch = "batch_rule" in frame.columns and bool((frame["batch_rule"] == "max").any())
    if (
        {"context_tokens", "system", "batch", "latency_per_token_s"} <= set(frame.columns)
        and len(ok)
        and not fit_batch
    ):
        batches = sorted(ok["batch"].dropna().unique())
        tables = [_pivot(frame, int(batches[0]), "latency_per_token_s", 1e3, ".2f", "Per-token latency (ms)")]
        if "throughput_tokens_per_s" in frame:
            tables.append(
                _pivot(
                    frame, int(batches[-1]), "throughput_tokens_per_s", 1.0, ",.0f", "Throughput (tokens/s)"
                )
            )
        return tables
    table = Table(title=f"Sweep points (first {min(limit, len(frame))} of {len(frame)})")
    params = [c for c in frame.columns if c.startswith("param.")]
    cols = ["system", "status", *params, *(["batch"] if fit_batch else [])]
    cols += [c for c in HEADLINE if c in frame.columns]
    for c in cols:
        table.add_column(c.removeprefix("param."), overflow="fold")
    for _, row in frame.head(limit).iterrows():
        table.add_row(
            *(
                "" if pd.isna(row.get(c)) else f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                for c in cols
            )
        )
    return [table]
