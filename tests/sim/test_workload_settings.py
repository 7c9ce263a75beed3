"""The workload's attention settings are what the simulator replays (issue 15, items 1 and 4).

The shipped traces (traces/smollm2-4k*.parquet: the bundled model under each policy, same prompt) replay on
the shipped systems re-pointed at the bundled model's geometry.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from cemsim.attention.thresholds import ThresholdFile
from cemsim.errors import CemsimError
from cemsim.sim.settings import QUEST_CAPTURE_PAGE, THRESHOLD_RULE_MAX_SHIFT
from cemsim.sim.simulate import prepare, simulate
from cemsim.sim.survival import threshold_survival
from cemsim.trace.format import TraceReader
from tests.sim.conftest import REPO, load, make_header, make_step

TRACES = REPO / "traces"
DREX = REPO / "hwconfigs" / "h100-drex.yaml"
SPARSE_HBM = REPO / "hwconfigs" / "h100-sparse-hbm.yaml"
HOST_SPARSE = REPO / "hwconfigs" / "h100-host-offload-sparse.yaml"
H100 = REPO / "hwconfigs" / "h100.yaml"
SMOL = {"workload.model": "smollm2-135m"}


@lru_cache(maxsize=8)
def shipped(policy: str):
    name = "smollm2-4k.parquet" if policy == "longsight" else f"smollm2-4k.{policy}.parquet"
    with TraceReader(TRACES / name) as r:
        return r.header, tuple(r.iter_steps(topk=False))


def run(hw: Path, policy: str, steps: int = 2, **overrides):
    header, records = shipped(policy)
    system = load(hw, **SMOL, **overrides)
    return prepare(system, header, records, max_steps=steps, where=f"{policy} trace")


def lpddr_bytes(prep) -> float:
    return simulate(prep).bytes_moved["cem.lpddr"]


# -- thresholds --------------------------------------------------------------------------------------


def thresholds_file(tmp_path: Path, shift: int) -> str:
    header, _ = shipped("longsight")
    th = np.asarray(header.thresholds) + shift
    path = tmp_path / f"th{shift:+d}.json"
    ThresholdFile("smollm2-135m", 64, th, itq=True, provenance={"test": shift}).save(path)
    return str(path)


def test_a_threshold_sweep_moves_survival_and_the_device_work(tmp_path):
    survivors, nbytes = [], []
    for shift in (-3, 0, 3):
        prep = run(
            DREX, "longsight", **{"workload.attention.thresholds_file": thresholds_file(tmp_path, shift)}
        )
        survivors.append(sum(int(w.survivors.sum()) for w in prep.works))
        nbytes.append(simulate(prep).bytes_moved["cem.lpddr"])
        if shift:
            assert "binomial concordance" in prep.attention.rules[0]
        else:  # the trace's own thresholds: nothing to rescale
            assert prep.attention.thresholds_from == "trace" and not prep.attention.rules
    assert survivors[0] > 2 * survivors[1] > 4 * survivors[2]  # higher thresholds pass fewer keys
    assert nbytes[0] > nbytes[1] > nbytes[2]


def test_one_threshold_for_every_head_far_from_the_trace_is_refused():
    with pytest.raises(CemsimError, match=r"threshold 60.*captured at \d+.*\+-4"):
        run(DREX, "longsight", **{"workload.attention.threshold": 60})


def test_a_threshold_on_a_trace_without_thresholds_is_refused_naming_both():
    system = load(DREX, **{"workload.attention.threshold": 40})
    header = make_header(system.geometry)  # a trace that records no thresholds
    with pytest.raises(CemsimError, match="threshold = 40, but the trace records no SCF thresholds"):
        prepare(system, header, [make_step(header, 8192)])


def test_the_binomial_rule_against_measured_survival_at_every_threshold():
    """Held-out data: survival of every head of the bundled model at every threshold (measured from its
    queries and keys, tests/sim/data). From each head's survival at its traced threshold, the rule predicts
    survival at shifted thresholds; the total stays within the bound settings.py states for the shifts it
    accepts."""
    table = json.loads((Path(__file__).parent / "data" / "smollm2-scf-survival-2k.json").read_text())
    surv = np.asarray(table["survivors"], dtype=np.float64)
    frac = surv / surv[:, :, :1]
    header, _ = shipped("longsight")
    t0 = np.asarray(header.thresholds)
    f0 = np.take_along_axis(frac, t0[..., None], 2)[..., 0]
    for shift in range(-THRESHOLD_RULE_MAX_SHIFT, THRESHOLD_RULE_MAX_SHIFT + 1):
        measured = np.take_along_axis(frac, (t0 + shift)[..., None], 2)[..., 0]
        predicted = threshold_survival(f0, t0, t0 + shift, 64, 3)
        assert predicted.sum() == pytest.approx(measured.sum(), rel=0.2), shift
    # and why shifts beyond are refused: the tail of a real head is heavier than one binomial's
    far = np.take_along_axis(frac, (t0 + 8)[..., None], 2)[..., 0]
    assert threshold_survival(f0, t0, t0 + 8, 64, 3).sum() < 0.2 * far.sum()


# -- k and the top-k rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context, k", [(16384, 256), (32768, 256), (65536, 512), (131072, 1024), (1 << 20, 1024)]
)
def test_k_follows_the_longsight_schedule_by_context(context, k):
    system = load(DREX)
    header = make_header(system.geometry, k=256, window=1024)
    prep = prepare(system, header, [make_step(header, context)])
    assert prep.header.k == k and prep.attention.k == k and prep.attention.trace_k == 256
    if k != 256:
        assert "k 256 (trace)" in prep.attention.rules[0]


def test_a_larger_k_fetches_more_values_and_returns_more_scores():
    system = load(DREX)
    header = make_header(system.geometry, k=256)
    rec = make_step(header, 131072, survival=0.05)
    prep = prepare(system, header, [rec])  # the schedule: k = 1024 at 128K
    assert prep.header.k == 1024
    np.testing.assert_array_equal(prep.works[0].values, np.minimum(rec.values_fetched * 4, rec.survivors))
    same_k = prepare(load(DREX, **{"workload.attention.k": 256}), header, [rec])
    np.testing.assert_array_equal(same_k.works[0].values, rec.values_fetched)
    a, b = simulate(prep), simulate(same_k)
    assert a.bytes_moved["link.to_host"] > b.bytes_moved["link.to_host"]


def test_an_explicit_k_schedule_and_the_drex_cap():
    system = load(DREX, **{"workload.attention.k": {"8K": 128, "64K": 512}})
    header = make_header(system.geometry, k=256)
    assert prepare(system, header, [make_step(header, 8192)]).header.k == 128
    assert prepare(system, header, [make_step(header, 40000)]).header.k == 512
    assert prepare(system, header, [make_step(header, 200000)]).header.k == 512  # past the last bound
    with pytest.raises(CemsimError, match=r"k at 8192 tokens is 2048, over the NMA's top-k unit"):
        prepare(load(DREX, **{"workload.attention.k": 2048}), header, [make_step(header, 8192)])


def test_topk_per_kv_group_fetches_k_values():
    system = load(DREX, **{"workload.attention.topk_scope": "kv_group", "workload.attention.k": 256})
    header = make_header(system.geometry, k=256)
    rec = make_step(header, 65536, survival=0.05)
    prep = prepare(system, header, [rec])
    np.testing.assert_array_equal(prep.works[0].values, np.minimum(256, rec.survivors))
    assert prep.sizes.scores_per_key == 1
    kv_trace = make_header(system.geometry, k=256)
    import dataclasses

    kv_trace = dataclasses.replace(kv_trace, topk_scope="kv_group")
    with pytest.raises(CemsimError, match="union of the group's per-query-head top-k"):
        prepare(load(DREX), kv_trace, [make_step(kv_trace, 8192)])


# -- policy semantics --------------------------------------------------------------------------------


def test_a_dense_trace_on_a_filtering_device_is_refused():
    with pytest.raises(CemsimError, match=r"policy is 'longsight' but the trace's is 'dense'"):
        run(DREX, "dense")


@pytest.mark.parametrize("policy", ["dense", "window", "oracle-topk", "quest"])
def test_another_policys_trace_on_longsight_is_refused(policy):
    with pytest.raises(CemsimError, match=f"the trace's is '{policy}'"):
        run(SPARSE_HBM, policy)


def test_any_trace_replays_on_dense_and_window_systems():
    dense = [simulate(run(H100, p)).latency_per_token_s for p in ("longsight", "dense", "quest")]
    assert dense[0] == pytest.approx(dense[1]) == pytest.approx(dense[2])  # only the context matters
    window = run(SPARSE_HBM, "dense", **{"workload.attention.policy": "window"})
    assert window.kind == "hbm_window"
    res = simulate(window)
    geo = load(H100, **SMOL).geometry
    kv_token = 2 * geo.layers * geo.kv_heads * geo.head_dim * 2
    per_step = (1024 + 16) * kv_token
    weights = geo.weight_params() * 2
    assert res.bytes_moved["gpu.hbm"] == pytest.approx(weights + per_step, rel=1e-6)


def test_quest_reads_its_page_metadata_and_the_selected_pages():
    prep = run(SPARSE_HBM, "quest", steps=1, **{"workload.attention.policy": "quest"})
    assert prep.kind == "hbm_sparse"
    w = prep.works[0]
    geo = prep.system.geometry
    key = geo.head_dim * 2
    meta = float(w.considered.sum()) * 2 * key / QUEST_CAPTURE_PAGE  # a min and a max vector per page
    selected = float((w.survivors + w.values).sum()) * key  # every key and value of the chosen pages
    window = (w.window + w.sinks) * geo.layers * geo.kv_heads * 2 * key
    weights = geo.weight_params() * 2
    assert meta > 0
    assert simulate(prep).bytes_moved["gpu.hbm"] == pytest.approx(
        weights + window + meta + selected, rel=1e-6
    )
    host = simulate(run(HOST_SPARSE, "quest", steps=1, **{"workload.attention.policy": "quest"}))
    written = geo.layers * geo.kv_heads * 2 * key  # the new token's K and V, written back
    assert host.bytes_moved["host_memory"] == pytest.approx(selected + written, rel=1e-6)  # pages over PCIe
    assert host.bytes_moved["gpu.hbm"] > weights + window + meta  # the page bounds are read in HBM


def test_quest_on_the_cem_device_and_a_foreign_page_size_are_refused():
    with pytest.raises(CemsimError, match="no unit that reads Quest's page bounds"):
        run(DREX, "quest", **{"workload.attention.policy": "quest"})
    with pytest.raises(CemsimError, match="page_size is 32 but Quest traces"):
        run(SPARSE_HBM, "quest", **{"workload.attention.policy": "quest", "workload.attention.page_size": 32})


def test_oracle_topk_is_an_upper_bound_with_no_selection_cost():
    prep = run(SPARSE_HBM, "oracle-topk", steps=1, **{"workload.attention.policy": "oracle-topk"})
    res = simulate(prep)
    assert res.attention["upper_bound"] is True and res.attention["policy"] == "oracle-topk"
    w, geo = prep.works[0], prep.system.geometry
    key = geo.head_dim * 2
    window = (w.window + w.sinks) * geo.layers * geo.kv_heads * 2 * key
    selected = float((w.survivors + w.values).sum()) * key  # the exact top-k's keys and values, nothing else
    assert res.bytes_moved["gpu.hbm"] == pytest.approx(geo.weight_params() * 2 + window + selected, rel=1e-6)
    drex_prep = run(DREX, "oracle-topk", steps=1, **{"workload.attention.policy": "oracle-topk"})
    drex = simulate(drex_prep)
    assert drex.fits and drex.attention["upper_bound"] is True
    # DReX serves the oracle's choice as its survivors: it fetches exactly those keys and values
    dw = drex_prep.works[0]
    assert drex.bytes_moved["cem.lpddr"] == pytest.approx(float((dw.survivors + dw.values).sum()) * key)


def test_window_and_sinks_must_match_the_trace_for_sparse_policies():
    with pytest.raises(CemsimError, match="window is 2048 but the trace was captured with window 1024"):
        run(DREX, "longsight", **{"workload.attention.window": 2048})


def test_the_result_records_what_was_replayed():
    a = simulate(run(DREX, "longsight")).to_json_dict()["attention"]
    assert a["policy"] == a["trace_policy"] == "longsight" and a["k"] == 256
    assert a["thresholds_from"] == "trace" and a["survival_source"].startswith("captured at 4097")


def test_a_filter_ratio_scenario_does_not_apply_to_dense_or_window_and_says_so():
    prep = run(H100, "longsight", **{"workload.attention.filter_ratio": 20})
    assert prep.attention.filter_ratio is None
    assert "filter ratio 20 not applicable: the dense policy filters nothing" in prep.attention.rules
    with pytest.raises(CemsimError, match="selects about k keys"):
        run(
            SPARSE_HBM,
            "quest",
            **{"workload.attention.policy": "quest", "workload.attention.filter_ratio": 20},
        )


def test_a_trace_that_records_survival_at_every_threshold_moves_by_measurement():
    """With the measured table in the trace (here the bundled model's, tests/sim/data), any shift is allowed
    and the total survival follows the table exactly (up to rounding)."""
    import dataclasses

    from cemsim.sim.settings import SCF_SURVIVAL_KEY

    table = json.loads((Path(__file__).parent / "data" / "smollm2-scf-survival-2k.json").read_text())[
        "survivors"
    ]
    header, records = shipped("longsight")
    measured = dataclasses.replace(header, extra={**header.extra, SCF_SURVIVAL_KEY: table})
    system = load(DREX, **SMOL, **{"workload.attention.threshold": 40})  # 13 above some traced heads
    prep = prepare(system, measured, records, max_steps=1)
    assert "measured survivors" in prep.attention.rules[0]
    t = np.asarray(table, dtype=np.float64)
    t0 = np.asarray(header.thresholds)
    ratio = t[:, :, 40] / np.take_along_axis(t, t0[..., None], 2)[..., 0]
    rec = records[0]
    want = np.minimum(rec.survivors * ratio, rec.keys_considered)
    np.testing.assert_allclose(prep.works[0].survivors, want, atol=0.51)
    with pytest.raises(CemsimError, match="binomial concordance rule"):
        prepare(system, header, records, max_steps=1)  # the same without the table: refused


def test_dense_attention_with_the_kv_on_the_cem_device_streams_it_over_the_link():
    """Dense reads from wherever the KV lives: on DReX that is every key and value over CXL, nothing
    filtered. By hand: per layer and user, context x KV heads x 2 x head_dim x 2 B at the link's rate."""
    system = load(DREX, **{"workload.attention.policy": "dense"})
    header = make_header(system.geometry)
    prep = prepare(system, header, [make_step(header, 65536)])
    assert prep.kind == "cem_dense"
    res = simulate(prep)
    geo, link = system.geometry, system.link
    per_layer = 65536 * geo.kv_heads * 2 * geo.head_dim * 2
    assert res.bytes_moved["cem.lpddr"] == pytest.approx(geo.layers * per_layer)
    assert res.bytes_moved["link.to_host"] == pytest.approx(geo.layers * per_layer)
    stream = per_layer / (link.bandwidth_per_direction * link.protocol_efficiency)
    assert geo.layers * stream < res.latency_per_token_s < geo.layers * stream * 1.2
    assert "cem.pfu" not in res.energy_breakdown_j or res.energy_breakdown_j["cem.pfu"] == 0
