"""An independent analytic model of a decode step: closed-form lower and upper bounds and a point estimate.

A second opinion on the discrete-event simulator (DES), written from the resolved SystemConfig (hardware
parameters) and the trace's per-(layer, KV head) counts alone: keys considered, survivors, values fetched,
context, window, sinks, and the batch. It imports no cost, queueing or work-model code of the simulator
(nothing from cem, gpu, hbm, link, host_memory, plan, work, replay, energy, capacity or result's
fill_metrics); tests/sim/test_analytic.py checks the imports. Two models that shared code would be one.

What each part costs, from first principles:

- GPU kernel: roofline, max(HBM latency + bytes / (peak x sustained efficiency), FLOPs / (peak FLOP/s x
  matmul efficiency)) plus any fixed cost the config names (the calibrated LongSight-on-GPU pipeline). Per
  layer: QKV projection, attention kernels, output projection + MLP (+ norms), gpu.layer_overhead, and under
  tensor parallelism two ring all-reduces (2 (p - 1) steps of bytes / p each, each paying the link latency).
  Per step: the LM head and gpu.step_overhead (host work independent of the layers), on every lane.
  Weights stream once per step; FLOPs scale with the users; tensor parallelism splits both over p GPUs.
  What attention reads by policy: dense every key and value; window the window and sinks only; a selecting
  policy the window and sinks, its selection data per considered key (LongSight's sign bits, Quest's page
  min/max vectors, nothing for the oracle's exact top-k) and the selected keys and top-k values.
- Link: bytes / (bandwidth per direction x protocol efficiency), then the flight latency.
- DReX request (one user, layer and KV head), on the NMA of the package holding it:
  filtering in epochs of one Key Block per bank (a slice of channels x banks x keys_per_block keys); per epoch
  three pipelined stages: bitmap generation D x bitmap_time_per_dim x query passes in every bank at once, the
  bitmap read (banks x keys_per_block / 8 bytes x passes over one channel's bus; DReX's stated 120.4 ns where
  the config carries it) and address generation.
  The 2 MiB address scratchpad holds C addresses; when it would overflow, filtering stops and the survivors
  are fetched and scored, then filtering resumes with a refilled pipeline: F >= ceil(S / C) scoring phases,
  and, since two consecutive phases together exceed C, F <= 2 ceil(S / C) + 1 (never more than the epochs).
  Survivor keys and top-k values are fetched over the package's channels; MACs (S x D x group over
  engines x lanes x clock) overlap the fetch.
- Host memory: a stream holds host DDR and the link together for bytes / min(sustained DDR bandwidth,
  effective link bandwidth), then pays both latencies. Dense attention with the KV on the CEM device streams
  every key and value out of its LPDDR5X pins and over CXL the same way (no PFU or NMA work).
- Capacity: weights, KV and sign bits against each memory.
- Sliding-window layers (Gemma 3's local layers): dense attention over their last local_window keys on the
  GPU from HBM, whatever the system; their KV (capped at the window) stays in HBM.
- Energy: bytes x energy per bit, FLOPs / MACs / PFU-seconds x energy per operation, static power x time.

The three numbers per step (seconds):

- lower: cannot be beaten by any schedule. Filtering with the fewest possible scratchpad phases; fetches at
  the package's pin bandwidth with one CAS latency per phase and no row misses; and per layer the busiest
  resource (an NMA's requests back to back, all descriptors on the link, all responses on the link, the
  host stream) as well as the longest single request path. So it holds under contention too.
- upper: every survivor and value a row miss whose bank cycle (tRC, or tRP + tRCD) and CAS latency are
  exposed one after another (the NMA issues survivors one by one, DReX section 5.4) plus the data time,
  stretched by refresh; MACs not overlapped;
  epochs not pipelined; GPU kernels with compute and memory in series; and per layer every request of the
  batch waiting behind every other one on its NMA and on the link, plus one background KV write-back ahead
  of the descriptors. With a request queue or response-buffer pool smaller than the requests in flight,
  requests are taken fully one after another. Data-parallel lanes sharing a device add every other lane's
  whole step of device and link work.
- estimate: the point estimate. GPU side as above. Each user is served as if it were alone on the device and
  the link (NO contention between users: users' requests do not queue behind each other's), its requests'
  descriptors back to back, each NMA serving that user's requests; rows opened by the survivors and values
  are the expectation for keys placed uniformly at random over the considered range (keys interleaved over
  the package's channels: row_buffer x channels / key bytes keys per opened row), each row miss exposing
  tRP + tRCD (divided by the activations the controller overlaps). Where instead the NMA keeps
  nma.outstanding_keys keys in flight per channel, a fetch takes the slowest of the pins, the ranks'
  activation rate (a row per max(tRRD, tFAW / 4) per rank), the closed loop (each key's share of
  precharge + activate, its CAS latency and burst, over the keys in flight) and the column spacing (keys
  of one row follow one another in one bank group, tCCD_L apart; JESD209-5 bank-group mode; where the key
  mapping puts consecutive rows in other ranks, a row's first read waits nBL + nRTRS for the bus to turn
  around), stretched by refresh (every tREFI the reads pause for tRTP + tRPab + tRFC + tRCD: an all-bank
  refresh closes every row) where the DRAM preset gives those. Filtering pipelined with the expected number
  of scratchpad phases for evenly spread survivors. KV write-back is off the critical path. Request-queue
  and response-buffer limits are left to the bounds.

What it ignores, on purpose: queueing order and the interaction between users (only the bounds see
contention, in aggregate), survivor clustering (the DES reads the trace's per-block distribution), the DRAM
controller's scheduling beyond the limits above (WCK sync, command-bus conflicts, the order it serves its
queue in), bank conflicts between PFUs and the NMA, the GPU's own scheduling between lanes. So at batch 1
the estimate and the DES agree within the row-occupancy difference, and under contention the DES is higher
than the estimate (tests/sim/test_analytic.py states both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cemsim.config.components import DReXConfig, GPUConfig, LinkConfig
from cemsim.config.system import SystemConfig
from cemsim.sim.result import SimResult

if TYPE_CHECKING:
    from cemsim.sim.simulate import Prepared

BITS_PER_BYTE = 8
PHASES = ("projection", "attention_gpu", "attention_wait", "all_reduce", "layer_overhead", "step_overhead")


@dataclass(frozen=True)
class Span3:
    """A duration as (lower bound, point estimate, upper bound), seconds."""

    lower: float
    estimate: float
    upper: float

    def __add__(self, other: Span3) -> Span3:
        return Span3(self.lower + other.lower, self.estimate + other.estimate, self.upper + other.upper)


ZERO = Span3(0.0, 0.0, 0.0)


def _const(t: float) -> Span3:
    return Span3(t, t, t)


def system_kind(system: SystemConfig) -> str:
    """Where the KV lives and what the policy reads: hbm_dense | hbm_sparse | host_dense | host_sparse | cem,
    or <where>_window (the window and sinks only, kept in HBM everywhere)."""
    policy = system.workload.attention.policy
    where = {"hbm": "hbm", "host_memory": "host", "cem": "cem"}[system.kv_location]
    if policy == "window":
        return f"{where}_window"
    if where == "cem":
        return "cem_dense" if policy == "dense" else "cem"  # dense: every key and value out over CXL
    return f"{where}_{'dense' if policy == 'dense' else 'sparse'}"


def local_layers(system: SystemConfig) -> frozenset[int]:
    """The model's sliding-window layers (Gemma 3's local layers), from its geometry."""
    return frozenset(i for i, t in enumerate(system.geometry.layer_types or ()) if t == "sliding")


def selection_bytes_per_key(system: SystemConfig) -> float:
    """HBM bytes the GPU reads per considered key to choose what to fetch: LongSight's sign bits (one bit per
    dimension), Quest's page bounds (a min and a max vector per page), none for the oracle's exact top-k."""
    att, geo = system.workload.attention, system.geometry
    if att.policy == "longsight":
        return geo.head_dim / BITS_PER_BYTE
    if att.policy == "quest":
        return 2 * geo.head_dim * system.workload.dtype_bytes / att.page_size
    return 0.0


# -- hardware rates ---------------------------------------------------------------------------------------


class GpuRates:
    """One GPU's roofline (the same for every GPU of the system)."""

    def __init__(self, gpu: GPUConfig, dtype: str) -> None:
        peak = gpu.peak_flops.get(dtype, max(gpu.peak_flops.values()))  # type: ignore[call-overload]
        self.flops_per_s = peak * gpu.matmul_efficiency
        self.bytes_per_s = gpu.hbm.peak_bandwidth * gpu.hbm.sustained_efficiency
        self.latency = gpu.hbm.latency

    def kernel(self, nbytes: float, flops: float, fixed: float = 0.0) -> Span3:
        """Roofline (memory and compute overlapped) for lower and estimate; in series for upper."""
        if nbytes <= 0 and flops <= 0:
            return _const(fixed)
        memory = self.latency + nbytes / self.bytes_per_s if nbytes > 0 else 0.0
        compute = flops / self.flops_per_s
        roof = max(memory, compute) + fixed
        return Span3(roof, roof, memory + compute + fixed)


