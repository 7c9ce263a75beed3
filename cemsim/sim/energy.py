"""Energy by component: bytes moved x energy per bit, operations x energy per operation, static power x time.

Every constant comes from the config (sourced presets); this file only multiplies. Counters are the
Recorder's (DES), over ``seconds`` of simulated time. (The analytic model counts its own, analytic.py.)
"""

from __future__ import annotations

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig

BITS = 8


def energy_breakdown(
    system: SystemConfig, nbytes: dict[str, float], ops: dict[str, float], seconds: float
) -> dict[str, float]:
    """Joules by dotted component key ("gpu.compute", "cem.pfu", ...), over the whole run."""
    gpu = system.gpu
    out = {
        "gpu.compute": ops.get("gpu.flops", 0.0) * gpu.energy_per_flop,
        "gpu.hbm": nbytes.get("gpu.hbm", 0.0) * BITS * gpu.hbm.energy_per_bit,
        "gpu.static": gpu.idle_power * gpu.count * seconds,
    }
    if gpu.peer_link is not None and gpu.count > 1:
        out["gpu.peer_link"] = nbytes.get("gpu.peer_link", 0.0) * BITS * gpu.peer_link.energy_per_bit
    if system.link is not None:
        moved = nbytes.get("link.to_device", 0.0) + nbytes.get("link.to_host", 0.0)
        out["link"] = moved * BITS * system.link.energy_per_bit
    if system.host_memory is not None and system.kv_location == "host_memory":
        host = system.host_memory
        out["host_memory.dynamic"] = nbytes.get("host_memory", 0.0) * BITS * host.energy_per_bit
        out["host_memory.static"] = host.static_power * seconds
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        cem = system.cem
        dram = (
            nbytes.get("cem.lpddr", 0.0) + nbytes.get("cem.bitmaps", 0.0) + nbytes.get("cem.lpddr_write", 0.0)
        )
        out["cem.dram"] = dram * BITS * cem.dram_energy_per_bit
        out["cem.pfu"] = ops.get("cem.pfu_seconds", 0.0) * cem.pfu.power
        out["cem.nma"] = ops.get("cem.nma_macs", 0.0) * cem.nma.ops_per_lane_per_cycle * cem.nma.energy_per_op
        out["cem.scratchpad"] = nbytes.get("cem.scratchpad", 0.0) * BITS * cem.nma.scratchpad_energy_per_bit
        out["cem.static"] = cem.packages * (cem.package_static_power + cem.nma.idle_power) * seconds
    return out


def peak_bandwidths(system: SystemConfig) -> dict[str, float]:
    """Peak bytes/s of each component whose utilization the result reports."""
    gpu = system.gpu
    out = {"gpu.hbm": gpu.hbm.peak_bandwidth * gpu.count}
    if system.link is not None:
        out["link.to_device"] = out["link.to_host"] = system.link.bandwidth_per_direction
    if gpu.peer_link is not None and gpu.count > 1:
        out["gpu.peer_link"] = 2 * gpu.peer_link.bandwidth_per_direction
    if system.host_memory is not None and system.kv_location == "host_memory":
        out["host_memory"] = system.host_memory.channels * system.host_memory.channel_bandwidth
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        cem = system.cem
        out["cem.lpddr"] = cem.packages * cem.channels_per_package * cem.channel_bandwidth
    return out


def utilization(system: SystemConfig, nbytes: dict[str, float], seconds: float) -> dict[str, float]:
    out = {}
    for key, peak in peak_bandwidths(system).items():
        moved = nbytes.get(key, 0.0)
        if key == "cem.lpddr":
            moved += nbytes.get("cem.bitmaps", 0.0) + nbytes.get("cem.lpddr_write", 0.0)
        out[key] = min(1.0, moved / (peak * seconds)) if seconds > 0 else 0.0
    return out
