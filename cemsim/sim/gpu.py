"""The GPU as a roofline: each kernel takes max(HBM read time, FLOPs / sustained FLOP/s).

Sustained FLOP/s = peak (for the workload dtype) x gpu.matmul_efficiency; HBM time from hbm.py
(gpu.hbm.sustained_efficiency). A decode step's layer adds gpu.layer_overhead (launches, syncs); the step
adds gpu.step_overhead once (host work independent of the layers).
One GPU object is one *lane*: a single GPU, or a tensor-parallel group of ``width`` GPUs whose work the
caller already divides (a kernel's bytes and FLOPs are per GPU; the counters count every GPU of the group).
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

from cemsim.config.components import GPUConfig
from cemsim.config.workload import ModelGeometry
from cemsim.sim.hbm import HBM, hbm_read_time
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder


def sustained_flops(cfg: GPUConfig, dtype: str) -> float:
    peak = cfg.peak_flops.get(dtype, max(cfg.peak_flops.values()))  # type: ignore[call-overload]
    return peak * cfg.matmul_efficiency


def gpu_op_time(cfg: GPUConfig, dtype: str, nbytes: float, flops: float) -> float:
    if nbytes <= 0 and flops <= 0:
        return 0.0
    return max(hbm_read_time(cfg.hbm, nbytes), flops / sustained_flops(cfg, dtype))


def projection_work(
    geo: ModelGeometry, dtype_bytes: int, users: int, tp: int
) -> dict[str, tuple[float, float]]:
    """(HBM bytes, FLOPs) of the non-attention kernels of one layer ("pre": QKV projection; "post": output
    projection, MLP and norms) and of the final norm + LM head ("head"); weights stream once per step,
    FLOPs scale with the users in the batch; tensor parallel splits both over tp GPUs."""
    qkv = geo.hidden * (geo.q_heads + 2 * geo.kv_heads) * geo.head_dim
    post = geo.q_heads * geo.head_dim * geo.hidden + 3 * geo.hidden * geo.intermediate + 2 * geo.hidden
    head = geo.vocab * geo.hidden + geo.hidden
    return {
        name: (params * dtype_bytes / tp, 2.0 * params * users / tp)
        for name, params in (("pre", qkv), ("post", post), ("head", head))
    }


@register_sim("gpu", "roofline")
class GPU:
    def __init__(
        self, env: simpy.Environment, cfg: GPUConfig, dtype: str, rec: Recorder, index: int, width: int = 1
    ) -> None:
        self.env, self.cfg, self.dtype, self.rec, self.width = env, cfg, dtype, rec, width
        self.track = f"gpu{index}"
        self.sm = simpy.Resource(env, capacity=1)  # kernels of one lane run one after another
        self.hbm = HBM(env, cfg.hbm, rec, f"{self.track}.hbm")

    def op_time(self, nbytes: float, flops: float) -> float:
        return gpu_op_time(self.cfg, self.dtype, nbytes, flops)

    def op(
        self, name: str, nbytes: float, flops: float, fixed: float = 0.0
    ) -> Generator[simpy.Event, None, None]:
        dt = self.op_time(nbytes, flops) + fixed
        if dt <= 0:
            return
        with self.sm.request() as sm, self.hbm.port.request() as port:
            yield sm & port
            start = self.env.now
            yield self.env.timeout(dt)
        self.hbm.account(nbytes * self.width, hbm_read_time(self.cfg.hbm, nbytes))
        self.rec.add_ops("gpu.flops", flops * self.width)
        self.rec.add_busy(self.track, dt)
        self.rec.span(start, self.env.now, self.track, name, bytes=nbytes, flops=flops)

    def overhead(self) -> Generator[simpy.Event, None, None]:
        start = self.env.now
        yield self.env.timeout(self.cfg.layer_overhead)
        self.rec.span(start, self.env.now, self.track, "layer_overhead")

    def step_overhead(self) -> Generator[simpy.Event, None, None]:
        if self.cfg.step_overhead <= 0:  # no event at all: a zero default leaves every run as it was
            return
        start = self.env.now
        yield self.env.timeout(self.cfg.step_overhead)
        self.rec.span(start, self.env.now, self.track, "step_overhead")