def link_seconds(link: LinkConfig, nbytes: float) -> float:
    """Occupancy of one direction (the flight latency is separate)."""
    return nbytes / (link.bandwidth_per_direction * link.protocol_efficiency) if nbytes > 0 else 0.0


def fifo_makespan(ready: list[float], service: list[float]) -> float:
    """When one first-come-first-served server finishes jobs released at ``ready``: the closed form
    max over j of (ready_j + the service of job j and of every job released after it), jobs in release order."""
    order = sorted(range(len(ready)), key=lambda j: ready[j])
    end, behind = 0.0, 0.0
    for j in reversed(order):
        behind += service[j]
        end = max(end, ready[j] + behind)
    return end


def ring_allreduce_seconds(link: LinkConfig, nbytes: float, parties: int) -> float:
    """Ring all-reduce: reduce-scatter then all-gather, 2 (p - 1) steps of nbytes / p, each with a flight."""
    if parties <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (parties - 1) * (link.latency + link_seconds(link, nbytes / parties))


@dataclass(frozen=True)
class DramTimings:
    tRCD: float
    tRP: float
    tCL: float
    tRC: float  # ACT to ACT in one bank: the shortest cycle of a row miss there
    refresh: float  # a fetch's stretch by refresh: its pause per tREFI over the rest (0 when not given)
    tRRD: float = 0.0  # ACT to ACT in one rank (other bank group); 0 when not given
    tFAW: float = 0.0  # window of four ACTs in one rank; 0 when not given
    tCCD_L: float = 0.0  # read to read in one bank group (LPDDR5 bank-group mode); 0 when not given
    tCCD_S: float = 0.0  # read to read in another bank group; 0 when not given
    rank_switch: float = 0.0  # read to read in another rank: the burst and the bus turnaround nRTRS


def lpddr_timings(cem: DReXConfig) -> DramTimings:
    """The LPDDR5X timings: on the DReX config itself, or in the DRAM device preset it names (cem.lpddr.device:
    read for its timing table only; none of the DRAM engine's code runs here)."""
    lp: Any = cem.lpddr
    if hasattr(lp, "tRCD"):
        return DramTimings(float(lp.tRCD), float(lp.tRP), float(lp.tCL), float(lp.tRP + lp.tRCD), 0.0)
    from cemsim.dram import load_dram_spec

    spec: Any = load_dram_spec(lp.device)
    ticks, tck = spec.timing, spec.tck_s
    rcd, rp, cl = ticks["nRCD"] * tck, ticks["nRP"] * tck, ticks["nCL"] * tck
    rc = max(ticks.get("nRC", 0) * tck, rp + rcd)
    refi = ticks.get("nREFI", 0)
    # an all-bank refresh needs every bank precharged (JESD209-5): reads pause for the last read's tRTP, the
    # precharge-all tRPab, tRFC, then tRCD to re-open the row they were reading. Each tREFI of wall time
    # holds one pause, so a fetch of t seconds of reads takes t x tREFI / (tREFI - pause).
    pause = ticks.get("nRTP", 0) + ticks.get("nRPab", ticks["nRP"]) + ticks.get("nRFC", 0) + ticks["nRCD"]
    refresh = pause / (refi - pause) if refi and ticks.get("nRFC", 0) else 0.0
    return DramTimings(
        rcd,
        rp,
        cl,
        rc,
        refresh,
        ticks.get("nRRD_S", 0) * tck,
        ticks.get("nFAW", 0) * tck,
        ticks.get("nCCD_L", 0) * tck,
        ticks.get("nCCD_S", 0) * tck,
        (ticks["nBL"] + ticks.get("nRTRS", 0)) * tck,
    )


