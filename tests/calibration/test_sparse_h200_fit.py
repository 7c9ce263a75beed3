"""The fused GPU LongSight pipeline measured on an H200 (cemsim/calibration/h200-sparse-layer-v8-2026-12-04.json;
the seventh version's is h200-sparse-layer-v7-2026-12-03.json, the sixth's h200-sparse-layer-v6-2026-12-03.json,
the fifth's h200-sparse-layer-v5-2026-12-03.json,
and the first version's file, h200-sparse-fused-2026-12-02.json, keeps its filter table), replayed on the CPU: the
file is complete and checked, the fit reproduces h200-sparse-hbm's constants, its held-out error is the one
docs/gpu-kernels.md states, and h100-sparse-hbm's derived constants follow their stated rule. The device run
itself is benchmarks/gpu/bench_fused.py (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cemsim.calibration import H100, H200, load_calibration
from cemsim.calibration import fit_sparse_h200 as fit
from cemsim.config.loader import load_system
from cemsim.errors import CemsimError
from cemsim.sim import prepare, simulate
from cemsim.trace.synthetic import SurvivalLaw, synthetic_header, synthetic_steps

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "gpu-kernels.md"


# measured points whose back-to-back time exceeds 1.02 x their single replays' median: (b2b, median) us, exactly.
# Batch 1 at 1M, 10 % is over in the v8 run (+2.9 %), as in v5, whose single replays spread widely; batch 8 at 1M,
# 10 % was over in the v5, v6 and v7 runs (v7: +2.8 %), not in v8; batch 8 at 32K in v4-v6 (1-5 %)
OVER_SINGLE_REPLAYS = {
    (1, 1048576, 0.1, False): (157.05280303955078, 152.63999998569489),
}


def _gpu(system: str):
    return load_system(REPO / "hwconfigs" / f"{system}.yaml").system.gpu


def test_measurement_file_is_complete_and_every_point_was_checked() -> None:
    cal = load_calibration(fit.FUSED)
    prov = cal["provenance"]
    for key in ("gpu", "driver", "cuda", "cupy", "torch", "nvrtc", "date", "command", "method", "kernels"):
        assert prov[key], key
    assert prov["gpu"] == "NVIDIA H200"
    layers = cal["layers"]
    # batch 1 and 8 x 4K..1M x four survival targets and the planted 5 %, each with its reference check passed
    # and no error
    assert {(r["users"], r["context"], r["survival_target"], r["planted"]) for r in layers} == {
        (u, c, s, planted)
        for u in (1, 8)
        for c in (4096, 8192, 32768, 131072, 524288, 1048576)
        for s, planted in ((0.01, False), (0.02, False), (0.05, False), (0.10, False), (0.05, True))
    }
    for r in layers:
        assert r["row0_checked"] and "error" not in r, r
        # back to back within 2 % of single replays or under them. One v8 point is over (+2.9 %),
        # named above with its exact times so that no other point gets slack and it cannot move
        key = (r["users"], r["context"], r["survival_target"], r["planted"])
        assert r["floor_us"] < r["fused_b2b_us"]
        if key in OVER_SINGLE_REPLAYS:
            assert (r["fused_b2b_us"], r["fused_median_us"]) == OVER_SINGLE_REPLAYS[key]
        else:
            assert r["fused_b2b_us"] <= r["fused_median_us"] * 1.02, key
        if "old_b2b_us" in r:  # today's pipeline, timed on the same data
            assert r["old_b2b_us"] > 2 * r["fused_b2b_us"]
        if r["planted"]:  # exactly 5 % of the region's keys survive
            assert r["survival"] == pytest.approx(0.05, abs=1e-4)
    filters = load_calibration(fit.FILTERS)["filters"]
    assert all(r["correct"] for r in filters), "a filter variant disagreed with NumPy"
    # the copy bandwidth of this run agrees with the H200 campaign's (4.28 TB/s) within 3 %
    ref = load_calibration(H200)["hbm_copy"]["bandwidth_bytes_per_s"]
    assert cal["hbm_copy"]["bandwidth_bytes_per_s"] == pytest.approx(ref, rel=0.03)


@pytest.fixture(scope="module")
def fitted() -> tuple[tuple[float, ...], list[dict]]:
    return fit.table()


# h200-sparse-hbm's constants as written (3 significant figures), in the order of fit.NAMES
WRITTEN = {
    "gpu.sparse_pipeline_latency": ("sparse_pipeline_latency", 11.8e-6),
    "gpu.sparse_time_per_request": ("sparse_time_per_request", 328e-9),
    "gpu.sparse_time_per_key": ("sparse_time_per_key", 1.27e-12),
    "gpu.sparse_time_per_survivor": ("sparse_time_per_survivor", 28.2e-12),
    "gpu.sparse_time_per_pick": ("sparse_time_per_pick", 270e-12),
}


def test_fit_reproduces_the_h200_sparse_hbm_constants(fitted) -> None:
    constants, _ = fitted
    gpu = _gpu("h200-sparse-hbm")
    assert tuple(WRITTEN) == fit.NAMES
    for name, value in zip(fit.NAMES, constants, strict=True):
        field, written = WRITTEN[name]
        assert value > 0, name  # every stage costs time: a negative slope would be a fit artefact
        # abs=0: pytest.approx's default absolute tolerance (1e-12) is as large as the per-key time itself
        assert getattr(gpu, field) == pytest.approx(written, rel=1e-12, abs=0)
        assert value == pytest.approx(written, rel=0.005, abs=0), name  # the file rounds the fit to 3 figures


def test_held_out_error_is_what_the_docs_state(fitted) -> None:
    _, rows = fitted
    held = np.abs([r["error"] for r in rows if r["split"] == "held out"])
    assert len(held) == 30
    # as computed and written in docs/gpu-kernels.md: 9.5 % mean, 35.5 % worst (batch 8 at 128K, planted 5 %),
    # fitted on the times in a graph of 8 chained layers; on the seventh version's, in a graph of 8 layers not
    # chained, 9.1 % / 34.3 %, on the sixth's 9.3 % / 34.3 %; on the fifth version's measurement, one graph a
    # layer, the same model gave 9.6 % / 37.1 %, on the fourth's 8.9 % / 35.2 %, on the third's 9.6 % / 38.7 %,
    # on the second's 10.2 % / 30.4 %, on the first 9.9 % / 17.9 %, a two-constant one 18.4 % / 39.4 %
    assert fit.PRESET_MEASURE == "in a graph of chained layers"
    assert held.mean() == pytest.approx(0.095, abs=0.002)
    assert held.max() == pytest.approx(0.355, abs=0.002)
    assert fit.fit_table() in DOC.read_text()


def test_every_context_left_out_is_predicted_as_the_docs_state() -> None:
    # each context predicted by the constants fitted on the other five (docs/gpu-kernels.md's table, verbatim):
    # 10.3 % mean and 34.1 % worst over all 60 points, the worst batch 8 at 128K, 5 % planted; every constant
    # positive
    cv = fit.cross_validation()
    assert [r["context"] for r in cv] == [4096, 8192, 32768, 131072, 524288, 1048576]
    every = np.abs(np.concatenate([r["errors"] for r in cv]))
    assert len(every) == 60
    assert every.mean() == pytest.approx(0.103, abs=0.002)
    assert every.max() == pytest.approx(0.341, abs=0.002)
    assert all(v > 0 for r in cv for v in r["constants"])
    assert fit.cv_table() in DOC.read_text()


def test_docs_carry_the_measured_tables() -> None:
    text = DOC.read_text()
    for table in (
        fit.layer_table(),
        fit.layer_table(planted=False),
        fit.grid_table(),
        fit.stage_table(),
        fit.filter_table(),
    ):
        assert table in text


def test_the_fifth_version_measured_again_in_graphs_of_layers() -> None:
    # every point again, each also as 8 layers in one graph with that graph's reference check passed
    cal = load_calibration(fit.GRAPH8)
    for key in ("gpu", "driver", "cuda", "cupy", "torch", "nvrtc", "date", "command", "method", "kernels"):
        assert cal["provenance"][key], key
    layers = cal["layers"]
    assert {(r["users"], r["context"], r["survival_target"], r["planted"]) for r in layers} == {
        (r["users"], r["context"], r["survival_target"], r["planted"])
        for r in load_calibration(fit.FUSED)["layers"]
    }
    for r in layers:
        assert r["row0_checked"] and r["graph_layers_row0_checked"] and "error" not in r, r
        assert r["graph_layers"] == 8
        assert r["floor_us"] < r["graph_layers_b2b_us_per_layer"]
    # the fit on each timing: every constant positive, and a decode step's graph (one launch for all its layers)
    # takes 1-3 us off the fixed term, as the empty graphs of the layer's shape (2.9 us) against one kernel (1.5)
    one = fit.fit([p for p in fit.points(fit.GRAPH8, "one graph a layer") if p.fitted])
    many = fit.fit([p for p in fit.points(fit.GRAPH8, "in a graph of layers") if p.fitted])
    assert all(v > 0 for v in (*one, *many))
    assert 1e-6 < one[0] - many[0] < 3e-6
    text = DOC.read_text()
    assert fit.graph_table() in text
    assert fit.repeat_summary() in text
    # the fifth version's measurement has no graphs of layers: asking for them is an error, not a silent fallback
    with pytest.raises(CemsimError, match="graph_layers_b2b_us_per_layer"):
        fit.points(fit.V5, "in a graph of layers")
    with pytest.raises(CemsimError, match="measure must be one of"):
        fit.points(fit.GRAPH8, "per token")


def test_h100_sparse_hbm_follows_its_derivation_rule() -> None:
    h200, h100 = _gpu("h200-sparse-hbm"), _gpu("h100-sparse-hbm")
    ratio = (
        load_calibration(H200)["hbm_copy"]["bandwidth_bytes_per_s"]
        / load_calibration(H100)["hbm_copy"]["bandwidth_bytes_per_s"]
    )
    # launch and on-chip terms as measured on the same die; the memory terms scaled by the copy bandwidths
    assert h100.sparse_pipeline_latency == h200.sparse_pipeline_latency
    assert h100.sparse_time_per_request == h200.sparse_time_per_request
    for field in ("sparse_time_per_key", "sparse_time_per_survivor", "sparse_time_per_pick"):
        assert getattr(h100, field) == pytest.approx(getattr(h200, field) * ratio, rel=3e-3, abs=0), field
    # the host-offload system's GPU part runs the same kernels: the same five constants, written out twice
    offload = _gpu("h100-host-offload-sparse")
    for field in fit.NAMES:
        assert getattr(offload, field.removeprefix("gpu.")) == getattr(h100, field.removeprefix("gpu.")), (
            field
        )
    # the h100 preset keeps the per-head pipeline's constants, which validate.py replays against the H100
    assert _gpu("h100").sparse_pipeline_latency == pytest.approx(205e-6)


def _step_s(system: str, context: int, policy: str) -> float:
    cfg = load_system(
        REPO / "hwconfigs" / f"{system}.yaml", {"workload.context": context, "workload.batch": 1}
    )
    header = synthetic_header("llama3-8b", policy=policy, k=256 if context <= 32768 else 1024)
    steps = list(synthetic_steps(header, context=context, law=SurvivalLaw(survival=0.05)))
    return simulate(prepare(cfg.system, header, steps)).latency_per_token_s


def test_h200_sparse_hbm_4k_step_is_within_15_percent_of_dense() -> None:
    """Issue 18's third target, in the simulator on the fitted constants: where there is little to skip (4K),
    the sparse machinery costs at most 15 % over the dense step (docs/gpu-kernels.md states the figure)."""
    dense = _step_s("h200-serving", 4096, "dense")
    sparse = _step_s("h200-sparse-hbm", 4096, "longsight")
    assert sparse / dense - 1 <= 0.15
    assert f"+{sparse / dense - 1:.1%}".replace("%", " %") in DOC.read_text()
    # and it pays off once there is something to skip
    assert _step_s("h200-sparse-hbm", 131072, "longsight") < 0.8 * _step_s("h200-serving", 131072, "dense")
