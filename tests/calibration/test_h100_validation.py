"""The simulator against real H100 measurements (stored in cemsim/calibration/), replayed on the CPU."""

from __future__ import annotations

from cemsim.calibration import H100, load_calibration
from cemsim.calibration.validate import leave_one_out, validation_table


def test_calibration_file_has_provenance_and_data() -> None:
    cal = load_calibration(H100)
    prov = cal["provenance"]
    for key in ("gpu", "driver", "torch", "cupy", "date", "method"):
        assert prov[key], key
    assert "H100" in prov["gpu"]
    assert len(cal["decode_step"]) >= 8 and len(cal["sparse_layer"]) >= 4
    # the measured copy bandwidth is what the h100 preset's sustained efficiency (0.90) claims
    assert abs(cal["hbm_copy"]["bandwidth_bytes_per_s"] / 3.35e12 - 0.90) < 0.02


def test_h100_and_sparse_hbm_predictions_within_10_percent_mean() -> None:
    df = validation_table()
    assert set(df["system"]) == {"h100", "h100-sparse-hbm"}
    for system, g in df.groupby("system"):
        mae = g["error"].abs().mean()
        assert mae <= 0.10, f"{system}: mean absolute error {mae:.1%}"
        worst = g["error"].abs().max()
        assert worst <= 0.15, f"{system}: worst point off by {worst:.1%}"
    # latency must grow with context at fixed batch, as measured
    dense = df[(df["system"] == "h100") & (df["batch"] == 1)].sort_values("context")
    assert dense["predicted_s"].is_monotonic_increasing and dense["measured_s"].is_monotonic_increasing


def test_fitted_constants_predict_held_out_points() -> None:
    """Leave-one-out: each point predicted by constants refitted without it stays within the 10% target."""
    loo = leave_one_out()
    assert len(loo) == len(validation_table())
    for system, g in loo.groupby("system"):
        mae = g["loo_error"].abs().mean()
        assert mae <= 0.10, f"{system}: leave-one-out mean absolute error {mae:.1%}"
        assert g["loo_error"].abs().max() <= 0.15, system
    # The shipped preset values are close to the least-squares refit on every point.
    h100 = loo[loo["system"] == "h100"]["refit_all"].iloc[0]
    assert abs(h100["gpu.layer_overhead"] - 40e-6) < 5e-6
    sparse = loo[loo["system"] == "h100-sparse-hbm"]["refit_all"].iloc[0]
    assert abs(sparse["gpu.sparse_pipeline_latency"] - 205e-6) < 20e-6
    assert abs(sparse["gpu.sparse_time_per_survivor"] - 1.56e-9) < 0.2e-9