class DrexRates:
    """Per-request costs of one DReX package, from the PFU, NMA and LPDDR5X parameters."""

    def __init__(self, cem: DReXConfig, head_dim: int, group: int, key_bytes: int) -> None:
        self.cem = cem
        self.key_bytes = key_bytes
        self.passes = math.ceil(group / cem.pfu.queries_per_pass)
        self.group, self.head_dim = group, head_dim
        keys_per_block = cem.layout.keys_per_block
        self.keys_per_block = keys_per_block
        self.slice_keys = cem.channels_per_package * cem.banks_per_channel * keys_per_block
        self.bitmap_generation = head_dim * cem.pfu.bitmap_time_per_dim * self.passes
        # one bit per key per pass, every bank of a channel, over that channel's bus (DReX states 120.4 ns
        # for one pass; where the config carries that figure it is used, else this derivation)
        bitmap_bytes = cem.banks_per_channel * keys_per_block / BITS_PER_BYTE * self.passes
        stated = getattr(cem.pfu, "bitmap_read_latency", None)
        self.bitmap_read = (
            stated * self.passes if stated is not None else bitmap_bytes / cem.channel_bandwidth
        )
        self.address_generation = cem.pfu.address_generation_time
        self.epoch_fill = self.bitmap_generation + self.bitmap_read + self.address_generation
        self.epoch_bottleneck = max(self.bitmap_generation, self.bitmap_read, self.address_generation)
        self.scratchpad = int(cem.nma.address_scratchpad // cem.nma.address_bytes)
        self.package_bytes_per_s = cem.channels_per_package * cem.channel_bandwidth
        self.macs_per_s = cem.nma.engines * cem.nma.mac_lanes * cem.nma.clock
        self.dram = lpddr_timings(cem)
        # keys are interleaved over the package's channels: one opened row in each channel holds this many
        self.keys_per_row = cem.lpddr.row_buffer * cem.channels_per_package / key_bytes
        # how the NMA issues its reads: one by one with a configured activation overlap (DReX 5.4), or a
        # closed loop keeping nma.outstanding_keys keys in flight per channel over the ranks' banks
        self.activations_overlapped = float(getattr(cem.lpddr, "activations_in_flight", 1))
        self.outstanding = int(getattr(cem.nma, "outstanding_keys", 0))
        # a key is interleaved over the package's channels in whole bursts: a key smaller than one burst in
        # every channel (head dim 64: 128 B = 4 of 8 channels) leaves the other channels to the next key, so
        # the bus carries ceil(key / burst) bursts per key and each channel reads that share of them
        self.burst_bytes = cem.lpddr.burst
        self.channel_bursts_per_key = math.ceil(key_bytes / self.burst_bytes)
        self.reads_per_key_per_channel = self.channel_bursts_per_key / cem.channels_per_package
        self.ranks = int(getattr(cem.lpddr, "ranks", 1))
        # the first read of a newly opened row follows the previous row's last read: in another bank group
        # tCCD_S later, but where the key mapping puts the rank right above the column (RoBaRaCoCh),
        # consecutive rows lie in other ranks and the data bus turns around between them (nBL + nRTRS)
        fields = [cem.layout.key_mapping[i : i + 2] for i in range(0, len(cem.layout.key_mapping), 2)]
        above_column = fields[fields.index("Co") - 1] if "Co" in fields[1:] else ""
        self.rank_next = above_column == "Ra" and self.ranks > 1
        self.row_switch = max(self.dram.tCCD_S, self.dram.rank_switch) if self.rank_next else self.dram.tCCD_S
        # reads the controller holds per channel: the keys in flight, each with its bursts in that channel
        self.reads_in_flight = self.outstanding * math.ceil(
            self.channel_bursts_per_key / cem.channels_per_package
        )

    def column_spacing(self, keys: float, rows: float) -> tuple[float, float]:
        """Read-to-read time of fetching ``keys`` keys that open ``rows`` rows, per channel, at both ends of
        what the controller's order allows: every read tCCD_S after the previous (reads of rows in other bank
        groups interleaved), or the keys sharing an opened row one after another in its bank group, tCCD_L
        apart (JESD209-5 bank-group mode), each row's first read row_switch after the previous row's last.
        The estimate takes the middle; the range is what the timings leave open (tests/sim/test_analytic.py
        allows it). Reads tCCD_S apart need open rows of two bank groups of one rank among the reads in
        flight: where consecutive rows rotate over the ranks those rows are ``ranks`` rows apart, and with
        fewer reads in flight every read follows one of its own row (tCCD_L) or of another rank."""
        reads = keys * self.reads_per_key_per_channel
        t = self.dram
        one_rank = rows > 0 and self.reads_in_flight < self.ranks * reads / rows
        fast = reads * (min(t.tCCD_L, self.row_switch) if self.rank_next and one_rank else t.tCCD_S)
        slow = max(reads - rows, 0.0) * self.dram.tCCD_L + min(rows, reads) * self.row_switch
        return fast, max(slow, fast)

    def row_miss_cost(self) -> float:
        """What one more opened row adds to a bandwidth-unbound fetch in the estimate."""
        t = self.dram
        if not self.outstanding:
            return (t.tRP + t.tRCD) / self.activations_overlapped
        # closed loop: the precharge + activate is shared by the keys in flight, but a rank opens at most
        # one row per tRRD and four per tFAW
        return max((t.tRP + t.tRCD) / self.outstanding, max(t.tRRD, t.tFAW / 4) / self.ranks)

    def phases(self, epochs: int, survivors: float) -> tuple[int, float, int]:
        """Scratchpad phases: (fewest possible, expected for evenly spread survivors, most possible)."""
        if epochs <= 0:
            return 0, 0.0, 0
        cap = self.scratchpad
        fewest = min(epochs, max(1, math.ceil(survivors / max(cap, min(survivors, self.slice_keys)))))
        most = min(epochs, 2 * math.ceil(survivors / cap) + 1)
        per_epoch = survivors / epochs
        epochs_per_phase = max(1, math.floor(cap / per_epoch)) if per_epoch > 0 else epochs
        expected = min(epochs, max(1, math.ceil(epochs / epochs_per_phase)))
        return fewest, float(expected), most

    def filtering(self, epochs: int, phases: tuple[int, float, int]) -> Span3:
        if epochs <= 0:
            return ZERO
        fewest, expected, _ = phases

        def pipelined(restarts: float) -> float:
            return restarts * self.epoch_fill + (epochs - restarts) * self.epoch_bottleneck

        # upper: no pipelining at all, and every epoch re-opens its sign-bit row in each pass
        activate = self.passes * max(self.dram.tRC, self.dram.tRP + self.dram.tRCD)
        return Span3(pipelined(fewest), pipelined(expected), epochs * (self.epoch_fill + activate))

    def expected_rows(self, keys: float, considered: float) -> float:
        """Rows opened by ``keys`` keys placed uniformly at random among ``considered`` (occupancy)."""
        if keys <= 0 or considered <= 0:
            return 0.0
        rows = math.ceil(considered / self.keys_per_row)
        p_key = min(1.0, keys / considered)
        return min(keys, rows * (1.0 - (1.0 - p_key) ** self.keys_per_row))

    def fetch(self, keys: float, considered: float, phases: tuple[int, float, int]) -> Span3:
        """Read ``keys`` keys of a package in ``phases`` separate streams."""
        if keys <= 0:
            return ZERO
        fewest, expected, _ = phases
        t = self.dram
        data = keys * self.key_bytes / self.package_bytes_per_s
        rows = self.expected_rows(keys, considered)
        miss = rows * self.row_miss_cost()
        if self.outstanding:  # each key in flight also waits for its CAS latency and its burst
            data = keys * self.channel_bursts_per_key * self.burst_bytes / self.package_bytes_per_s
            burst = data / keys
            miss = max(miss, (rows * (t.tRP + t.tRCD) + keys * (t.tCL + burst)) / self.outstanding)
            miss = max(miss, sum(self.column_spacing(keys, rows)) / 2)
        # upper: each key its own row miss, one after another: a bank's full ACT-to-ACT cycle (or precharge +
        # activate where no tRC is known) and the CAS latency, plus the data, stretched by refresh
        serial = keys * (max(t.tRC, t.tRP + t.tRCD) + t.tCL) + data
        # the estimate: every tREFI the reads pause for an all-bank refresh, stretching the fetch
        estimate = (expected * t.tCL + max(data, miss)) * (1.0 + t.refresh)
        return Span3(fewest * t.tCL + data, estimate, serial * (1.0 + t.refresh))

    def service(self, considered: float, survivors: float, values: float) -> Span3:
        """NMA time of one request: filter runs alternating with scoring phases, then the value fetch."""
        if considered <= 0:
            return ZERO
        epochs = math.ceil(considered / self.slice_keys)
        phases = self.phases(epochs, survivors)
        fetch = self.fetch(survivors, considered, phases)
        macs = survivors * self.head_dim * self.group / self.macs_per_s
        scoring = Span3(max(fetch.lower, macs), max(fetch.estimate, macs), fetch.upper + macs)
        one_phase = (1, 1.0, 1)  # the values: one stream after the last scoring phase
        return self.filtering(epochs, phases) + scoring + self.fetch(values, considered, one_phase)


# -- the step ---------------------------------------------------------------------------------------------


@dataclass
class ModelSizes:
    """Sizes of the model and the batch, from the system's geometry and the trace's header."""

    layers: int
    kv_heads: int
    q_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    dtype_bytes: int
    top_k: int
    scores_per_key: int  # top-k scores per kept key: one per query head of the group, or one per group

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    @property
    def key_bytes(self) -> int:
        return self.head_dim * self.dtype_bytes

    @property
    def kv_token_bytes(self) -> int:  # K and V of one token, one layer, all KV heads
        return 2 * self.kv_heads * self.key_bytes

    def response_bytes(self, survivors: float, values: float) -> float:
        """Scores of the kept keys (at most k) and the top-k values, per request."""
        return self.scores_per_key * min(self.top_k, survivors) * self.dtype_bytes + values * self.key_bytes


@dataclass
class Tally:
    """Bytes and operations of the run, and the estimate's critical-path phases of lane 0."""

    nbytes: dict[str, float] = field(default_factory=dict)
    ops: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, table: str, key: str, amount: float) -> None:
        counters = getattr(self, table)
        counters[key] = counters.get(key, 0.0) + amount


