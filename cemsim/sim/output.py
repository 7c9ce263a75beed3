"""A run directory: the resolved config next to the results (result.json, Parquet stats, step latencies).

Each file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from cemsim.atomic import atomic_path, atomic_write_text
from cemsim.sim.result import SimResult


def _rows(res: SimResult) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for metric, table in (
        ("bytes_per_token", res.bytes_moved),
        ("energy_j_per_token", res.energy_breakdown_j),
        ("bandwidth_utilization", res.bandwidth_utilization),
        ("time_s_per_step", res.time_breakdown_s),
        ("user_latency_s", res.user_latency_s),
    ):
        rows += [{"metric": metric, "component": k, "value": float(v)} for k, v in table.items()]
    return rows


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_run_dir(
    out: str | os.PathLike[str], config: dict[str, Any], res: SimResult, estimate: SimResult | None = None
) -> Path:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "config.json", json.dumps(config, indent=2, default=str))
    payload = {"des": res.to_json_dict()} | (
        {"analytic": estimate.to_json_dict()} if estimate is not None else {}
    )
    atomic_write_text(d / "result.json", json.dumps(payload, indent=2, default=str))
    write_parquet(d / "stats.parquet", pd.DataFrame(_rows(res), columns=["metric", "component", "value"]))
    write_parquet(
        d / "steps.parquet",
        pd.DataFrame({"step": range(len(res.step_latencies_s)), "latency_s": res.step_latencies_s}),
    )
    return d
