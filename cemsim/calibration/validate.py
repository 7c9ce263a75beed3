"""Replay stored GPU measurements against the simulator: one row per measured point, with the error.

Dense: whole decode steps of Llama-3-8B geometry on one H100 (CUDA graphs) against ``hwconfigs/h100.yaml``
at the same context and batch. Sparse: one layer of LongSight run on the GPU (SCF filter + compaction,
gather, exact scores, top-k, window attention) against the attention time per layer of
``hwconfigs/h100-sparse-hbm.yaml`` fed a trace with the measured survivor counts. Both replay the
discrete-event model itself (the model being validated), one decode step per point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cemsim.calibration import H100, load_calibration
from cemsim.config.loader import load_system
from cemsim.paths import repo_root
from cemsim.sim import prepare, simulate
from cemsim.trace.records import StepRecord
from cemsim.trace.synthetic import synthetic_header, synthetic_steps


def _hwconfig(name: str) -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("validation needs the repo's hwconfigs/ folder")
    return root / "hwconfigs" / name


def dense_rows(cal: dict, fitted: dict | None = None) -> list[dict]:
    rows = []
    for m in cal.get("decode_step", []):
        ctx, batch = int(m["context"]), int(m["batch"])
        overrides = {"workload.context": ctx, "workload.batch": batch, **(fitted or {})}
        system = load_system(_hwconfig("h100.yaml"), overrides).system
        header = synthetic_header("llama3-8b", policy="dense", k=1024)
        res = simulate(prepare(system, header, synthetic_steps(header, context=ctx, steps=1)))
        rows.append(
            {
                "system": "h100",
                "what": "decode step",
                "context": ctx,
                "batch": batch,
                "measured_s": m["median_ms"] / 1e3,
                "predicted_s": res.latency_per_token_s,
            }
        )
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
    blocks[..., first : first + extra] += 1
    considered = context - window - sinks
    surv = np.full(shape, survivors_per_head, dtype=np.int64)
    values = np.minimum(surv, header.k * header.group_size)
    return StepRecord(
        0, context, np.full(shape, considered, dtype=np.int64), surv, blocks, values, window, sinks
    )


def _per_head_pipeline() -> dict[str, str]:
    """The h100-sxm preset's sparse constants: those of the per-head pipeline this file's sparse_layer points
    measured (issue 7). hwconfigs/h100-sparse-hbm.yaml overrides them with the fused pipeline's (issue 18)."""
    gpu = load_system(_hwconfig("h100.yaml")).system.gpu
    return {
        "gpu.sparse_pipeline_latency": f"{gpu.sparse_pipeline_latency!r} s",
        "gpu.sparse_time_per_survivor": f"{gpu.sparse_time_per_survivor!r} s",
        # the per-head pipeline's fit has no per-request, per-key or per-pick term
        "gpu.sparse_time_per_request": f"{gpu.sparse_time_per_request!r} s",
        "gpu.sparse_time_per_key": f"{gpu.sparse_time_per_key!r} s",
        "gpu.sparse_time_per_pick": f"{gpu.sparse_time_per_pick!r} s",
    }