@dataclass
class AnalyticBounds:
    """Per-step (lower, estimate, upper) and their means, plus the estimate's counters."""

    steps: list[Span3]
    tally: Tally
    fits: bool
    why_not: list[str]

    def mean(self) -> Span3:
        n = max(len(self.steps), 1)
        return Span3(
            sum(s.lower for s in self.steps) / n,
            sum(s.estimate for s in self.steps) / n,
            sum(s.upper for s in self.steps) / n,
        )


class StepModel:
    def __init__(self, prep: Prepared) -> None:
        system = prep.system
        self.system, self.kind, self.batch = system, system_kind(system), prep.batch
        geo, wl = system.geometry, system.workload
        scope = getattr(prep.header, "topk_scope", "query_head")
        self.sizes = ModelSizes(
            geo.layers,
            geo.kv_heads,
            geo.q_heads,
            geo.head_dim,
            geo.hidden,
            geo.intermediate,
            geo.vocab,
            wl.dtype_bytes,
            int(prep.header.k),
            geo.group_size if scope == "query_head" else 1,
        )
        gpu = system.gpu
        self.tp = gpu.count if gpu.parallelism == "tensor" else 1
        self.lanes = gpu.count // self.tp
        self.gpu = GpuRates(gpu, wl.dtype)
        self.drex = (
            DrexRates(system.cem, geo.head_dim, geo.group_size, self.sizes.key_bytes)
            if self.kind == "cem" and isinstance(system.cem, DReXConfig)
            else None
        )
        self.works = prep.works
        # sliding-window layers (Gemma 3): dense over their last local_window keys, on the GPU from HBM,
        # whatever the system; only the full layers' KV lives where kv_location says
        self.local_layers = local_layers(system)
        self.global_layers = geo.layers - len(self.local_layers)
        self.local_window = geo.local_window or 0
        self.tally = Tally()

    # -- GPU work -------------------------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        """Parameters of the kernels that stream weights: per layer before and after attention, LM head."""
        model = self.sizes
        qkv = model.hidden * (model.q_heads + 2 * model.kv_heads) * model.head_dim
        out_mlp = (
            model.q_heads * model.head_dim * model.hidden
            + 3 * model.hidden * model.intermediate
            + 2 * model.hidden
        )  # + norms
        return {"pre": qkv, "post": out_mlp, "head": model.vocab * model.hidden + model.hidden}

    def gpu_kernel(self, nbytes: float, flops: float, fixed: float, count: bool) -> Span3:
        """A kernel of the tensor-parallel group (bytes and FLOPs of the whole group), per GPU."""
        if count:
            self.tally.add("nbytes", "gpu.hbm", nbytes)
            self.tally.add("ops", "gpu.flops", flops)
        return self.gpu.kernel(nbytes / self.tp, flops / self.tp, fixed)

    def attention_kernels(self, works: list[Any], layer: int, count: bool) -> tuple[Span3, Span3, Span3]:
        """(before the offload, overlapping it, after it) on the GPU, for the lane's users at one layer."""
        model, kind = self.sizes, self.kind
        q_dim = model.q_heads * model.head_dim
        per_key = 2.0 * model.group * model.head_dim  # one key against the group's query heads
        if kind in ("hbm_dense", "host_dense", "cem_dense"):
            tokens = float(sum(work.context for work in works))
            nbytes = tokens * model.kv_token_bytes if kind == "hbm_dense" else 0.0  # else over the link
            return ZERO, self.gpu_kernel(nbytes, 4.0 * q_dim * tokens, 0.0, count), ZERO
        dense = float(sum(work.window + work.sinks for work in works))
        if kind.endswith("_window"):
            return ZERO, self.gpu_kernel(dense * model.kv_token_bytes, 4.0 * q_dim * dense, 0.0, count), ZERO
        considered = float(sum(work.considered[layer].sum() for work in works))
        survivors = float(sum(work.survivors[layer].sum() for work in works))
        values = float(sum(work.values[layer].sum() for work in works))
        select_bytes = considered * selection_bytes_per_key(self.system)
        gpu = self.system.gpu
        stages = (  # (work, time per unit): each request's select and attention row, the filter's keys, ...
            (len(works) * model.kv_heads, gpu.sparse_time_per_request),
            (considered, gpu.sparse_time_per_key),
            (survivors, gpu.sparse_time_per_survivor),
            (values, gpu.sparse_time_per_pick),
        )
        pipeline = gpu.sparse_pipeline_latency + sum(n * t for n, t in stages) / self.tp
        window_bytes, window_flops = dense * model.kv_token_bytes, 4.0 * q_dim * dense
        if kind == "hbm_sparse":
            nbytes = window_bytes + select_bytes + (survivors + values) * model.key_bytes
            flops = window_flops + per_key * (survivors + values)
            return ZERO, self.gpu_kernel(nbytes, flops, pipeline, count), ZERO
        window = self.gpu_kernel(window_bytes, window_flops, 0.0, count)
        after = self.gpu_kernel(values * model.key_bytes, per_key * values, 0.0, count)  # softmax + values
        before = ZERO
        if kind == "host_sparse":
            before = self.gpu_kernel(select_bytes, 0.0, pipeline, count)  # the GPU selects (sign bits, pages)
            after = after + self.gpu_kernel(survivors * model.key_bytes, per_key * survivors, 0.0, count)
        return before, window, after

    # -- offloaded attention --------------------------------------------------------------------------
    def cem_requests(
        self, users: list[int], works: dict[int, Any], layer: int
    ) -> list[tuple[int, Span3, float]]:
        """(package, NMA service, response bytes) of every (user, KV head) request at ``layer``."""
        assert self.drex is not None
        cem, model = self.drex.cem, self.sizes
        out = []
        for u in users:
            work = works[u]
            for h in range(model.kv_heads):
                pkg = cem.layout.package_of(u, h, model.kv_heads, cem.packages)
                n, s, v = (
                    float(work.considered[layer, h]),
                    float(work.survivors[layer, h]),
                    float(work.values[layer, h]),
                )
                out.append((pkg, self.drex.service(n, s, v), model.response_bytes(s, v)))
        return out

    def cem_offload(
        self, lane_users: list[int], all_users: list[int], works: dict[int, Any], layer: int
    ) -> Span3:
        link = self.system.link
        assert link is not None and self.drex is not None
        cem = self.drex.cem
        flight = link.latency
        desc = link_seconds(link, self.sizes.group * self.sizes.key_bytes)  # the group's query vectors
        mine = self.cem_requests(lane_users, works, layer)
        if not mine:
            return ZERO
        # estimate: each user alone; its descriptors back to back, each package serving that user's requests
        estimate = 0.0
        for u in lane_users:
            free: dict[int, float] = {}
            ends, resp = [], []
            for j, (pkg, svc, nbytes) in enumerate(self.cem_requests([u], works, layer)):
                arrive = (j + 1) * desc + flight
                free[pkg] = max(free.get(pkg, 0.0), arrive) + svc.estimate
                ends.append(free[pkg])
                resp.append(link_seconds(link, nbytes))
            estimate = max(estimate, fifo_makespan(ends, resp) + flight)
        # lower: the longest lone request, and the busiest resource of this lane's layer
        resp = [link_seconds(link, r) for _, _, r in mine]
        first = desc + flight
        lone = max(first + svc.lower + q for (_, svc, _), q in zip(mine, resp, strict=True))
        per_pkg: dict[int, float] = {}
        for pkg, svc, _ in mine:
            per_pkg[pkg] = per_pkg.get(pkg, 0.0) + svc.lower
        shortest = min(svc.lower for _, svc, _ in mine)
        lower = (
            max(
                lone,
                first + max(per_pkg.values()) + min(resp),
                len(mine) * desc + flight + shortest + min(resp),
                first + shortest + sum(resp),
            )
            + flight
        )
        # upper: every request of the batch in flight at once, behind one another on NMAs and the link
        every = mine if len(all_users) == len(lane_users) else self.cem_requests(all_users, works, layer)
        write_back = link_seconds(link, cem.layout.keys_per_block * self.sizes.kv_token_bytes)
        every_resp = sum(link_seconds(link, r) for _, _, r in every)
        if cem.request_queue_depth >= len(every) and cem.response_buffers >= len(every):
            busy: dict[int, float] = {}
            for pkg, svc, _ in every:
                busy[pkg] = busy.get(pkg, 0.0) + svc.upper
            upper = len(every) * desc + write_back + flight + max(busy.values()) + every_resp + flight
        else:
            upper = write_back + sum(desc + 2 * flight + svc.upper for _, svc, _ in every) + every_resp
        return Span3(lower, estimate, upper)

    def stream_offload(
        self, lane_users: list[int], all_users: list[int], works: dict[int, Any], layer: int
    ) -> Span3:
        """KV streamed to the GPU: from host DDR over PCIe (dense, or the selected keys then the top-k
        values), or every key and value out of the CEM device's LPDDR5X over CXL (dense on the CEM). A
        stream holds the memory and the link together at the slower rate, then pays the flight."""
        link = self.system.link
        assert link is not None
        link_rate = link.bandwidth_per_direction * link.protocol_efficiency
        if self.kind == "cem_dense":
            cem = self.system.cem
            assert isinstance(cem, DReXConfig)
            rate = min(cem.packages * cem.channels_per_package * cem.channel_bandwidth, link_rate)
            flight = link.latency
        else:
            host = self.system.host_memory
            assert host is not None
            rate = min(host.channels * host.channel_bandwidth * host.sustained_efficiency, link_rate)
            flight = host.latency + link.latency
        model = self.sizes

        def streams(u: int) -> list[float]:
            work = works[u]
            if self.kind in ("host_dense", "cem_dense"):
                return [work.context * model.kv_token_bytes]
            return [
                float(work.survivors[layer].sum()) * model.key_bytes,
                float(work.values[layer].sum()) * model.key_bytes,
            ]

        def alone(u: int) -> float:
            return sum(b / rate + flight for b in streams(u) if b > 0)

        mine = [b for u in lane_users for b in streams(u)]
        estimate = max(alone(u) for u in lane_users)
        lower = max(estimate, sum(mine) / rate + flight) if any(b > 0 for b in mine) else 0.0
        every = [b for u in all_users for b in streams(u)]
        upper = sum(b / rate + flight for b in every if b > 0)
        return Span3(lower, estimate, upper)

    # -- one step -------------------------------------------------------------------------------------
    def lane_step(self, lane_users: list[int], step: int, main: bool) -> tuple[Span3, float]:
        """(step span of this lane, its device + link work that could delay other lanes)."""
        n = len(self.works)
        works = {u: self.works[(step + u) % n] for u in range(self.batch)}
        lane_works = [works[u] for u in lane_users]
        users = len(lane_users)
        params = self.weights()
        dtype_bytes, geo = self.sizes.dtype_bytes, self.system.geometry
        total = ZERO
        phases: dict[str, float] = {}

        def phase(name: str, t: float) -> None:
            phases[name] = phases.get(name, 0.0) + t

        shared_work = 0.0
        peer = self.system.gpu.peer_link
        for layer in range(self.sizes.layers):
            pre = self.gpu_kernel(params["pre"] * dtype_bytes, 2.0 * params["pre"] * users, 0.0, main)
            if layer in self.local_layers:
                tokens = float(sum(min(self.local_window, work.context) for work in lane_works))
                q_dim = self.sizes.q_heads * self.sizes.head_dim
                before, after = ZERO, ZERO
                parallel = self.gpu_kernel(
                    tokens * self.sizes.kv_token_bytes, 4.0 * q_dim * tokens, 0.0, main
                )
            else:
                before, parallel, after = self.attention_kernels(lane_works, layer, main)
            post = self.gpu_kernel(params["post"] * dtype_bytes, 2.0 * params["post"] * users, 0.0, main)
            if layer in self.local_layers:
                offload = ZERO
            elif self.kind == "cem":
                offload = self.cem_offload(lane_users, list(range(self.batch)), works, layer)
            elif self.kind in ("host_dense", "host_sparse", "cem_dense"):
                offload = self.stream_offload(lane_users, list(range(self.batch)), works, layer)
            else:
                offload = ZERO
            shared_work += offload.upper
            reduce = 0.0
            if self.tp > 1 and peer is not None:
                nbytes = users * geo.hidden * dtype_bytes
                reduce = 2 * ring_allreduce_seconds(peer, nbytes, self.tp)  # after attention, after the MLP
                if main:
                    self.tally.add("nbytes", "gpu.peer_link", 2 * 2 * (self.tp - 1) * nbytes / self.tp)
            overhead = self.system.gpu.layer_overhead
            attention = Span3(
                max(parallel.lower, offload.lower),
                max(parallel.estimate, offload.estimate),
                max(parallel.upper, offload.upper),
            )
            total = total + pre + before + attention + after + post + _const(reduce + overhead)
            phase("projection", pre.estimate + post.estimate)
            phase("attention_gpu", before.estimate + parallel.estimate + after.estimate)
            phase("attention_wait", attention.estimate - parallel.estimate)
            phase("all_reduce", reduce)
            phase("layer_overhead", overhead)
        head = self.gpu_kernel(params["head"] * dtype_bytes, 2.0 * params["head"] * users, 0.0, main)
        phase("projection", head.estimate)
        per_step = self.system.gpu.step_overhead  # host work once per step, on every lane
        phase("step_overhead", per_step)
        if main:
            for k, v in phases.items():
                self.tally.add("phases", k, v)
        return total + head + _const(per_step), shared_work

    def step(self, step: int) -> Span3:
        lanes = [[u for u in range(self.batch) if u % self.lanes == g] for g in range(self.lanes)]
        spans: list[Span3] = []
        shared: list[float] = []
        for g, users in enumerate(lanes):
            if users:
                # the counters count every lane's kernels (lane 0's phases only)
                s, work = self.lane_step(users, step, main=True) if g == 0 else self._other_lane(users, step)
                spans.append(s)
                shared.append(work)
        lower = max(s.lower for s in spans)
        estimate = max(s.estimate for s in spans)
        upper = max(s.upper for s in spans)
        if len(spans) > 1 and self.kind != "hbm_dense" and self.kind != "hbm_sparse":
            upper += sum(shared)  # lanes share the device and the link: each may wait for all the others
        self.count_device_work(step)
        return Span3(lower, estimate, upper)

    def _other_lane(self, users: list[int], step: int) -> tuple[Span3, float]:
        saved = self.tally.phases.copy()
        out = self.lane_step(users, step, main=True)
        self.tally.phases = saved  # phases are lane 0's critical path; bytes and FLOPs count every lane
        return out

    def count_device_work(self, step: int) -> None:
        """Bytes and operations off the GPU: links, DReX, host memory, KV write-back (per step)."""
        model, n_works = self.sizes, len(self.works)
        add = self.tally.add
        for u in range(self.batch):
            work = self.works[(step + u) % n_works]
            surv, vals = float(work.survivors.sum()), float(work.values.sum())
            if self.kind == "cem" and self.drex is not None:
                drex = self.drex
                blocks = sum(
                    math.ceil(float(c) / drex.keys_per_block) for c in work.considered.ravel()
                )  # one Key Block per bank per epoch
                requests = self.global_layers * model.kv_heads
                add("nbytes", "link.to_device", requests * model.group * model.key_bytes)
                resp = sum(
                    model.response_bytes(float(s), float(v))
                    for s, v in zip(work.survivors.ravel(), work.values.ravel(), strict=True)
                )
                add("nbytes", "link.to_host", resp)
                add("nbytes", "cem.lpddr", (surv + vals) * model.key_bytes)
                add("nbytes", "cem.bitmaps", blocks * drex.keys_per_block / BITS_PER_BYTE * drex.passes)
                add("nbytes", "cem.scratchpad", 2 * surv * drex.cem.nma.address_bytes)  # written, then read
                add("ops", "cem.pfu_seconds", blocks * drex.bitmap_generation)
                add("ops", "cem.nma_macs", surv * model.head_dim * model.group)
            elif self.kind in ("host_dense", "cem_dense"):
                nbytes = work.context * model.kv_token_bytes * self.global_layers
                add("nbytes", "host_memory" if self.kind == "host_dense" else "cem.lpddr", nbytes)
                add("nbytes", "link.to_host", nbytes)
            elif self.kind == "host_sparse":
                add("nbytes", "host_memory", (surv + vals) * model.key_bytes)
                add("nbytes", "link.to_host", (surv + vals) * model.key_bytes)
        if self.kind.startswith(("cem", "host")):
            nbytes = (
                self.batch * self.global_layers * model.kv_token_bytes
            )  # one new token per user, written where KV lives
            add("nbytes", "link.to_device", nbytes)
            add("nbytes", "cem.lpddr_write" if self.kind.startswith("cem") else "host_memory", nbytes)


