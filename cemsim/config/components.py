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
    fraction of peak HBM bandwidth, plus a fixed per-layer overhead for kernel launches and syncs and a fixed
    per-step overhead for host work that does not scale with the layers."""

    impl: str
    name: str = ""
    count: Count = 1
    parallelism: Literal["data", "tensor"] = "data"
    peak_flops: dict[Literal["fp32", "tf32", "bf16", "fp16", "fp8"], Flops]
    matmul_efficiency: Fraction  # sustained / peak FLOP/s of dense GEMMs (calibration)
    layer_overhead: Time  # launch and synchronisation cost per transformer layer of one decode step
    # fixed host / launch cost per decode step, whatever the layers (e.g. eager PyTorch's Python loop and its
    # per-token host sync); every data-parallel lane pays it once per step (calibration)
    step_overhead: Time = 0.0
    # LongSight run on the GPU itself (SCF filter + compaction, exact scores, top-k, attention over the picks):
    # on top of the roofline of the bytes it reads, a fixed cost per layer and a cost per unit of each stage's
    # work: per request (one user's KV head: its top-k select and attention row), per key scanned by the
    # filter, per surviving key, per picked value. A term a calibration did not fit stays 0.
    sparse_pipeline_latency: Time = 0.0
    sparse_time_per_request: Time = 0.0
    sparse_time_per_key: Time = 0.0
    sparse_time_per_survivor: Time = 0.0
    sparse_time_per_pick: Time = 0.0
    energy_per_flop: Energy
    idle_power: Power
    peak_power: Power
    hbm: HBMConfig
    peer_link: LinkConfig | None = None  # GPU-to-GPU (NVLink) for tensor parallel all-reduce


register("gpu", "roofline")(GPUConfig)


class HostMemoryConfig(Frozen):
    impl: str
    name: str = ""
    device: str  # a cemsim DRAM preset name (config/presets/dram/) or YAML path: every timing lives there
    channels: Count
    channel_bandwidth: Bandwidth  # one DIMM channel's peak (it may hold several engine channels)
    # a STREAM-class fraction of peak: the analytic model's host rate (the DES replays the DRAM engine)
    sustained_efficiency: Fraction
    capacity: Bytes
    latency: Time  # load-to-use beyond the DRAM itself (controller, fabric, DMA), paid once per stream
    energy_per_bit: EnergyPerBit
    static_power: Power = 0.0
    # physical addresses over the engine channels: DRAM field order from most to least significant
    mapping: str = "RoBaRaCoCh"
    gather_bytes: Bytes = 256  # bytes one random read of a sparse gather fetches (one key vector)
    kv_write_group: Count = (
        128  # new tokens' KV go back to host memory in groups of this many (LongSight: 128)
    )


register("host_memory", "ddr5")(HostMemoryConfig)


class LpddrConfig(Frozen):
    """The DReX package's LPDDR5X channels: which DRAM device the engine simulates (cemsim/dram presets:
    every timing lives there) and how DReX organises a channel's banks on it."""

    device: str  # a cemsim DRAM preset name (config/presets/dram/) or a DRAM preset YAML path
    ranks: Count  # per channel; DReX's dies each count as a rank (own tRRD/tFAW window)
    bankgroups: Count  # per rank (die)
    row_buffer: Bytes  # bytes one activation opens in one channel
    burst: Bytes  # bytes one column burst returns on one channel


class PFUConfig(Frozen):
    """PIM filter unit: one per bank; compares sign bits of 128 keys per column access."""

    keys_per_column_access: Count
    queries_per_pass: Count
    match_counter_bits: Count
    bitmap_time_per_dim: PositiveTime  # one column access + XOR + count, per dimension, per 128 keys
    address_generation_time: PositiveTime  # memory controller turns bitmaps into survivor addresses
    # how the PFUs' row activations are issued: "broadcast" (one command reaches every bank, no
    # tRRD/tFAW; what DReX's bitmap times imply) or "jedec" (one ACT per bank under tRRD/tFAW)
    activation: Literal["broadcast", "jedec"] = "broadcast"
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
    outstanding_keys: Count  # survivor keys the NMA keeps in flight per channel while it fetches
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
    # how consecutive Key Blocks' sign bits are dealt over a package's (channel, bank) pairs
    interleave: Literal["channel_then_bank", "bank_then_channel"] = "channel_then_bank"
    # full-precision keys and values: DRAM field order from most to least significant (sim/drex_layout.py)
    key_mapping: str = "RoBaRaCoCh"

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
    lpddr: LpddrConfig
    dram_energy_per_bit: EnergyPerBit
    package_static_power: Power
    package_peak_power: Power
    pfu: PFUConfig
    nma: NMAConfig
    request_queue_depth: Count
    response_buffers: Count
    layout: KeyLayoutConfig = Field(default_factory=KeyLayoutConfig)
    # "full": every phase's requests through the DRAM engine; "sampled": a sample of the phases, the rest
    # from the sample's time per key at their key count (docs/validation.md gives its error against full)
    dram_detail: Literal["full", "sampled"] = "sampled"
    sampled_phases: Count = 12  # scoring (and value) phases measured per decode step in sampled mode
    # keys replayed per measured phase, in sampled_windows runs spread through it. A run of 8,192 keys spans
    # about 4 refresh intervals of LPDDR5X, so its rate carries the refresh share (runs of 4,096 read 3 %
    # fast); one run of 16,384 from the phase's start misread large phases by up to -8 % where survivors
    # thin out along the context (Llama-3-1B at 1M), four spread through it by under 1 % (docs/validation.md)
    sampled_keys: Count = 32768
    sampled_windows: Count = 4


register("cem", "drex")(DReXConfig)
