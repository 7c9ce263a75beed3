"""A point-to-point link (CXL, PCIe, NVLink): one FIFO per direction, occupancy then flight latency.

A transfer holds its direction for nbytes / (bandwidth x protocol efficiency) (so transfers queue: that
is the contention), then flies for ``latency`` without holding it (pipelined). Background traffic (KV
write-back) asks with a lower priority, so a waiting request descriptor goes first (non-preemptive).
"""

from __future__ import annotations

import bisect
from collections.abc import Generator

import simpy
from simpy.core import BoundClass
from simpy.resources.resource import Request

from cemsim.config.components import LinkConfig
from cemsim.sim.registry import register_sim
from cemsim.sim.stats import Recorder

DIRECTIONS = ("to_device", "to_host")
URGENT, BACKGROUND = 0, 1


def link_occupancy(cfg: LinkConfig, nbytes: float) -> float:
    return nbytes / (cfg.bandwidth_per_direction * cfg.protocol_efficiency) if nbytes > 0 else 0.0


def allreduce_time(cfg: LinkConfig, nbytes: float, parties: int) -> float:
    """Ring all-reduce: 2 (p - 1) steps, each moving nbytes / p and paying the link latency."""
    if parties <= 1 or nbytes <= 0:
        return 0.0
    steps = 2 * (parties - 1)
    return steps * (cfg.latency + link_occupancy(cfg, nbytes / parties))


class _ClassRequest(Request):
    def __init__(self, resource: simpy.Resource, priority: int = URGENT) -> None:
        self.priority = priority
        super().__init__(resource)


class _ClassQueue(list):
    """FIFO within a priority class, urgent before background: a bisect, not a re-sort per request
    (simpy's PriorityResource re-sorts its queue on every request, which dominates at 512 in flight)."""

    def append(self, ev: _ClassRequest) -> None:  # type: ignore[override]
        self.insert(bisect.bisect_right(self, ev.priority, key=lambda e: e.priority), ev)


class ClassResource(simpy.Resource):
    """One server, two traffic classes, non-preemptive."""

    PutQueue = _ClassQueue
    request = BoundClass(_ClassRequest)  # type: ignore[assignment]


@register_sim("link", "cxl", "pcie", "nvlink")
class Link:
    def __init__(self, env: simpy.Environment, cfg: LinkConfig, rec: Recorder, name: str = "link") -> None:
        self.env, self.cfg, self.rec, self.name = env, cfg, rec, name
        self.dirs = {d: ClassResource(env, capacity=1) for d in DIRECTIONS}

    def transfer(
        self, direction: str, nbytes: float, label: str, priority: int = URGENT, account: bool = True
    ) -> Generator[simpy.Event, None, None]:
        """Move nbytes; ``account=False`` for traffic whose bytes the caller counts itself (amortized).
        Zero bytes is a bare completion message (a DReX request whose every key was filtered out still
        tells the GPU it is done): no occupancy, only the flight."""
        if nbytes < 0:
            return
        if nbytes == 0:
            yield self.env.timeout(self.cfg.latency)
            return
        if account:
            self.rec.add_bytes(f"{self.name}.{direction}", nbytes)
        with self.dirs[direction].request(priority=priority) as req:
            yield req
            start = self.env.now
            occ = link_occupancy(self.cfg, nbytes)
            yield self.env.timeout(occ)
            self.rec.add_busy(f"{self.name}.{direction}", occ)
            self.rec.span(start, self.env.now, f"{self.name}.{direction}", label, bytes=nbytes)
        yield self.env.timeout(self.cfg.latency)

    def allreduce(self, nbytes: float, parties: int, track: str) -> Generator[simpy.Event, None, None]:
        """Tensor-parallel all-reduce on this (peer) link: holds both directions for its duration."""
        dt = allreduce_time(self.cfg, nbytes, parties)
        if dt <= 0:
            return
        to_device, to_host = (self.dirs[d].request() for d in DIRECTIONS)
        yield to_device & to_host
        start = self.env.now
        yield self.env.timeout(dt)
        moved = 2 * (parties - 1) * nbytes / parties
        self.rec.add_bytes(self.name, moved)
        for d in DIRECTIONS:
            self.rec.add_busy(f"{self.name}.{d}", dt)
        self.dirs["to_device"].release(to_device)
        self.dirs["to_host"].release(to_host)
        self.rec.span(start, self.env.now, track, "all_reduce", bytes=nbytes)