# -- capacity and energy ----------------------------------------------------------------------------------


def capacity(system: SystemConfig, kind: str, context: int, batch: int, window: int, sinks: int) -> list[str]:
    """Why the workload does not fit (empty when it does)."""
    geo, dtype_bytes, gpu = system.geometry, system.workload.dtype_bytes, system.gpu
    tp = gpu.count if gpu.parallelism == "tensor" else 1
    local = len(local_layers(system))
    full = geo.layers - local  # full-attention layers: their KV lives where kv_location says
    layer_token = 2 * geo.kv_heads * geo.head_dim * dtype_bytes
    kv_token = full * layer_token
    sign_token = full * geo.kv_heads * geo.head_dim / BITS_PER_BYTE  # DReX keeps sign bits by the keys
    select_token = full * geo.kv_heads * selection_bytes_per_key(system)  # the GPU's selection data
    local_kv = local * min(geo.local_window or 0, context) * layer_token  # sliding layers: in HBM, capped
    users_per_gpu = batch if tp > 1 else math.ceil(batch / gpu.count)
    in_hbm = context if kind.startswith("hbm") else min(window + sinks, context)
    per_user = (
        in_hbm * kv_token
        + local_kv
        + (context * select_token if kind in ("hbm_sparse", "host_sparse") else 0.0)
    )
    need = (geo.weight_params() * dtype_bytes + users_per_gpu * per_user) / tp
    out = []
    if need > gpu.hbm.capacity:
        out.append(f"GPU HBM: {need:.4g} B needed per GPU, {gpu.hbm.capacity:.4g} B present")
    if kind.startswith("host") and system.host_memory is not None:
        need = batch * context * kv_token
        if need > system.host_memory.capacity:
            out.append(f"host memory: {need:.4g} B of KV, {system.host_memory.capacity:.4g} B present")
    if kind.startswith("cem") and isinstance(system.cem, DReXConfig):
        need = batch * context * (kv_token + sign_token)
        have = system.cem.packages * system.cem.package_capacity
        if need > have:
            out.append(f"CEM device: {need:.4g} B of KV and sign bits, {have:.4g} B present")
    return out


