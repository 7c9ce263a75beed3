"""Replay stored GPU measurements against the simulator: one row per measured point, with the error.

Dense: whole decode steps of Llama-3-8B geometry on one H100 (CUDA graphs) against ``hwconfigs/h100.yaml``
at the same context and batch. Sparse: one layer of LongSight run on the GPU (SCF filter + compaction,
gather, exact scores, top-k, window attention) against the attention time per layer of
``hwconfigs/h100-sparse-hbm.yaml`` fed a trace with the measured survivor counts. Both use the analytic twin,
which equals the discrete-event model at batch 1 (tests/sim) and costs milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cemsim.calibration import H100, load_calibration
from cemsim.config.loader import load_system
from cemsim.paths import repo_root
from cemsim.sim import analytic, prepare
from cemsim.trace.records import StepRecord
from cemsim.trace.synthetic import synthetic_header, synthetic_steps


def _hwconfig(name: str) -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("validation needs the repo's hwconfigs/ folder")
    return root / "hwconfigs" / name


def dense_rows(cal: dict) -> list[dict]:
    rows = []
    for m in cal.get("decode_step", []):
        ctx, batch = int(m["context"]), int(m["batch"])
        system = load_system(_hwconfig("h100.yaml"), {"workload.context": ctx, "workload.batch": batch}).system
        header = synthetic_header("llama3-8b", policy="dense", k=1024)
        res = analytic(prepare(system, header, synthetic_steps(header, context=ctx, steps=1)))
        rows.append({"system": "h100", "what": "decode step", "context": ctx, "batch": batch,
                     "measured_s": m["median_ms"] / 1e3, "predicted_s": res.latency_per_token_s})
    return rows


def _uniform_step(header, context: int, survivors_per_head: int) -> StepRecord:
    """One step whose every (layer, KV head) has ``survivors_per_head`` survivors spread over the sparse region."""
    shape = (header.layers, header.kv_heads)
    window, sinks = header.window, header.sinks
    n_blocks = -(-context // header.block_size)
    first, last = sinks // header.block_size, (context - window) // header.block_size
    span = max(1, last - first)
    blocks = np.zeros((*shape, n_blocks), dtype=np.uint16)
    base, extra = divmod(survivors_per_head, span)
    blocks[..., first:last] = base
    blocks[..., first:first + extra] += 1
    considered = context - window - sinks
    surv = np.full(shape, survivors_per_head, dtype=np.int64)
    values = np.minimum(surv, header.k * header.group_size)
    return StepRecord(0, context, np.full(shape, considered, dtype=np.int64), surv, blocks, values, window, sinks)


def sparse_rows(cal: dict) -> list[dict]:
    rows = []
    for m in cal.get("sparse_layer", []):
        ctx = int(m["context"])
        # the measurement ran one layer, so all 32 layers' KV need not fit: capacity is not what is validated
        overrides = {"workload.context": ctx, "workload.batch": 1, "workload.attention.k": int(m["k"]),
                     "gpu.hbm.capacity": "1 TB"}
        system = load_system(_hwconfig("h100-sparse-hbm.yaml"), overrides).system
        header = synthetic_header("llama3-8b", policy="longsight", k=int(m["k"]), window=int(m["window"]),
                                  sinks=int(m["sinks"]))
        step = _uniform_step(header, ctx, int(m["survivors_per_layer"]) // int(m["kv_heads"]))
        res = analytic(prepare(system, header, [step]))
        per_layer = res.time_breakdown_s["attention_gpu"] / system.geometry.layers
        rows.append({"system": "h100-sparse-hbm", "what": "sparse attention, one layer", "context": ctx,
                     "batch": 1, "measured_s": m["median_ms_per_layer"] / 1e3, "predicted_s": per_layer})
    return rows


def validation_table(path: Path = H100) -> pd.DataFrame:
    cal = load_calibration(path)
    df = pd.DataFrame(dense_rows(cal) + sparse_rows(cal))
    df["error"] = (df["predicted_s"] - df["measured_s"]) / df["measured_s"]
    return df


def main() -> None:
    """Print the table in Markdown (for docs/validation.md)."""
    df = validation_table()
    print("| system | what | context | batch | measured (ms) | predicted (ms) | error |\n|---|---|---|---|---|---|---|")
    for r in df.itertuples():
        print(f"| {r.system} | {r.what} | {r.context:,} | {r.batch} | {r.measured_s * 1e3:.3f} | "
              f"{r.predicted_s * 1e3:.3f} | {r.error:+.1%} |")
    for system, g in df.groupby("system"):
        print(f"\n{system}: mean absolute error {g['error'].abs().mean():.1%} over {len(g)} points")


if __name__ == "__main__":
    main()