def sparse_rows(cal: dict, fitted: dict | None = None) -> list[dict]:
    rows = []
    for m in cal.get("sparse_layer", []):
        ctx = int(m["context"])
        # the measurement ran one layer, so all 32 layers' KV need not fit: capacity is not what is validated
        overrides = {
            "workload.context": ctx,
            "workload.batch": 1,
            "workload.attention.k": int(m["k"]),
            "gpu.hbm.capacity": "1 TB",
            **_per_head_pipeline(),  # what was measured; h100-sparse-hbm itself now models the fused pipeline
            **(fitted or {}),
        }
        system = load_system(_hwconfig("h100-sparse-hbm.yaml"), overrides).system
        header = synthetic_header(
            "llama3-8b", policy="longsight", k=int(m["k"]), window=int(m["window"]), sinks=int(m["sinks"])
        )
        step = _uniform_step(header, ctx, int(m["survivors_per_layer"]) // int(m["kv_heads"]))
        res = simulate(prepare(system, header, [step]))
        per_layer = res.time_breakdown_s["attention_gpu"] / system.geometry.layers
        rows.append(
            {
                "system": "h100-sparse-hbm",
                "what": "sparse attention, one layer",
                "context": ctx,
                "batch": 1,
                "measured_s": m["median_ms_per_layer"] / 1e3,
                "predicted_s": per_layer,
            }
        )
    return rows


def validation_table(path: Path = H100) -> pd.DataFrame:
    cal = load_calibration(path)
    df = pd.DataFrame(dense_rows(cal) + sparse_rows(cal))
    df["error"] = (df["predicted_s"] - df["measured_s"]) / df["measured_s"]
    return df


# The constants fitted to these same measurements (gpu preset fields), per system.
FITTED = {
    "h100": ("gpu.layer_overhead",),
    "h100-sparse-hbm": ("gpu.sparse_pipeline_latency", "gpu.sparse_time_per_survivor"),
}


def _linear_model(cal: dict, system: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions are affine in the fitted constants: (measured [n], base [n], slopes [n, p]) by finite
    differences of the replay itself, so the fit below sees exactly the simulator's model."""
    rows_of = dense_rows if system == "h100" else sparse_rows
    names = FITTED[system]
    zero = {n: "0 s" for n in names}
    base_rows = rows_of(cal, zero)
    base = np.array([r["predicted_s"] for r in base_rows])
    slopes = np.empty((len(base), len(names)))
    for j, n in enumerate(names):
        unit = rows_of(cal, {**zero, n: "1 us"})  # exact: the model is affine in these constants
        slopes[:, j] = (np.array([r["predicted_s"] for r in unit]) - base) / 1e-6
    return np.array([r["measured_s"] for r in base_rows]), base, slopes


def _fit(measured: np.ndarray, base: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """Least squares on relative error: minimise sum(((base + slopes @ x) / measured - 1)^2)."""
    a = slopes / measured[:, None]
    b = 1.0 - base / measured
    return np.linalg.lstsq(a, b, rcond=None)[0]


def leave_one_out(path: Path = H100) -> pd.DataFrame:
    """Out-of-sample check of the fitted constants: refit them without point i, predict point i."""
    cal = load_calibration(path)
    frames = []
    for system in FITTED:
        measured, base, slopes = _linear_model(cal, system)
        table = validation_table(path)
        table = table[table["system"] == system].reset_index(drop=True)
        fit_all = _fit(measured, base, slopes)
        loo = np.empty(len(measured))
        for i in range(len(measured)):
            keep = np.arange(len(measured)) != i
            x = _fit(measured[keep], base[keep], slopes[keep])
            loo[i] = base[i] + slopes[i] @ x
        table["refit_all"] = [dict(zip(FITTED[system], fit_all, strict=True))] * len(table)
        table["loo_predicted_s"] = loo
        table["loo_error"] = (loo - measured) / measured
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    """Print the table in Markdown (for docs/validation.md)."""
    df = validation_table()
    print(
        "| system | what | context | batch | measured (ms) | predicted (ms) | error |\n|---|---|---|---|---|---|---|"
    )
    for r in df.itertuples():
        print(
            f"| {r.system} | {r.what} | {r.context:,} | {r.batch} | {r.measured_s * 1e3:.3f} | "
            f"{r.predicted_s * 1e3:.3f} | {r.error:+.1%} |"
        )
    for system, g in df.groupby("system"):
        print(f"\n{system}: mean absolute error {g['error'].abs().mean():.1%} over {len(g)} points")
    loo = leave_one_out()
    print("\nLeave-one-out: the fitted constants refitted without each point, then that point predicted.\n")
    print(
        "| system | context | batch | measured (ms) | LOO predicted (ms) | LOO error |\n|---|---|---|---|---|---|"
    )
    for r in loo.itertuples():
        print(
            f"| {r.system} | {r.context:,} | {r.batch} | {r.measured_s * 1e3:.3f} | {r.loo_predicted_s * 1e3:.3f} | "
            f"{r.loo_error:+.1%} |"
        )
    for system, g in loo.groupby("system"):
        fit = ", ".join(
            f"{k} = {v * 1e9:.3g} ns" if "per_survivor" in k else f"{k} = {v * 1e6:.3g} us"
            for k, v in g["refit_all"].iloc[0].items()
        )
        print(
            f"\n{system}: leave-one-out mean absolute error {g['loo_error'].abs().mean():.1%} over {len(g)} "
            f"points (least-squares refit on all points: {fit})"
        )


if __name__ == "__main__":
    main()