def energy(system: SystemConfig, tally: Tally, seconds: float) -> dict[str, float]:
    """Joules over the run, by component (same keys as the DES's result)."""
    nb, ops, gpu = tally.nbytes, tally.ops, system.gpu
    out = {
        "gpu.compute": ops.get("gpu.flops", 0.0) * gpu.energy_per_flop,
        "gpu.hbm": nb.get("gpu.hbm", 0.0) * BITS_PER_BYTE * gpu.hbm.energy_per_bit,
        "gpu.static": gpu.idle_power * gpu.count * seconds,
    }
    if gpu.peer_link is not None and gpu.count > 1:
        out["gpu.peer_link"] = nb.get("gpu.peer_link", 0.0) * BITS_PER_BYTE * gpu.peer_link.energy_per_bit
    if system.link is not None:
        moved = nb.get("link.to_device", 0.0) + nb.get("link.to_host", 0.0)
        out["link"] = moved * BITS_PER_BYTE * system.link.energy_per_bit
    host = system.host_memory
    if host is not None and system.kv_location == "host_memory":
        out["host_memory.dynamic"] = nb.get("host_memory", 0.0) * BITS_PER_BYTE * host.energy_per_bit
        out["host_memory.static"] = host.static_power * seconds
    cem = system.cem
    if isinstance(cem, DReXConfig) and system.kv_location == "cem":
        dram = nb.get("cem.lpddr", 0.0) + nb.get("cem.bitmaps", 0.0) + nb.get("cem.lpddr_write", 0.0)
        out["cem.dram"] = dram * BITS_PER_BYTE * cem.dram_energy_per_bit
        out["cem.pfu"] = ops.get("cem.pfu_seconds", 0.0) * cem.pfu.power
        out["cem.nma"] = ops.get("cem.nma_macs", 0.0) * cem.nma.ops_per_lane_per_cycle * cem.nma.energy_per_op
        out["cem.scratchpad"] = (
            nb.get("cem.scratchpad", 0.0) * BITS_PER_BYTE * cem.nma.scratchpad_energy_per_bit
        )
        out["cem.static"] = cem.packages * (cem.package_static_power + cem.nma.idle_power) * seconds
    return out


