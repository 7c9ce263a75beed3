"""What one layer of one decode step asks of each component, by system kind (the DES's; the analytic model
writes its own, analytic.py).

Kinds (from kv_location and the attention policy; settings.py checks the policy against the trace):
  hbm_dense    every key and value read from HBM by the GPU
  hbm_sparse   a selecting policy on the GPU: window + sinks, the selection's metadata for every considered
               key (LongSight: sign bits; Quest: page min/max; oracle-topk: none), the selected keys and the
               top-k values from HBM
  host_dense   every key and value streamed from host DDR5 over PCIe; the GPU attends as it arrives
  cem_dense    every key and value read out of the CEM device's LPDDR5X over CXL (no filtering), likewise
  host_sparse  selection metadata and window in HBM (GPU selects), selected keys then top-k values over PCIe
  cem          window + sinks on the GPU from HBM, overlapped with DReX requests over CXL (LongSight; the
               oracle's exact top-k as DReX's survivors: an upper bound)
  *_window     window policy: window + sinks from HBM, where every system keeps them; nothing else read
Amounts are (name, HBM bytes, FLOPs) of GPU kernels; tensor parallel divides the GPU side by tp.
"""

from __future__ import annotations

from dataclasses import dataclass

from cemsim.config.components import GPUConfig
from cemsim.config.system import SystemConfig
from cemsim.errors import CemsimError
from cemsim.sim.work import StepWork
from cemsim.trace.records import TraceHeader

GpuOp = tuple[str, float, float, float]  # (name, HBM bytes, FLOPs, fixed seconds beyond the roofline)


def system_kind(system: SystemConfig) -> str:
    policy = system.workload.attention.policy
    dense = policy == "dense"
    where = {"hbm": "hbm", "host_memory": "host", "cem": "cem"}[system.kv_location]
    if policy == "window":
        return f"{where}_window"
    if system.kv_location == "hbm":
        return "hbm_dense" if dense else "hbm_sparse"
    if system.kv_location == "host_memory":
        return "host_dense" if dense else "host_sparse"
    if system.cem is None or system.cem.impl != "drex":
        raise CemsimError(f"system {system.name!r}: the simulator models CEM impl 'drex' only")
    if dense:
        return "cem_dense"
    return "cem"


@dataclass(frozen=True)
class Sizes:
    key_bytes: int  # one key (or value) vector of one KV head
    sign_bytes: float  # one key's sign bits
    q_heads: int
    kv_heads: int
    group: int
    head_dim: int
    layers: int
    dtype_bytes: int
    scores_per_key: int  # top-k scores returned per kept key (query_head scope: one per query of the group)
    policy: str = "longsight"
    select_bytes_per_key: float = 0.0  # HBM bytes the GPU reads per considered key to select (see module doc)
    # Sliding-window (local) layers of local/global models (Gemma 3): their KV stays in HBM and they attend
    # densely to their last ``local_window`` keys on the GPU, whatever the system; only the other (global)
    # layers' KV lives where kv_location says and is served there.
    local_layers: frozenset[int] = frozenset()
    local_window: int = 0

    @property
    def global_layers(self) -> int:
        return self.layers - len(self.local_layers)

    @property
    def kv_token_bytes(self) -> int:  # K and V of one token, one layer, all KV heads
        return 2 * self.key_bytes * self.kv_heads

    def request_bytes(self) -> float:
        """A DReX request descriptor: the group's query vectors."""
        return self.group * self.key_bytes

    def response_bytes(self, k: int, survivors: int, values: int) -> float:
        return self.scores_per_key * min(k, survivors) * self.dtype_bytes + values * self.key_bytes


def selection_bytes_per_key(policy: str, head_dim: int, dtype_bytes: int, page_size: int) -> float:
    """What the GPU reads per considered key to choose the keys it fetches: LongSight's sign bits, Quest's
    page bounds (a min and a max vector per page), nothing for the oracle (it knows: an upper bound)."""
    if policy == "longsight":
        return head_dim / 8
    if policy == "quest":
        return 2 * head_dim * dtype_bytes / page_size
    return 0.0


