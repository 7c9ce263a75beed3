"""Validation against held-out H100 measurements (docs/validation.md reports these; the DReX phases on the
DRAM engine against hand bounds are in test_drex_validation.py)."""

from __future__ import annotations

import simpy

from cemsim.calibration import H100, load_calibration
from cemsim.sim.gpu import GPU
from cemsim.sim.stats import Recorder
from tests.sim.conftest import load


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
