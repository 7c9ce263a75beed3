"""Reading result files for charts: one or more results.parquet (or sweep folders), concatenated, with the
sweep metadata of each; helpers to pick the columns a chart needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from cemsim.errors import CemsimError
from cemsim.sweep.store import flatten, read_results


def read_json_rows(path: Path) -> pd.DataFrame:
    """Rows printed by `cemsim eval --json` / `cemsim run --json` (one JSON object per line, or one per file)."""
    try:
        text = path.read_text()
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise CemsimError(
            f"{path}: not a file of JSON rows from `cemsim eval --json` or `cemsim run --json` ({exc})"
        ) from None
    return pd.DataFrame([{"status": "ok", **flatten(r)} for r in rows])


def load(paths: list[Path]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    frames, metas = [], []
    for p in paths:
        if Path(p).suffix in (".json", ".jsonl"):
            frames.append(read_json_rows(Path(p)))
            metas.append({})
            continue
        frame, meta = read_results(p)
        frames.append(frame)
        metas.append(meta)
    if not frames:
        raise CemsimError("no results files given")
    return pd.concat(frames, ignore_index=True), metas


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"] if "status" in frame else frame


def prefixed(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Columns under a flattened dict (energy_breakdown_j.*) that carry a nonzero value somewhere."""
    cols = [c for c in frame.columns if c.startswith(prefix + ".")]
    return [c for c in cols if pd.to_numeric(frame[c], errors="coerce").fillna(0).abs().sum() > 0]


def fits(frame: pd.DataFrame) -> pd.Series:
    if "fits" not in frame:
        return pd.Series(True, index=frame.index)
    return frame["fits"].fillna(False).astype(bool)


def require(frame: pd.DataFrame, columns: list[str], chart: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CemsimError(f"chart {chart!r} needs the columns {', '.join(missing)}, which the results lack")


def pick_value(frame: pd.DataFrame, column: str, wanted: Any, default: str = "min") -> Any:
    """The value of ``column`` to plot at: the one asked for, else the smallest (or largest) present."""
    values = sorted(frame[column].dropna().unique())
    if not values:
        raise CemsimError(f"no values in column {column!r}")
    if wanted is None:
        return values[0] if default == "min" else values[-1]
    from cemsim.config.workload import parse_tokens

    try:
        target = parse_tokens(wanted) if column in ("context_tokens",) else wanted
    except ValueError:
        target = wanted
    if target not in values:
        raise CemsimError(
            f"{column} = {wanted!r} is not in the results; present: {', '.join(map(str, values))}"
        )
    return target
