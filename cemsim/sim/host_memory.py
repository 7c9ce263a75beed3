"""Host DDR5 feeding the GPU over PCIe: KV streamed (dense) or gathered (sparse) each decode step.

A stream holds the host memory and the link's to-GPU direction together for nbytes / min(sustained host
bandwidth, effective link bandwidth), then pays both latencies once (DMA pipelines the rest).
"""

from __future__ import annotations

from collections.abc import Generator

import simpy

from cemsim.config.components import HostMemoryConfig
from cemsim.sim.link import Link, link_occupancy
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder


def host_bandwidth(cfg: HostMemoryConfig) -> float:
    return cfg.channels * cfg.channel_bandwidth * cfg.sustained_efficiency


@register_sim("host_memory", "ddr5")
class HostMemory:
    def __init__(self, env: simpy.Environment, cfg: HostMemoryConfig, rec: Recorder) -> None:
        self.env, self.cfg, self.rec = env, cfg, rec
        self.port = simpy.Resource(env, capacity=1)

    def stream(self, link: Link, nbytes: float, label: str, track: str) -> Generator[simpy.Event, None, None]:
        """Host memory -> link -> GPU, both held for the slower of the two."""
        if nbytes <= 0:
            return
        mem_req = self.port.request()
        link_req = link.dirs["to_host"].request()
        yield mem_req & link_req
        start = self.env.now
        occ = max(nbytes / host_bandwidth(self.cfg), link_occupancy(link.cfg, nbytes))
        yield self.env.timeout(occ)
        self.port.release(mem_req)
        link.dirs["to_host"].release(link_req)
        self.rec.add_bytes("host_memory", nbytes)
        self.rec.add_bytes(f"{link.name}.to_host", nbytes)
        self.rec.add_busy("host_memory", occ)
        self.rec.add_busy(f"{link.name}.to_host", occ)
        self.rec.span(start, self.env.now, track, label, bytes=nbytes)
        yield self.env.timeout(self.cfg.latency + link.cfg.latency)
