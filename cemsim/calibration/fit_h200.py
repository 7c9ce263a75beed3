"""Fit the H200 GPU presets to decode steps measured on an H200, and check them on points they were not fitted to.

Measurements (this folder; written by ``benchmarks/gpu/decode_baselines.py`` on the lent H200, 2026-12-02):
  h200-decode-2026-12-02.json            run 1: idle and active power, HBM copy, GEMM, launch costs, linear layers
                                         against batch, attention against context and batch, and whole serving
                                         steps (static KV cache, one CUDA graph per step) with their NVML power
  h200-hf-generate-grid-2026-12-02.json  run 2: Hugging Face ``generate()`` steps (DynamicCache), full grid
  h200-hf-generate-2026-12-02.json       run 3: the same on a fresh machine, 1K / 32K / 128K

What is fitted to what (held-out points never enter a fit):
  h200-serving   gpu.hbm.sustained_efficiency and gpu.layer_overhead, least squares on relative error over the
                 serving steps at contexts 1K, 16K and 64K (every batch, both models); held out: 4K, 32K, 128K.
  h200-hf-eager  gpu.hbm.sustained_efficiency and gpu.step_overhead (gpu.layer_overhead held at zero: eager
                 generate() is host-bound per step, not per layer) over run 2's generate() steps; held out: every
                 point of run 3, measured on another machine start.
  both           gpu.matmul_efficiency from the compute-bound linear stacks (batch 1024); gpu.idle_power,
                 gpu.hbm.energy_per_bit and gpu.energy_per_flop from the power of three microbenchmarks (no work
                 with a CUDA context open, a device copy, a GEMM), so the energy of every decode step is held out.

Predictions replay the discrete-event model itself (load_system + simulate, one step per point), as
``validate.py`` does for the H100. ``python -m cemsim.calibration.fit_h200`` prints the tables of
docs/validation.md; tests/calibration/test_h200_fit.py replays them in CI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from cemsim.calibration import CALIBRATION_DIR, load_calibration
from cemsim.config.loader import load_system
from cemsim.errors import CemsimError
from cemsim.paths import repo_root
from cemsim.sim import prepare, simulate
from cemsim.sim.result import SimResult
from cemsim.trace.synthetic import synthetic_header, synthetic_steps

DECODE = CALIBRATION_DIR / "h200-decode-2026-12-02.json"
HF_GRID = CALIBRATION_DIR / "h200-hf-generate-grid-2026-12-02.json"
HF_RUN3 = CALIBRATION_DIR / "h200-hf-generate-2026-12-02.json"
SERVING_FIT_CONTEXTS = (1024, 16384, 65536)  # the rest of the serving grid (4K, 32K, 128K) is held out
EFFICIENCY = "gpu.hbm.sustained_efficiency"
OVERHEAD = "gpu.layer_overhead"
STEP_OVERHEAD = "gpu.step_overhead"
UNITS = {
    OVERHEAD: "s",
    STEP_OVERHEAD: "s",
    "gpu.idle_power": "W",
    "gpu.hbm.energy_per_bit": "J/bit",
    "gpu.energy_per_flop": "J",
}


def _hwconfig(name: str) -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("the H200 fit needs the repo's hwconfigs/ folder")
    return root / "hwconfigs" / f"{name}.yaml"


@lru_cache(maxsize=256)
def _trace(model: str, context: int):
    header = synthetic_header(model, policy="dense", k=1024)
    return header, list(synthetic_steps(header, context=context, steps=1))


def replay(
    system: str, model: str, context: int, batch: int, constants: dict[str, float] | None = None
) -> SimResult:
    """One decode step of ``model`` on ``hwconfigs/<system>.yaml``; ``constants`` override preset fields (SI)."""
    overrides: dict[str, object] = {
        "workload.model": model,
        "workload.context": context,
        "workload.batch": batch,
    }
    for key, value in (constants or {}).items():
        overrides[key] = f"{value!r} {UNITS[key]}" if key in UNITS else value  # fractions have no unit
    sim = load_system(_hwconfig(system), overrides).system
    header, steps = _trace(model, context)
    return simulate(prepare(sim, header, steps))


@dataclass(frozen=True)
class Point:
    model: str
    context: int
    batch: int
    measured_s: float
    measured_j_per_token: float | None

    @classmethod
    def of(cls, row: dict) -> Point:
        return cls(
            row["model"],
            int(row["context"]),
            int(row["batch"]),
            row["median_ms"] / 1e3,
            row.get("energy_per_token_j"),
        )


def serving_points() -> list[Point]:
    return [Point.of(r) for r in load_calibration(DECODE)["serving_step"]]


def hf_points(path: Path) -> list[Point]:
    return [Point.of(r) for r in load_calibration(path)["hf_generate_step"]]


def _predict(system: str, points: list[Point], constants: dict[str, float]) -> np.ndarray:
    out = []
    for p in points:
        lat = replay(system, p.model, p.context, p.batch, constants).latency_per_token_s
        if lat is None:
            raise CemsimError(
                f"{p.model} at {p.context} tokens x {p.batch} users does not fit the GPU, but it was measured on one",
                where=f"hwconfigs/{system}.yaml",
            )
        out.append(lat)
    return np.array(out)


def _gauss_newton(predict, measured: np.ndarray, x0: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Least squares on relative error, slopes by finite differences of ``predict`` (the replay itself)."""
    x = x0.astype(float)
    for _ in range(6):
        base = predict(x)
        jac = np.empty((len(measured), len(x)))
        for j in range(len(x)):
            dx = np.zeros(len(x))
            dx[j] = steps[j]
            jac[:, j] = (predict(x + dx) - base) / steps[j]
        delta = np.linalg.lstsq(jac / measured[:, None], (measured - base) / measured, rcond=None)[0]
        x = x + delta
        if np.all(np.abs(delta) <= 1e-5 * np.abs(x) + 1e-12):
            break
    return x


