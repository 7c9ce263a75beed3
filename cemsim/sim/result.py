"""The result of one simulation (DES or the analytic model's estimate): what `cemsim run --json` prints
and sweeps store.

Units: latency per token = mean decode-step time (every user of the batch gets one token per step);
time_breakdown_s sums to it (critical path of GPU lane 0); energy_breakdown_j and bytes_moved are per
generated token (run totals / (steps x batch)); bandwidth_utilization is bytes / (peak x simulated time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cemsim.config.system import SystemConfig
from cemsim.sim.energy import energy_breakdown, utilization
from cemsim.sim.stats import Span, nest


@dataclass
class SimResult:
    system: str
    model: str  # "des" or "analytic"
    kind: str  # hbm_dense | hbm_sparse | host_dense | host_sparse | cem
    context_tokens: int
    batch: int
    steps: int
    fits: bool
    why_not: list[str] = field(default_factory=list)
    gpus_needed: int | None = None
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_per_token_s: float | None = None
    latency_bounds_s: dict[str, float] = field(default_factory=dict)  # analytic only: lower, upper per step
    throughput_tokens_per_s: float | None = None
    energy_per_token_j: float | None = None
    energy_breakdown_j: dict[str, float] = field(default_factory=dict)
    time_breakdown_s: dict[str, float] = field(default_factory=dict)
    bandwidth_utilization: dict[str, float] = field(default_factory=dict)
    bytes_moved: dict[str, float] = field(default_factory=dict)
    user_latency_s: dict[str, float] = field(default_factory=dict)  # attention issue -> last response
    step_latencies_s: list[float] = field(default_factory=list)
    events: int = 0
    wall_s: float = 0.0
    truncated: str | None = None
    context_scaled_from: int | None = None
    busy_s: dict[str, float] = field(default_factory=dict)  # seconds per step each resource (NMA) was held
    attention: dict[str, Any] = field(default_factory=dict)  # settings replayed, rules, survival source
    spans: list[Span] = field(default_factory=list, repr=False)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    def to_json_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("spans", "step_latencies_s")}
        d["energy_breakdown_j"] = nest(self.energy_breakdown_j)
        d["bytes_moved"] = nest(self.bytes_moved)
        d["events_per_s"] = self.events_per_s
        d["step_latencies_s"] = list(self.step_latencies_s)
        d["units"] = {
            "latency_per_token_s": "s per decode step",
            "energy_breakdown_j": "J per token",
            "bytes_moved": "bytes per token",
            "time_breakdown_s": "s per decode step",
        }
        return d


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 95, 99)} | {"max": float(arr.max())}


def fill_metrics(
    res: SimResult,
    system: SystemConfig,
    nbytes: dict[str, float],
    ops: dict[str, float],
    phases: dict[str, float],
    step_latencies: list[float],
) -> None:
    """Per-token metrics from run totals over ``len(step_latencies)`` steps."""
    steps = len(step_latencies)
    if steps == 0:
        return
    total = float(sum(step_latencies))
    tokens = steps * res.batch
    res.steps = steps
    res.step_latencies_s = list(step_latencies)
    res.latency_per_token_s = total / steps
    res.throughput_tokens_per_s = tokens / total
    energy = energy_breakdown(system, nbytes, ops, total)
    res.energy_breakdown_j = {k: v / tokens for k, v in energy.items()}
    res.energy_per_token_j = sum(res.energy_breakdown_j.values())
    res.time_breakdown_s = {k: v / steps for k, v in phases.items() if v > 0}
    res.bandwidth_utilization = utilization(system, nbytes, total)
    res.bytes_moved = {k: v / tokens for k, v in nbytes.items() if v > 0}
