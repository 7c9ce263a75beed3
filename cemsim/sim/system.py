"""Build a simulated system from a resolved config: components by (component, impl), wired together.

Lifecycle: build(config) -> SimSystem (components wired to one env and one Recorder) -> replay drives
env -> the Recorder's counters become the stats tree. Nothing here is global: build twice, run twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig
from cemsim.sim.cem import DrexShape, drex_shape
from cemsim.sim.gpu import GPU
from cemsim.sim.host_memory import HostMemory
from cemsim.sim.link import Link
from cemsim.sim.plan import Sizes, system_kind
from cemsim.sim.registry import sim_class
from cemsim.sim.stats import Recorder


@dataclass
class SimSystem:
    env: simpy.Environment
    config: SystemConfig
    kind: str
    sizes: Sizes
    rec: Recorder
    lanes: list[GPU]  # one per GPU (data parallel) or one for the tensor-parallel group
    tp: int
    link: Link | None
    peer: Link | None
    cem: object | None  # DReX
    host: HostMemory | None
    shape: DrexShape | None


def drex_shape_for(system: SystemConfig, sizes: Sizes) -> DrexShape | None:
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        return drex_shape(system.cem, sizes.head_dim, sizes.group, sizes.dtype_bytes)
    return None


def build(system: SystemConfig, sizes: Sizes, rec: Recorder | None = None) -> SimSystem:
    env = simpy.Environment()
    rec = rec or Recorder()
    kind = system_kind(system)
    gpu = system.gpu
    tp = gpu.count if gpu.parallelism == "tensor" else 1
    gpu_cls = sim_class("gpu", gpu.impl)
    lanes = [gpu_cls(env, gpu, system.workload.dtype, rec, i, tp) for i in range(gpu.count // tp)]
    link = sim_class("link", system.link.impl)(env, system.link, rec, "link") if system.link else None
    peer = None
    if tp > 1 and gpu.peer_link is not None:
        peer = sim_class("link", gpu.peer_link.impl)(env, gpu.peer_link, rec, "gpu.peer_link")
    shape = drex_shape_for(system, sizes)
    cem = None
    if kind == "cem" and system.cem is not None and shape is not None:
        cem = sim_class("cem", system.cem.impl)(env, system.cem, shape, rec, sizes.kv_heads)
    host = None
    if kind.startswith("host") and system.host_memory is not None:
        host = sim_class("host_memory", system.host_memory.impl)(env, system.host_memory, rec)
    return SimSystem(env, system, kind, sizes, rec, lanes, tp, link, peer, cem, host, shape)