def fit_step_constants(
    system: str,
    points: list[Point],
    fixed: dict[str, float],
    start: tuple[float, float] = (0.85, 50e-6),
    overhead: str = OVERHEAD,
) -> dict[str, float]:
    """(sustained efficiency, ``overhead``) by least squares on relative error over ``points``; the other
    overhead (per layer or per step) is held at zero.

    A decode step is memory-bound at these batches, so the replay is affine in (1 / efficiency, overhead) and
    Gauss-Newton converges in two or three iterations."""
    measured = np.array([p.measured_s for p in points])
    other = STEP_OVERHEAD if overhead == OVERHEAD else OVERHEAD

    def predict(v: np.ndarray) -> np.ndarray:
        return _predict(
            system, points, {**fixed, other: 0.0, EFFICIENCY: float(1.0 / v[0]), overhead: float(v[1])}
        )

    x0 = np.array([1.0 / start[0], start[1]])
    x = _gauss_newton(predict, measured, x0, np.array([0.02 * x0[0], max(1e-6, 1e-3 * start[1])]))
    return {EFFICIENCY: float(1.0 / x[0]), overhead: float(x[1]), other: 0.0}


def per_layer_alternative(fixed: dict[str, float]) -> dict:
    """The model HF eager had before gpu.step_overhead: (efficiency, layer overhead) fitted to run 2 with no
    per-step term, checked on run 3, for comparison with the shipped per-step fit."""
    fit_pts, held = hf_points(HF_GRID), hf_points(HF_RUN3)
    constants = {**fixed, **fit_step_constants("h200-hf-eager", fit_pts, fixed, overhead=OVERHEAD)}
    out: dict = {"sustained_efficiency": constants[EFFICIENCY], "layer_overhead_s": constants[OVERHEAD]}
    for name, pts in (("fit", fit_pts), ("held out", held)):
        meas = np.array([p.measured_s for p in pts])
        err = (_predict("h200-hf-eager", pts, constants) - meas) / meas
        out[name] = {"mean_abs_error": float(np.abs(err).mean()), "max_abs_error": float(np.abs(err).max())}
    return out


def layer_overhead_slope(constants: dict[str, float]) -> float:
    """d(sum of squared relative errors) / d(gpu.layer_overhead) over run 2 at ``constants``, by a finite
    difference of the replay. Positive at a per-step fit with layer_overhead = 0: the least-squares fit with a
    non-negative per-layer cost holds it at zero (the replay is affine in the overheads, the problem convex)."""
    points = hf_points(HF_GRID)
    measured = np.array([p.measured_s for p in points])
    base = _predict("h200-hf-eager", points, constants)
    bumped = _predict("h200-hf-eager", points, {**constants, OVERHEAD: constants[OVERHEAD] + 1e-5})
    return float(2 * np.sum((base - measured) / measured * (bumped - base) / 1e-5 / measured))


def run_to_run() -> dict:
    """How far HF generate() moves between two machine starts at the same point (run 2 against run 3)."""
    a = {(p.model, p.context, p.batch): p.measured_s for p in hf_points(HF_GRID)}
    ratios = [p.measured_s / a[(p.model, p.context, p.batch)] - 1 for p in hf_points(HF_RUN3)]
    return {
        "points": len(ratios),
        "median_abs_change": float(np.median(np.abs(ratios))),
        "max_abs_change": float(np.max(np.abs(ratios))),
    }


def matmul_efficiency() -> float:
    """Sustained bf16 rate of decode-shaped GEMMs: the linear layers of each model at batch 1024 (compute-bound),
    mean over the two models, over the preset's datasheet peak."""
    peak = load_system(_hwconfig("h200-serving")).system.gpu.peak_flops["bf16"]
    rows = [r for r in load_calibration(DECODE)["linear_vs_batch"] if r["batch"] == 1024]
    return float(np.mean([r["achieved_flops_per_s"] for r in rows]) / peak)