def peak_bandwidth(system: SystemConfig) -> dict[str, float]:
    gpu = system.gpu
    out = {"gpu.hbm": gpu.hbm.peak_bandwidth * gpu.count}
    if system.link is not None:
        out["link.to_device"] = out["link.to_host"] = system.link.bandwidth_per_direction
    if gpu.peer_link is not None and gpu.count > 1:
        out["gpu.peer_link"] = 2 * gpu.peer_link.bandwidth_per_direction
    if system.host_memory is not None and system.kv_location == "host_memory":
        out["host_memory"] = system.host_memory.channels * system.host_memory.channel_bandwidth
    if isinstance(system.cem, DReXConfig) and system.kv_location == "cem":
        out["cem.lpddr"] = (
            system.cem.packages * system.cem.channels_per_package * system.cem.channel_bandwidth
        )
    return out


# -- entry points -----------------------------------------------------------------------------------------


def analytic_bounds(prep: Prepared, *, steps: int | None = None) -> AnalyticBounds:
    """Lower bound, point estimate and upper bound of every replayed decode step (see the module doc)."""
    kind = system_kind(prep.system)
    first = prep.works[0]
    why_not = capacity(prep.system, kind, prep.context, prep.batch, first.window, first.sinks)
    model = StepModel(prep)
    if why_not:
        return AnalyticBounds([], model.tally, False, why_not)
    n = steps if steps is not None else len(prep.works)
    return AnalyticBounds([model.step(i) for i in range(n)], model.tally, True, [])


