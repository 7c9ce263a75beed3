"""Validation against hand calculations from datasheet numbers and held-out H100 measurements
(docs/validation.md reports these)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from cemsim.calibration import H100, load_calibration
from cemsim.sim.cem import DReX, drex_shape
from cemsim.sim.gpu import GPU
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


def test_lpddr_streaming_lies_between_datasheet_bounds():
    # Every key of one slice (131,072 x 256 B = 32 MiB) fetched by one NMA, hand-bounded from datasheet
    # numbers alone (JESD209-5C LPDDR5X-8533: a x16 channel moves 8,533 MT/s x 2 B = 17.07 GB/s; 8 channels
    # per package; tRP = tRCD = 18 ns, tCL = 10.6 ns; 2 KiB rows per channel, keys interleaved over the 8,
    # so 64 keys per opened row and 2,048 rows):
    #   lower: the pins cannot move data faster: 33,554,432 B / (8 x 17.07 GB/s) = 245.8 us
    #   upper: every row's precharge + activate + CAS exposed, serial with the data: + 2,048 x 46.6 ns = 95.4 us
    # plus the one filter epoch before the fetch (1,304.4 ns, test above).
    nbytes, rows = SLICE_KEYS * 256, SLICE_KEYS / 64
    lower = nbytes / (8 * 8533e6 * 2) + 1304.4e-9
    upper = lower + rows * (18e-9 + 18e-9 + 10.6e-9)
    t, _ = serve_time(one_slice(SLICE_KEYS, rows, 0, 0))
    assert lower <= t <= upper, (lower, t, upper)


def _attention_kernel_time(gpu_cfg, kv_bytes: float, flops: float) -> float:
    """One dense decode-attention kernel on the simulated GPU (GPU.op: HBM port, roofline), alone."""
    env, rec = simpy.Environment(), Recorder()
    gpu = GPU(env, gpu_cfg, "bf16", rec, 0)
    env.process(gpu.op("attention", kv_bytes, flops))
    env.run()
    assert rec.bytes["gpu.hbm"] == kv_bytes
    return env.now


def hbm_measurement_failures() -> list[str]:
    """The simulated attention kernel against every held-out H100 measurement (see the test below)."""
    cal = load_calibration(H100)
    gpu_cfg = load("hwconfigs/h100.yaml").gpu
    geo = cal["geometry"]
    out, checked = [], 0
    for m in cal["decode_attention_per_layer"]:
        flops = 4.0 * geo["q_heads"] * geo["head_dim"] * m["context"] * m["batch"]
        simulated = _attention_kernel_time(gpu_cfg, m["kv_bytes"], flops)
        measured = m["median_ms"] / 1e3
        where = f"{m['kv_bytes'] / 2**20:,.0f} MiB (context {m['context']}, batch {m['batch']})"
        if m["kv_bytes"] >= 2 << 30:
            checked += 1
            if abs(simulated / measured - 1) > 0.05:
                out.append(f"{where}: simulated {simulated * 1e3:.3f} ms, measured {measured * 1e3:.3f} ms")
        elif m["kv_bytes"] < 256 << 20 and simulated >= measured:
            out.append(
                f"{where}: simulated {simulated * 1e3:.3f} ms not below measured {measured * 1e3:.3f} ms"
            )
    assert checked >= 4
    return out


def test_hbm_bound_attention_matches_held_out_h100_measurements():
    """The H100 preset's HBM efficiency (0.90) comes from a device-to-device copy (hbm_copy in the
    calibration file). Dense decode attention over a KV cache (decode_attention_per_layer, same campaign) is
    held out from that fit: reads of 2 GiB and more stream at 2.9-3.1 TB/s, where launch costs no longer
    matter, so the simulated kernel must land within 5% of the measured time (it does within -3.6%..+2.4%).
    Below 256 MiB the measured kernel pays ~45 us of launch and setup that the model charges once per layer
    (gpu.layer_overhead), not per kernel: there the simulated kernel must be faster than the measured one."""
    assert hbm_measurement_failures() == []
