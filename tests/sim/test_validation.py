"""Validation against hand calculations and bandwidth ceilings (docs/validation.md reports these)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from cemsim.sim.cem import DReX, drex_shape
from cemsim.sim.hbm import HBM
from cemsim.sim.stats import Recorder
from cemsim.sim.work import StepWork
from tests.sim.conftest import load

SLICE_KEYS = 131_072  # 8 channels x 128 banks x 128 keys


def one_slice(survivors: int, rows: float, values: int, value_rows: float) -> StepWork:
    a = lambda v: np.array([[v]], dtype=np.int64)  # noqa: E731
    return StepWork(
        step=0,
        context=SLICE_KEYS + 1040,
        window=1024,
        sinks=16,
        considered=a(SLICE_KEYS),
        survivors=a(survivors),
        values=a(values),
        epoch_survivors=np.array([[[survivors]]]),
        epoch_rows=np.array([[[rows]]]),
        epoch_blocks=np.array([[[SLICE_KEYS // 128]]]),
        value_rows=np.array([[float(value_rows)]]),
    )


def serve_time(w: StepWork) -> tuple[float, Recorder]:
    cfg = load("hwconfigs/h100-drex.yaml").cem
    env, rec = simpy.Environment(), Recorder()
    drex = DReX(env, cfg, drex_shape(cfg, head_dim=128, group=4, dtype_bytes=2), rec, kv_heads=8)
    env.process(drex.serve(0, 0, 0, w))
    env.run()
    return env.now, rec


def test_full_slice_phase_times_match_the_hand_calculation():
    # Llama-3-8B: D = 128, 4 query heads per KV head (one PFU pass), bf16 keys of 256 B.
    # filter epoch: 128 x 1.25 ns + 120.4 ns + 1,024 ns = 1,304.4 ns
    # scoring 2,048 survivors, one per 64-key row: tCL + max(2,048 x 256 B / 136 GB/s, 2,048 x (18 + 18) ns)
    #   = 10.6 ns + max(3,855.1 ns, 73,728 ns) = 73,738.6 ns (MACs: 2,048 x 128 x 4 / 1.088e12 = 963.8 ns, hidden)
    # values: 1,024 in 1,024 rows: 10.6 ns + 1,024 x 36 ns = 36,874.6 ns
    hand = 1304.4e-9 + 73738.6e-9 + 36874.6e-9
    t, rec = serve_time(one_slice(2048, 2048, 1024, 1024))
    assert t == pytest.approx(hand, rel=1e-9)
    assert rec.busy["nma0"] == pytest.approx(hand, rel=1e-9)


def test_lpddr_streaming_reaches_the_package_bandwidth():
    cfg = load("hwconfigs/h100-drex.yaml").cem
    t, _ = serve_time(one_slice(SLICE_KEYS, SLICE_KEYS / 64, 0, 0))
    filt = 1304.4e-9
    achieved = SLICE_KEYS * 256 / (t - filt)
    assert achieved >= 0.9 * cfg.channels_per_package * cfg.channel_bandwidth


@pytest.mark.parametrize("nbytes, at_least", [(1 << 30, 0.9), (64 << 20, 0.9)])
def test_hbm_streaming_reaches_the_sustained_bandwidth(nbytes, at_least):
    gpu = load("hwconfigs/h100.yaml").gpu
    env, rec = simpy.Environment(), Recorder()
    hbm = HBM(env, gpu.hbm, rec, "gpu0.hbm")
    env.process(hbm.read(nbytes))
    env.run()
    sustained = gpu.hbm.peak_bandwidth * gpu.hbm.sustained_efficiency
    assert nbytes / env.now >= at_least * sustained
    assert rec.bytes["gpu.hbm"] == nbytes


def test_hbm_small_reads_are_latency_bound():
    # the ceiling check above can fail: a 4 KiB read is dominated by the access latency
    gpu = load("hwconfigs/h100.yaml").gpu
    env, rec = simpy.Environment(), Recorder()
    hbm = HBM(env, gpu.hbm, rec, "gpu0.hbm")
    env.process(hbm.read(4096))
    env.run()
    assert 4096 / env.now < 0.1 * gpu.hbm.peak_bandwidth * gpu.hbm.sustained_efficiency
