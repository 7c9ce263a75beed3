"""gpu.step_overhead: a fixed host cost once per decode step, on every lane, in both models.

Golden case worked by hand: the tiny model (2 layers, hidden 256, 4 query / 2 KV heads of 64, MLP 512, vocab
1000, bf16), one user, one step, dense attention over 4,096 tokens in HBM, on the H200 preset with the HBM at
0.5 of its 4.8 TB/s (2.4 TB/s) and 500 ns latency, a 10 us layer overhead. Every kernel is memory-bound
(the largest, the MLP's 0.92 MFLOP at 597 TFLOP/s, takes 1.5 ns against its 0.88 us of bytes), so each costs
500 ns + bytes / 2.4 TB/s:
  QKV projection   256 x (4 + 2 x 2) x 64 = 131,072 weights      -> 262,144 B
  attention        4,096 tokens x 2 KV heads x (K + V) x 128 B   -> 2,097,152 B
  out proj + MLP   4x64x256 + 3x256x512 + 2x256 = 459,264 weights -> 918,528 B
  LM head          1000 x 256 + 256 = 256,256 weights             -> 512,512 B (once per step)
step = 2 x (3 x 500 ns + 3,277,824 B / 2.4 TB/s + 10 us) + 500 ns + 512,512 B / 2.4 TB/s + step_overhead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cemsim.sim.analytic import analytic
from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import REPO, load, make_header, make_step

TINY = Path(__file__).parent / "data" / "tiny" / "config.json"
CONTEXT = 4096
STEP_OVERHEAD = 1e-3
BW = 4.8e12 * 0.5
HAND_NO_STEP = 2 * (3 * 500e-9 + (262_144 + 2_097_152 + 918_528) / BW + 10e-6) + 500e-9 + 512_512 / BW


def run(hwconfig: str, step_overhead: float, batch: int = 1, **overrides: object):
    system = load(
        REPO / "hwconfigs" / f"{hwconfig}.yaml",
        **{
            "workload.model": str(TINY),
            "workload.attention.policy": "dense",
            "gpu.layer_overhead": "10 us",
            "gpu.step_overhead": f"{step_overhead!r} s",
            **overrides,
        },
    )
    header = make_header(system.geometry, policy="dense")
    prep = prepare(system, header, [make_step(header, CONTEXT)], batch=batch)
    return simulate(prep), analytic(prep)


@pytest.mark.parametrize("step_overhead", [0.0, STEP_OVERHEAD])
def test_golden_one_user_one_step_by_hand(step_overhead: float) -> None:
    des, est = run("h200-hf-eager", step_overhead, **{"gpu.hbm.sustained_efficiency": 0.5})
    want = HAND_NO_STEP + step_overhead
    for res in (des, est):
        assert res.latency_per_token_s == pytest.approx(want, rel=1e-12)
        assert res.time_breakdown_s.get("step_overhead", 0.0) == pytest.approx(step_overhead, rel=1e-12)
        assert sum(res.time_breakdown_s.values()) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("hwconfig, batch", [("h200-hf-eager", 1), ("h100x2-dp", 2), ("h100x2", 1)])
def test_step_overhead_adds_exactly_itself_per_step(hwconfig: str, batch: int) -> None:
    """Single GPU, two data-parallel lanes (each pays it, in parallel), tensor parallel: + X per step, and the
    GPUs' static power over those X seconds."""
    (des0, est0), (des1, est1) = run(hwconfig, 0.0, batch), run(hwconfig, STEP_OVERHEAD, batch)
    for base, more in ((des0, des1), (est0, est1)):
        assert more.latency_per_token_s - base.latency_per_token_s == pytest.approx(STEP_OVERHEAD, rel=1e-9)
        static = more.energy_breakdown_j["gpu.static"] - base.energy_breakdown_j["gpu.static"]
        gpu = load(REPO / "hwconfigs" / f"{hwconfig}.yaml").gpu
        assert static == pytest.approx(gpu.idle_power * gpu.count * STEP_OVERHEAD / batch, rel=1e-9)
        assert "step_overhead" not in base.time_breakdown_s