def workload_sizes(system: SystemConfig, header: TraceHeader) -> Sizes:
    """``header``: the replayed one (settings applied: k, topk_scope)."""
    geo, dtype_bytes = system.geometry, system.workload.dtype_bytes
    att = system.workload.attention
    local = frozenset(i for i, t in enumerate(geo.layer_types or ()) if t == "sliding")
    traced = frozenset(header.sliding_layers)
    if local != traced or (local and geo.local_window != header.local_window):
        raise CemsimError(
            f"the trace's sliding-window layers {sorted(traced)} (window {header.local_window}) differ from "
            f"the workload geometry {geo.name!r}'s {sorted(local)} (window {geo.local_window}); capture or "
            "project a trace for this model, or set workload.model to its geometry preset"
        )
    return Sizes(
        key_bytes=geo.head_dim * dtype_bytes,
        sign_bytes=geo.head_dim / 8,
        q_heads=geo.q_heads,
        kv_heads=geo.kv_heads,
        group=geo.group_size,
        head_dim=geo.head_dim,
        layers=geo.layers,
        dtype_bytes=dtype_bytes,
        scores_per_key=geo.group_size if header.topk_scope == "query_head" else 1,
        policy=att.policy,
        select_bytes_per_key=selection_bytes_per_key(att.policy, geo.head_dim, dtype_bytes, att.page_size),
        local_layers=local,
        local_window=geo.local_window or 0,
    )


@dataclass
class LayerPlan:
    before: list[GpuOp]  # GPU kernels before the attention's offload starts
    parallel: list[GpuOp]  # GPU kernels that overlap the offload
    after: list[GpuOp]  # after every offloaded result is in (softmax + weighted values of the sparse part)


def layer_plan(
    kind: str, sizes: Sizes, works: list[StepWork], layer: int, tp: int, gpu: GPUConfig
) -> LayerPlan:
    key_bytes, kv_heads = sizes.key_bytes, sizes.kv_heads
    query_dim = sizes.q_heads * sizes.head_dim  # every query head's vector: the FLOPs of one key
    if layer in sizes.local_layers:  # dense within its window, from HBM, in every kind of system
        tokens = sum(min(sizes.local_window, w.context) for w in works)
        nbytes = tokens * kv_heads * 2 * key_bytes
        return LayerPlan([], [("local_attention", nbytes / tp, 4.0 * query_dim * tokens / tp, 0.0)], [])
    before: list[GpuOp] = []
    after: list[GpuOp] = []
    if kind in ("hbm_dense", "host_dense", "cem_dense"):
        context = sum(w.context for w in works)
        # host_dense, cem_dense: the KV arrives over the link, not from HBM
        nbytes = context * kv_heads * 2 * key_bytes if kind == "hbm_dense" else 0.0
        return LayerPlan([], [("attention", nbytes / tp, 4.0 * query_dim * context / tp, 0.0)], [])
    dense_tokens = sum(w.window + w.sinks for w in works)
    considered = float(sum(w.considered[layer].sum() for w in works))
    survivors = float(sum(w.survivors[layer].sum() for w in works))
    values = float(sum(w.values[layer].sum() for w in works))
    window = (
        "window_attention",
        dense_tokens * kv_heads * 2 * key_bytes / tp,
        4.0 * query_dim * dense_tokens / tp,
        0.0,
    )
    if kind.endswith("_window"):
        return LayerPlan([], [window], [])
    # the GPU's own selection + gather pipeline (hbm_sparse, host_sparse): a fixed cost and one per unit of
    # each stage's work (GPUConfig), calibrated on LongSight's (cemsim/calibration) and charged alike to
    # Quest and the oracle
    requests = float(len(works) * kv_heads)
    pipeline = (
        gpu.sparse_pipeline_latency
        + (
            requests * gpu.sparse_time_per_request
            + considered * gpu.sparse_time_per_key
            + survivors * gpu.sparse_time_per_survivor
            + values * gpu.sparse_time_per_pick
        )
        / tp
    )
    group_flops_per_key = 2.0 * sizes.group * sizes.head_dim  # one key against the group's queries
    select = considered * sizes.select_bytes_per_key
    if kind == "hbm_sparse":
        nbytes = window[1] + (select + (survivors + values) * key_bytes) / tp
        flops = window[2] + group_flops_per_key * (survivors + values) / tp
        return LayerPlan([], [("sparse_attention", nbytes, flops, pipeline)], [])
    if kind == "host_sparse":
        name = {"longsight": "sign_filter", "quest": "page_select"}.get(sizes.policy, "select")
        before.append((name, select / tp, 0.0, pipeline))
        # scoring the gathered survivor keys on the GPU: they land in HBM, are read once
        after.append(
            ("score_survivors", survivors * key_bytes / tp, group_flops_per_key * survivors / tp, 0.0)
        )
    after.append(("combine", values * key_bytes / tp, group_flops_per_key * values / tp, 0.0))
    return LayerPlan(before, [window], after)


def kv_write_bytes_per_step(sizes: Sizes, users: int) -> float:
    """New tokens' K and V over the link per decode step, amortized (sent in groups, off the critical path)."""
    return users * sizes.global_layers * sizes.kv_token_bytes  # local layers' KV stays in HBM
