"""GPU HBM: a streaming memory at a sustained fraction of peak bandwidth, plus a first-access latency.

``hbm_read_time(cfg, nbytes)`` is the whole cost model; GPU kernels (gpu.py) take the max of it and their
compute time and hold the HBM port while they run. Implementations may change the cost model, not the
signature.
"""

from __future__ import annotations

import simpy

from cemsim.config.components import HBMConfig
from cemsim.sim.stats import Recorder


def hbm_read_time(cfg: HBMConfig, nbytes: float) -> float:
    if nbytes <= 0:
        return 0.0
    return cfg.latency + nbytes / (cfg.peak_bandwidth * cfg.sustained_efficiency)


class HBM:
    """One GPU's HBM: the port its kernels hold, and its byte and busy counters."""

    def __init__(self, env: simpy.Environment, cfg: HBMConfig, rec: Recorder, name: str) -> None:
        self.env, self.cfg, self.rec, self.name = env, cfg, rec, name
        self.port = simpy.Resource(env, capacity=1)

    def account(self, nbytes: float, seconds: float) -> None:
        self.rec.add_bytes("gpu.hbm", nbytes)
        self.rec.add_busy(self.name, seconds)