def energy_constants() -> dict[str, float]:
    """Static power and the all-in energy per byte and per FLOP, from microbenchmarks' NVML power.

    idle_power: CUDA context open, no work (clocks stay up between decode steps, so this is the floor under a
    decode run). energy per byte: (copy power - idle) / bytes read + written per second over the same loop.
    energy per FLOP: (GEMM power - idle - its bytes' energy) / FLOPs per second over the same loop."""
    cal = load_calibration(DECODE)
    idle = cal["idle_end"]["power_w"]
    copy = cal["hbm_copy"]
    copy_rate = copy["bytes_read_plus_written"] / copy["energy"]["loop_s_per_step"]
    per_byte = (copy["energy"]["power_w"] - idle) / copy_rate
    mm = cal["matmul_peak"]
    n, loop = mm["n"], mm["energy"]["loop_s_per_step"]
    gemm_bytes = 3 * n * n * 2  # A and B read, C written, once each (L2 keeps the tiles' reuse on chip)
    per_flop = (mm["energy"]["power_w"] - idle - per_byte * gemm_bytes / loop) / (2 * n**3 / loop)
    return {
        "gpu.idle_power": idle,
        "gpu.hbm.energy_per_bit": per_byte / 8,
        "gpu.energy_per_flop": per_flop,
    }


@dataclass
class Fit:
    constants: dict[str, dict[str, float]]  # per system (h200-serving, h200-hf-eager)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _table(system: str, points: list[Point], split: str, constants: dict[str, float] | None) -> pd.DataFrame:
    rows = []
    for p in points:
        res = replay(system, p.model, p.context, p.batch, constants)
        rows.append(
            {
                "system": system,
                "split": split,
                "model": p.model,
                "context": p.context,
                "batch": p.batch,
                "measured_s": p.measured_s,
                "predicted_s": res.latency_per_token_s,
                "measured_j_per_token": p.measured_j_per_token,
                "predicted_j_per_token": res.energy_per_token_j,
            }
        )
    df = pd.DataFrame(rows)
    df["error"] = (df["predicted_s"] - df["measured_s"]) / df["measured_s"]
    df["energy_error"] = (df["predicted_j_per_token"] - df["measured_j_per_token"]) / df[
        "measured_j_per_token"
    ]
    return df


def split_serving(points: list[Point]) -> tuple[list[Point], list[Point]]:
    fit = [p for p in points if p.context in SERVING_FIT_CONTEXTS]
    return fit, [p for p in points if p.context not in SERVING_FIT_CONTEXTS]


def fit_all() -> Fit:
    """Fit both presets' step constants on their fit split (the shared constants come from microbenchmarks)."""
    shared = {"gpu.matmul_efficiency": matmul_efficiency(), **energy_constants()}
    serving_fit, _ = split_serving(serving_points())
    return Fit(
        {
            "h200-serving": {**shared, **fit_step_constants("h200-serving", serving_fit, shared)},
            "h200-hf-eager": {
                **shared,
                **fit_step_constants(
                    "h200-hf-eager", hf_points(HF_GRID), shared, start=(0.5, 0.06), overhead=STEP_OVERHEAD
                ),
            },
        }
    )


def validation_tables() -> dict[str, pd.DataFrame]:
    """Both splits of both systems replayed with the presets as shipped (no overrides)."""
    fit, held = split_serving(serving_points())
    return {
        "h200-serving": pd.concat(
            [_table("h200-serving", fit, "fit", None), _table("h200-serving", held, "held out", None)],
            ignore_index=True,
        ),
        "h200-hf-eager": pd.concat(
            [
                _table("h200-hf-eager", hf_points(HF_GRID), "fit", None),
                _table("h200-hf-eager", hf_points(HF_RUN3), "held out", None),
            ],
            ignore_index=True,
        ),
    }


def summary(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean and worst |error| of time and energy per system and split."""
    rows = []
    for system, df in tables.items():
        for split, g in df.groupby("split"):
            rows.append(
                {
                    "system": system,
                    "split": split,
                    "points": len(g),
                    "mean_abs_error": g["error"].abs().mean(),
                    "max_abs_error": g["error"].abs().max(),
                    "mean_abs_energy_error": g["energy_error"].abs().mean(),
                    "max_abs_energy_error": g["energy_error"].abs().max(),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    fit = fit_all()
    for system, c in fit.constants.items():
        print(f"{system}: " + ", ".join(f"{k} = {v:.4g}" for k, v in c.items()))
    tables = validation_tables()
    print(
        "\n| system | split | model | context | batch | measured (ms) | predicted (ms) | error | measured (J/token) "
        "| predicted (J/token) | energy error |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for df in tables.values():
        for r in df.itertuples():
            print(
                f"| {r.system} | {r.split} | {r.model} | {r.context:,} | {r.batch} | {r.measured_s * 1e3:.2f} | "
                f"{r.predicted_s * 1e3:.2f} | {r.error:+.1%} | {r.measured_j_per_token:.3f} | "
                f"{r.predicted_j_per_token:.3f} | {r.energy_error:+.1%} |"
            )
    print()
    print(summary(tables).to_string(index=False))
    shared = {
        k: v
        for k, v in fit.constants["h200-hf-eager"].items()
        if k not in (EFFICIENCY, OVERHEAD, STEP_OVERHEAD)
    }
    print("\nHF eager with a per-layer overhead instead (no per-step term):", per_layer_alternative(shared))
    print("HF generate() run 3 against run 2 at the same points:", run_to_run())


if __name__ == "__main__":
    main()
