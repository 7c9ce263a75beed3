"""Energy by component: bytes moved x energy per bit, operations x energy per operation, static power x time.

Every constant comes from the config (sourced presets); this file only multiplies. Counters are the
Recorder's (DES) or the analytic twin's, over ``seconds`` of simulated time.
"""

from __future__ import annotations

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig

BITS = 8


def energy_breakdown(
    system: SystemConfig, nbytes: dict[str, float], ops: dict[str, float], seconds: float
) -> dict[str, float]:
    """Joules by dotted component key ("gpu.compute", "cem.pfu", ...), over the whole run."""
    g = system.gpu
    out = {
        "gpu.compute": ops.get("gpu.flops", 0.0) * g.energy_per_flop,
        "gpu.hbm": nbytes.get("gpu.hbm", 0.0) * BITS * g.hbm.energy_per_bit,
        "gpu.static": g.idle_power * g.count * seconds,
    }
    if g.peer_link is not None and g.count > 1:
        out["gpu.peer_link"] = nbytes.get("gpu.peer_link", 0.0) * BITS * g.peer_link.energy_per_bit
    if system.link is not None:
        moved = nbytes.get("link.to_device", 0.0) + nbytes.get("link.to_host", 0.0)
        out["link"] = moved * BITS * system.link.energy_per_bit
    if system.host_memory is not None and system.kv_location == "host_memory":
        h = system.host_memory
        out["host_memory.dynamic"] = nbytes.get("host_memory", 0.0) * BITS * h.energy_per_bit
        out["host_memory.static"] = h.static_power * seconds
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        c = system.cem
        dram = (
            nbytes.get("cem.lpddr", 0.0) + nbytes.get("cem.bitmaps", 0.0) + nbytes.get("cem.lpddr_write", 0.0)
        )
        out["cem.dram"] = dram * BITS * c.dram_energy_per_bit
        out["cem.pfu"] = ops.get("cem.pfu_seconds", 0.0) * c.pfu.power
        out["cem.nma"] = ops.get("cem.nma_macs", 0.0) * c.nma.ops_per_lane_per_cycle * c.nma.energy_per_op
        out["cem.scratchpad"] = nbytes.get("cem.scratchpad", 0.0) * BITS * c.nma.scratchpad_energy_per_bit
        out["cem.static"] = c.packages * (c.package_static_power + c.nma.idle_power) * seconds
    return out


def peak_bandwidths(system: SystemConfig) -> dict[str, float]:
    """Peak bytes/s of each component whose utilization the result reports."""
    g = system.gpu
    out = {"gpu.hbm": g.hbm.peak_bandwidth * g.count}
    if system.link is not None:
        out["link.to_device"] = out["link.to_host"] = system.link.bandwidth_per_direction
    if g.peer_link is not None and g.count > 1:
        out["gpu.peer_link"] = 2 * g.peer_link.bandwidth_per_direction
    if system.host_memory is not None and system.kv_location == "host_memory":
        out["host_memory"] = system.host_memory.channels * system.host_memory.channel_bandwidth
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        c = system.cem
        out["cem.lpddr"] = c.packages * c.channels_per_package * c.channel_bandwidth
    return out


def utilization(system: SystemConfig, nbytes: dict[str, float], seconds: float) -> dict[str, float]:
    out = {}
    for key, peak in peak_bandwidths(system).items():
        moved = nbytes.get(key, 0.0)
        if key == "cem.lpddr":
            moved += nbytes.get("cem.bitmaps", 0.0) + nbytes.get("cem.lpddr_write", 0.0)
        out[key] = min(1.0, moved / (peak * seconds)) if seconds > 0 else 0.0
    return out
