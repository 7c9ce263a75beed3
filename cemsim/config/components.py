"""Typed configs of the hardware components. Units are parsed at load (see fields.py); values are SI.

Each component config names its implementation in ``impl`` and is registered under (component, impl)
in registry.py. What an implementation adds lives in its own subclass; the base carries what every
implementation of that component must provide.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cemsim.config.fields import (
    Area,
    Bandwidth,
    Bytes,
    Count,
    Energy,
    EnergyPerBit,
    Flops,
    Fraction,
    Frequency,
    Frozen,
    PositiveTime,
    Power,
    Time,
)
from cemsim.config.registry import register


class LinkConfig(Frozen):
    """A point-to-point link; bandwidth per direction, so reads and writes do not share it."""

    impl: str
    name: str = ""
    bandwidth_per_direction: Bandwidth
    latency: Time
    protocol_efficiency: Fraction  # payload / wire bytes after encoding: headers, flits, credits
    energy_per_bit: EnergyPerBit


for _impl in ("cxl", "pcie", "nvlink"):
    register("link", _impl)(LinkConfig)


class HBMConfig(Frozen):
    capacity: Bytes
    peak_bandwidth: Bandwidth
    sustained_efficiency: Fraction  # streaming reads reach this fraction of peak (calibration)
    latency: Time
    energy_per_bit: EnergyPerBit


class GPUConfig(Frozen):
    """A GPU as a roofline: matrix work at a sustained fraction of peak FLOP/s, memory at a sustained
    fraction of peak HBM bandwidth, plus a fixed per-layer overhead for kernel launches and syncs."""

    impl: str
    name: str = ""
    count: Count = 1
    parallelism: Literal["data", "tensor"] = "data"
    peak_flops: dict[Literal["fp32", "tf32", "bf16", "fp16", "fp8"], Flops]
    matmul_efficiency: Fraction  # sustained / peak FLOP/s of dense GEMMs (calibration)
    layer_overhead: Time  # launch and synchronisation cost per transformer layer of one decode step
    # LongSight run on the GPU itself (SCF filter + compaction per KV head, gather, exact scores, top-k):
    # a fixed cost per layer plus a cost per surviving key, on top of the roofline of the bytes it reads.
    sparse_pipeline_latency: Time = 0.0
    sparse_time_per_survivor: Time = 0.0
    energy_per_flop: Energy
    idle_power: Power
    peak_power: Power
    hbm: HBMConfig
    peer_link: LinkConfig | None = None  # GPU-to-GPU (NVLink) for tensor parallel all-reduce


register("gpu", "roofline")(GPUConfig)


class HostMemoryConfig(Frozen):
    impl: str
    name: str = ""
    channels: Count
    channel_bandwidth: Bandwidth
    sustained_efficiency: Fraction
    capacity: Bytes
    latency: Time
    energy_per_bit: EnergyPerBit
    static_power: Power = 0.0
    kv_write_group: Count = (
        128  # new tokens' KV go back to host memory in groups of this many (LongSight: 128)
    )


register("host_memory", "ddr5")(HostMemoryConfig)


class LpddrTimings(Frozen):
    """LPDDR5X timings used by the NMA's survivor fetches (row hits vs misses)."""

    tRCD: Time
    tRP: Time
    tCL: Time
    row_buffer: Bytes  # bytes one activation opens in one channel
    burst: Bytes  # bytes one column burst returns on one channel
    activations_in_flight: Count = (
        1  # row activations a channel overlaps during survivor fetches (1: one by one)
    )


class PFUConfig(Frozen):
    """PIM filter unit: one per bank; compares sign bits of 128 keys per column access."""

    keys_per_column_access: Count
    queries_per_pass: Count
    match_counter_bits: Count
    bitmap_time_per_dim: PositiveTime  # one column access + XOR + count, per dimension, per 128 keys
    bitmap_read_latency: PositiveTime  # reading one channel's bitmaps into the NMA
    address_generation_time: PositiveTime  # memory controller turns bitmaps into survivor addresses
    power: Power
    area: Area


class NMAConfig(Frozen):
    """Near-memory accelerator, one per package: MAC engines, a top-k unit, an address scratchpad."""

    engines: Count
    mac_lanes: Count
    ops_per_lane_per_cycle: Count
    clock: Frequency
    topk_max: Count
    address_scratchpad: Bytes
    address_bytes: Bytes
    peak_power: Power
    idle_power: Power
    scratchpad_energy_per_bit: EnergyPerBit
    energy_per_op: Energy
    area: Area


class CEMConfig(Frozen):
    """Base of compute-enabled memory devices."""

    impl: str
    name: str = ""


class KeyLayoutConfig(Frozen):
    """Where a (user, layer, KV head) context slice lives: see DReX (ISCA 2025), section 4."""

    keys_per_block: Count = 128  # one Key Block: the keys whose sign bits share one bank's columns
    # Which package (NMA) holds KV head h of user u; each choice is one formula in package_of
    kv_placement: Literal["head_per_package", "rotate_by_user", "user_per_package"] = "head_per_package"
    interleave: Literal["channel_then_bank", "bank_then_channel"] = "channel_then_bank"

    def package_of(self, user: int, head: int, kv_heads: int, packages: int) -> int:
        """head_per_package: a user's heads on distinct packages, users continuing in turn, (u * H + h) mod P
        (DReX section 4; with H = P, head h of every user is on package h, so a busy head queues at one NMA);
        rotate_by_user: (h + u) mod P, the head-to-package map rotated by one per user (a hot head spreads
        over the packages across users); user_per_package: u mod P, every head of a user on one package."""
        if self.kv_placement == "head_per_package":
            return (user * kv_heads + head) % packages
        if self.kv_placement == "rotate_by_user":
            return (head + user) % packages
        return user % packages


class DReXConfig(CEMConfig):
    packages: Count
    channels_per_package: Count
    banks_per_channel: Count
    channel_bandwidth: Bandwidth
    package_capacity: Bytes
    lpddr: LpddrTimings
    dram_energy_per_bit: EnergyPerBit
    package_static_power: Power
    package_peak_power: Power
    pfu: PFUConfig
    nma: NMAConfig
    request_queue_depth: Count
    response_buffers: Count
    layout: KeyLayoutConfig = Field(default_factory=KeyLayoutConfig)


register("cem", "drex")(DReXConfig)
