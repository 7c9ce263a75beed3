"""``workload.batch: max``: the most users a system holds, found in the capacity model, checked against
users counted by hand from the model's shapes and the memories' sizes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sweep_helpers import REPO, write_spec

from cemsim.config.loader import load_system
from cemsim.errors import CemsimError
from cemsim.sim.capacity import check_fit
from cemsim.sim.simulate import prepare
from cemsim.sweep.evaluate import simulate_point
from cemsim.sweep.expand import expand
from cemsim.sweep.fit_batch import most_users
from cemsim.sweep.spec import load_spec
from cemsim.trace.synthetic import synthetic_header, synthetic_steps

GB = 1e9
# Llama-3-8B (config.json): 32 layers, 8 KV heads, head dim 128, bf16; 8,030,261,248 parameters
# (the published count of Meta-Llama-3-8B with its untied LM head).
LLAMA8B_WEIGHT_BYTES = 8_030_261_248 * 2
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, every layer and KV head, bf16 = 131,072
SIGN_BYTES_PER_TOKEN = 32 * 8 * 128 // 8  # one bit per dimension beside every key in DReX = 4,096
WINDOW = 1024 + 16


def _prep(hwconfig: str, context: int, **overrides: object):
    system = load_system(REPO / "hwconfigs" / hwconfig, {"workload.context": context, **overrides}).system
    header = synthetic_header("llama3-8b", k=1024, window=1024, sinks=16)
    steps = list(synthetic_steps(header, context=context, steps=1))
    return prepare(system, header, steps, context=context, batch=1)


def test_weights_by_hand_match_the_geometry() -> None:
    geo = load_system(REPO / "hwconfigs" / "h100.yaml").system.geometry
    assert geo.weight_params() == 8_030_261_248


@pytest.mark.parametrize("context", [32768, 131072, 262144])
def test_one_h100_holds_what_80_gb_leave_after_the_weights(context: int) -> None:
    batch, fit, limit = most_users(_prep("h100.yaml", context))
    by_hand = int((80 * GB - LLAMA8B_WEIGHT_BYTES) // (context * KV_BYTES_PER_TOKEN))
    assert batch == by_hand and fit.fits and limit == "gpu.hbm"


def test_two_h100s_data_parallel_hold_twice_one() -> None:
    one, _, _ = most_users(_prep("h100.yaml", 131072))
    two, fit, limit = most_users(_prep("h100x2-dp.yaml", 131072))
    assert (one, two) == (3, 6) and fit.fits and limit == "gpu.hbm"


@pytest.mark.parametrize("context", [131072, 1 << 20])
def test_drex_holds_what_its_512_gb_hold(context: int) -> None:
    batch, fit, limit = most_users(_prep("h100-drex.yaml", context))
    by_hand = int(512 * GB // (context * (KV_BYTES_PER_TOKEN + SIGN_BYTES_PER_TOKEN)))
    assert batch == by_hand and fit.fits and limit == "cem"
    # the GPU keeps only the window and sinks of each user: far from full
    assert fit.memory["gpu.hbm"]["need"] < LLAMA8B_WEIGHT_BYTES + batch * WINDOW * KV_BYTES_PER_TOKEN + 1


def test_the_answer_is_the_edge_of_the_capacity_model() -> None:
    prep = _prep("h100-drex.yaml", 65536)
    batch, _, _ = most_users(prep)
    work = prep.works[0]

    def fits(b: int) -> bool:
        return check_fit(prep.system, prep.kind, prep.sizes, prep.context, b, work.window, work.sinks).fits

    assert fits(batch) and not fits(batch + 1)


def test_no_user_fits_keeps_batch_one_and_says_why() -> None:
    batch, fit, limit = most_users(_prep("h100.yaml", 1 << 20))
    assert batch == 1 and not fit.fits and limit is None and "GPU HBM" in fit.why_not[0]


def test_spec_max_resolves_per_point_and_hashes_apart(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        f"""\
systems: [{REPO}/hwconfigs/h100.yaml]
trace: {REPO}/traces/smollm2-4k.parquet
axes:
  workload.batch: [1, max, MAX]
""",
    )
    points = expand(load_spec(spec))
    one, fit, fit_upper = points
    assert not one.fit_batch and fit.fit_batch and fit_upper.fit_batch
    assert (
        fit.point_id != one.point_id and fit.point_id == fit_upper.point_id
    )  # "max" in any case is one point
    assert fit.resolved["workload.batch"] == "max" and one.resolved["workload.batch"] == 1
    assert fit.system.workload.batch == 1  # the config keeps the base's batch; the evaluator searches
    assert fit.task({"steps": 1}).options == {"steps": 1, "batch": "max"}
    assert one.task({"steps": 1}).options == {"steps": 1}


def test_evaluator_reports_the_batch_and_what_limits_it(tmp_path: Path) -> None:
    from cemsim.trace.format import TraceWriter

    header = synthetic_header("llama3-8b", k=1024, window=1024, sinks=16)
    trace = tmp_path / "t.parquet"
    with TraceWriter(trace, header) as w:
        for rec in synthetic_steps(header, context=131072, steps=1):
            w.write(rec)
    spec = write_spec(
        tmp_path / "s.yaml",
        f"""\
systems: [{REPO}/hwconfigs/h100.yaml]
trace: {trace}
options: {{steps: 1}}
overrides: {{workload.batch: max, workload.context: 128K}}
""",
    )
    (pt,) = expand(load_spec(spec))
    out = simulate_point(pt.task({"steps": 1}))
    assert out["batch"] == 3 and out["fits"] and out["batch_rule"] == "max"
    assert out["batch_limited_by"] == "gpu.hbm"
    with pytest.raises(CemsimError, match=r"options\.batch may only be 'max'"):
        simulate_point(dataclasses.replace(pt.task(), options={"steps": 1, "batch": "most"}))


def test_sweep_summary_lists_fit_batch_points_with_their_batch() -> None:
    import pandas as pd

    from cemsim.sweep.summary import summary_tables

    frame = pd.DataFrame(
        {
            "status": ["ok", "ok"],
            "system": ["h100", "h100-drex"],
            "param.workload.context": [131072, 131072],
            "context_tokens": [131072, 131072],
            "batch": [3, 28],
            "batch_rule": ["max", "max"],
            "latency_per_token_s": [0.0234, 0.0575],
            "throughput_tokens_per_s": [128.2, 486.8],
        }
    )
    (table,) = summary_tables(frame)  # not the per-batch pivot, which would show one batch only
    headers = [c.header for c in table.columns]
    assert "batch" in headers and table.row_count == 2
    assert [c._cells for c in table.columns if c.header == "batch"] == [["3", "28"]]
