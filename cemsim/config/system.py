"""A whole system: the component tree the YAML nesting mirrors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializeAsAny, model_validator

from cemsim.config.components import CEMConfig, GPUConfig, HostMemoryConfig, LinkConfig
from cemsim.config.fields import Count, Frozen, PositiveTime
from cemsim.config.workload import ModelGeometry, WorkloadConfig


class SimulationConfig(Frozen):
    """Bounds that keep every simulation finite: it stops and says so when one is hit."""

    max_events: Count = 50_000_000
    max_simulated_time: PositiveTime = 3600.0


class SystemConfig(Frozen):
    name: str
    description: str = ""
    kv_location: Literal["hbm", "host_memory", "cem"] = "hbm"
    # SerializeAsAny: dump the registered implementation's own fields, not just the base class's.
    gpu: SerializeAsAny[GPUConfig]
    cem: SerializeAsAny[CEMConfig] | None = None
    link: SerializeAsAny[LinkConfig] | None = None  # GPU <-> CEM device, or GPU <-> host memory
    host_memory: SerializeAsAny[HostMemoryConfig] | None = None
    workload: WorkloadConfig
    geometry: ModelGeometry  # resolved from workload.model at load
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)

    @model_validator(mode="after")
    def _kv_location_has_its_parts(self) -> SystemConfig:
        if self.kv_location == "cem" and (self.cem is None or self.link is None):
            raise ValueError("kv_location 'cem' needs a 'cem' device and a 'link' to it")
        if self.kv_location == "host_memory" and (self.host_memory is None or self.link is None):
            raise ValueError("kv_location 'host_memory' needs 'host_memory' and a 'link' (PCIe) to it")
        if self.gpu.count > 1 and self.gpu.parallelism == "tensor" and self.gpu.peer_link is None:
            raise ValueError("tensor parallelism over several GPUs needs gpu.peer_link (NVLink)")
        return self
