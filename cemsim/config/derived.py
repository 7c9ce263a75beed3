"""Derived figures, computed in one place from a resolved config (SI units, flat dotted keys).

The simulator and `cemsim config show` read these, so a formula exists once. (The analytic model,
cemsim/sim/analytic.py, derives its own from the config on purpose: it is the independent check.)
"""

from __future__ import annotations

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig


def drex_figures(cem: DReXConfig, head_dim: int | None = None) -> dict[str, float]:
    channels = cem.packages * cem.channels_per_package
    pfus = channels * cem.banks_per_channel
    nma = cem.nma
    out = {
        "cem.channel_count": channels,
        "cem.pfu_count": pfus,
        "cem.nma_count": cem.packages,
        "cem.capacity_bytes": cem.packages * cem.package_capacity,
        # 16 engines x 68 lanes x 3 ops x 1 GHz per NMA (DReX: 26.11 TFLOP/s for 8 NMAs)
        "cem.nma_flops": cem.packages * nma.engines * nma.mac_lanes * nma.ops_per_lane_per_cycle * nma.clock,
        "cem.nma_bandwidth_bytes_per_s": channels * cem.channel_bandwidth,
        "cem.package_bandwidth_bytes_per_s": cem.channels_per_package * cem.channel_bandwidth,
        # each PFU consumes one 128-bit column (16 bytes of sign bits) per bitmap_time_per_dim
        "cem.pfu_bandwidth_bytes_per_s": pfus
        * cem.pfu.keys_per_column_access
        / 8
        / cem.pfu.bitmap_time_per_dim,
        "cem.scratchpad_addresses": cem.nma.address_scratchpad // cem.nma.address_bytes,
        "cem.slice_keys": channels // cem.packages * cem.banks_per_channel * cem.layout.keys_per_block,
        "cem.peak_power_w": cem.packages * cem.package_peak_power,
    }
    if head_dim is not None:
        out["cem.bitmap_epoch_time_s"] = head_dim * cem.pfu.bitmap_time_per_dim
    return out


def derived_figures(system: SystemConfig) -> dict[str, float]:
    g = system.gpu
    geo = system.geometry
    wl = system.workload
    out: dict[str, float] = {
        "gpu.count": g.count,
        "gpu.hbm_capacity_bytes": g.hbm.capacity,
        "gpu.hbm_bandwidth_bytes_per_s": g.hbm.peak_bandwidth,
        "gpu.hbm_sustained_bandwidth_bytes_per_s": g.hbm.peak_bandwidth * g.hbm.sustained_efficiency,
        "gpu.total_hbm_capacity_bytes": g.count * g.hbm.capacity,
        "gpu.peak_flops": g.peak_flops.get(wl.dtype, max(g.peak_flops.values())),
        "gpu.sustained_flops": g.peak_flops.get(wl.dtype, max(g.peak_flops.values())) * g.matmul_efficiency,
        "workload.weight_bytes": geo.weight_params() * wl.dtype_bytes,
        "workload.kv_bytes_per_token": geo.kv_bytes_per_token(wl.dtype_bytes),
        "workload.kv_bytes_per_user": geo.kv_bytes_per_token(wl.dtype_bytes) * wl.context,
        "workload.kv_bytes_total": geo.kv_bytes_per_token(wl.dtype_bytes) * wl.context * wl.batch,
        # one sign bit per key dimension per layer and KV head
        "workload.sign_bytes_per_user": geo.layers * geo.kv_heads * geo.head_dim * wl.context / 8,
        "workload.top_k": wl.attention.k_for(wl.context),
    }
    if g.peer_link is not None:
        out["gpu.peer_link_bandwidth_bytes_per_s"] = g.peer_link.bandwidth_per_direction
    if system.link is not None:
        out["link.effective_bandwidth_bytes_per_s"] = (
            system.link.bandwidth_per_direction * system.link.protocol_efficiency
        )
    if system.host_memory is not None:
        h = system.host_memory
        out["host_memory.peak_bandwidth_bytes_per_s"] = h.channels * h.channel_bandwidth
        out["host_memory.sustained_bandwidth_bytes_per_s"] = (
            h.channels * h.channel_bandwidth * h.sustained_efficiency
        )
        out["host_memory.capacity_bytes"] = h.capacity
    if isinstance(system.cem, DReXConfig):
        out.update(drex_figures(system.cem, geo.head_dim))
    return out