def analytic(prep: Prepared, *, steps: int | None = None) -> SimResult:
    """The point estimate as a result (``model="analytic"``), with the bounds in ``latency_bounds_s``."""
    bounds = analytic_bounds(prep, steps=steps)
    res = SimResult(
        system=prep.system.name,
        model="analytic",
        kind=system_kind(prep.system),
        context_tokens=prep.context,
        batch=prep.batch,
        steps=0,
        fits=bounds.fits,
        why_not=list(bounds.why_not),
        context_scaled_from=prep.trace_context if prep.trace_context != prep.context else None,
    )
    if not bounds.fits or not bounds.steps:
        return res
    n = len(bounds.steps)
    total = sum(s.estimate for s in bounds.steps)
    tokens = n * prep.batch
    tally = bounds.tally
    res.steps = n
    res.step_latencies_s = [s.estimate for s in bounds.steps]
    res.latency_per_token_s = total / n
    res.throughput_tokens_per_s = tokens / total
    mean = bounds.mean()
    res.latency_bounds_s = {"lower": mean.lower, "upper": mean.upper}
    res.energy_breakdown_j = {k: v / tokens for k, v in energy(prep.system, tally, total).items()}
    res.energy_per_token_j = sum(res.energy_breakdown_j.values())
    res.time_breakdown_s = {k: v / n for k, v in tally.phases.items() if v > 0}
    util = {}
    for key, peak in peak_bandwidth(prep.system).items():
        moved = tally.nbytes.get(key, 0.0)
        if key == "cem.lpddr":
            moved += tally.nbytes.get("cem.bitmaps", 0.0) + tally.nbytes.get("cem.lpddr_write", 0.0)
        util[key] = min(1.0, moved / (peak * total))
    res.bandwidth_utilization = util
    res.bytes_moved = {k: v / tokens for k, v in tally.nbytes.items() if v > 0}
    return res
