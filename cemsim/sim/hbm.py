"""GPU HBM: a streaming memory at a sustained fraction of peak bandwidth, plus a first-access latency.

Contract: ``read_time(nbytes)`` is the whole cost model (the analytic twin calls it too); ``read`` holds
the HBM for that long. Implementations may change the cost model, not the signature.
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

from cemsim.config.components import HBMConfig
from cemsim.sim.stats import Recorder


def hbm_read_time(cfg: HBMConfig, nbytes: float) -> float:
    if nbytes <= 0:
        return 0.0
    return cfg.latency + nbytes / (cfg.peak_bandwidth * cfg.sustained_efficiency)


class HBM:
    def __init__(self, env: simpy.Environment, cfg: HBMConfig, rec: Recorder, name: str) -> None:
        self.env, self.cfg, self.rec, self.name = env, cfg, rec, name
        self.port = simpy.Resource(env, capacity=1)

    def read_time(self, nbytes: float) -> float:
        return hbm_read_time(self.cfg, nbytes)

    def account(self, nbytes: float, seconds: float) -> None:
        self.rec.add_bytes("gpu.hbm", nbytes)
        self.rec.add_busy(self.name, seconds)

    def read(self, nbytes: float) -> Generator[simpy.Event, None, None]:
        """A streaming read on its own (validation, host-side copies); GPU kernels use GPU.op."""
        with self.port.request() as req:
            yield req
            start = self.env.now
            dt = self.read_time(nbytes)
            yield self.env.timeout(dt)
            self.account(nbytes, dt)
            self.rec.span(start, self.env.now, self.name, "read", bytes=nbytes)
