"""What the discrete-event model shows beyond the analytic estimate (which serves each user as if alone): queueing
at NMAs, the request queue, response buffers, overlap, multi-user batches."""

from __future__ import annotations

import pytest

from cemsim.sim.analytic import analytic
from cemsim.sim.replay import Replayer
from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import REPO, load, make_header, make_step

DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def _prep(batch: int, **overrides):
    system = load(DREX, **{"workload.attention.k": 1024, **overrides})  # the trace's k: no rescaling
    header = make_header(system.geometry)
    return prepare(system, header, [make_step(header, 16384, step=i) for i in range(2)], batch=batch)


def test_users_queue_at_the_nmas():
    one, eight = simulate(_prep(1)), simulate(_prep(8))
    # 8 users x 8 KV heads on 8 NMAs: each NMA serves 8 requests in turn
    assert eight.user_latency_s["p99"] > 4 * one.user_latency_s["p99"]
    assert eight.user_latency_s["p50"] < eight.user_latency_s["max"]
    assert eight.throughput_tokens_per_s > one.throughput_tokens_per_s


def test_a_shallow_request_queue_serializes_what_the_estimate_does_not_see():
    deep = _prep(8)
    shallow = _prep(8, **{"cem.request_queue_depth": 1})
    des_shallow, estimate = simulate(shallow), analytic(shallow)
    assert des_shallow.latency_per_token_s > 1.2 * simulate(deep).latency_per_token_s
    assert des_shallow.latency_per_token_s > 1.2 * estimate.latency_per_token_s
    # one request at a time: the analytic upper bound takes them fully one after another, and holds
    bounds = estimate.latency_bounds_s
    assert bounds["lower"] <= des_shallow.latency_per_token_s <= bounds["upper"]


def test_response_buffers_hold_the_nma_until_the_link_drains():
    few, many = simulate(_prep(8, **{"cem.response_buffers": 1})), simulate(_prep(8))
    # one buffer: an NMA that finished must wait until the previous response has left over the link
    # (modest here: the responses already queue on the link, which is the bottleneck at batch 8)
    assert few.latency_per_token_s > 1.02 * many.latency_per_token_s
    assert few.events > many.events


def test_window_attention_overlaps_the_offload():
    res = simulate(_prep(1))
    t = res.time_breakdown_s
    # the GPU's window attention runs while DReX works: the wait is what the offload adds beyond it
    assert t["attention_gpu"] > 0 and t["attention_wait"] > 0
    serial = sum(t.values()) + t["attention_gpu"]
    assert res.latency_per_token_s < serial


def test_kv_write_back_is_counted_amortized_and_off_the_critical_path():
    prep = _prep(1)
    res = simulate(prep)
    sz = prep.sizes
    per_token = sz.layers * sz.kv_token_bytes
    assert res.bytes_moved["cem.lpddr_write"] == pytest.approx(per_token)
    # user 0 writes its group at step 0 (one transfer per layer): a background transfer that delays nothing
    # at batch 1: the same run without any write-back takes exactly as long
    assert any(s.name == "kv_write" for s in simulate(prep, timeline=True).spans)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Replayer, "_write_back", lambda self, users, step, layer: None)
        silent = simulate(prep)
    assert res.latency_per_token_s == pytest.approx(silent.latency_per_token_s, rel=1e-12)


def test_tensor_parallel_adds_all_reduce_and_halves_projection():
    one = load(REPO / "hwconfigs" / "h100.yaml")
    two = load(REPO / "hwconfigs" / "h100x2.yaml")
    header = make_header(one.geometry)
    steps = [make_step(header, 16384)]
    r1, r2 = simulate(prepare(one, header, steps)), simulate(prepare(two, header, steps))
    assert r2.time_breakdown_s["all_reduce"] > 0 and "all_reduce" not in r1.time_breakdown_s
    assert r2.time_breakdown_s["projection"] == pytest.approx(r1.time_breakdown_s["projection"] / 2, rel=0.01)
    # the pair reads the same weights and KV as one GPU, half each: counters count both GPUs
    assert r2.bytes_moved["gpu.hbm"] == pytest.approx(r1.bytes_moved["gpu.hbm"], rel=1e-9)


def test_data_parallel_lanes_share_the_device():
    prep = _prep(8, **{"gpu.count": 2, "gpu.parallelism": "data"})
    res = simulate(prep)
    assert res.fits and res.truncated is None
    # two GPUs, four users each: projection FLOPs split, one CEM device and link shared
    assert res.throughput_tokens_per_s > simulate(_prep(8)).throughput_tokens_per_s


def test_a_request_with_no_survivor_still_returns_a_completion():
    # 16K tokens, nothing survives: the GPU only learns so from DReX's reply. By hand (Llama-3-8B, CXL):
    # 8 descriptors of 4 x 256 B at 63 GB/s x 0.9 (18.06 ns each) back to back, the last one's flight
    # (250 ns), the one filter epoch (as the DES times it on its NMA), a bare completion's flight (250 ns)
    system = load(DREX)
    header = make_header(system.geometry)
    res = simulate(prepare(system, header, [make_step(header, 16384, survival=0.0)], batch=1), timeline=True)
    epochs = [s.end - s.start for s in res.spans if s.name == "filter_epoch"]
    assert epochs and not any(s.name in ("score", "value_fetch") for s in res.spans)
    hand = 8 * 1024 / (63e9 * 0.9) + 250e-9 + max(epochs) + 250e-9
    assert res.user_latency_s["max"] == pytest.approx(hand, rel=1e-9)
