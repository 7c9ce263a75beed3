"""Does the workload fit? Weights, KV and sign bits against each memory; if not, why and how many GPUs.

A system that does not fit is a result ("does not fit: ..."), not an error: sweeps plot it as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig
from cemsim.config.units import format_quantity
from cemsim.sim.plan import Sizes


@dataclass
class FitReport:
    fits: bool
    why_not: list[str] = field(default_factory=list)
    gpus_needed: int | None = None  # GPUs (tensor parallel) that would hold what overflows HBM
    memory: dict[str, dict[str, float]] = field(default_factory=dict)  # component -> {need, have} bytes


def _gb(n: float) -> str:
    return format_quantity(n, "bytes")


def check_fit(
    system: SystemConfig, kind: str, sizes: Sizes, context: int, batch: int, window: int, sinks: int
) -> FitReport:
    gpu = system.gpu
    tp = gpu.count if gpu.parallelism == "tensor" else 1
    users_per_gpu = batch if tp > 1 else math.ceil(batch / gpu.count)
    weights = system.geometry.weight_params() * sizes.dtype_bytes
    # Global (full-attention) layers' KV lives where kv_location says; sliding-window layers' KV, capped at
    # their window, always stays in HBM (Gemma 3: 15 of 18 layers hold 512 tokens each).
    glob = sizes.global_layers
    kv_token = glob * sizes.kv_token_bytes
    sign_token = glob * sizes.kv_heads * sizes.sign_bytes  # DReX keeps sign bits beside the keys
    select_token = glob * sizes.kv_heads * sizes.select_bytes_per_key  # the GPU's selection data
    local_kv = len(sizes.local_layers) * min(sizes.local_window, context) * sizes.kv_token_bytes
    hbm_tokens = context if kind.startswith("hbm") else min(window + sinks, context)
    hbm_user = (
        hbm_tokens * kv_token
        + local_kv
        + (context * select_token if kind in ("hbm_sparse", "host_sparse") else 0)
    )
    hbm_need = (weights + users_per_gpu * hbm_user) / tp
    rep = FitReport(True)
    rep.memory["gpu.hbm"] = {"need": hbm_need, "have": gpu.hbm.capacity}
    if hbm_need > gpu.hbm.capacity:
        rep.fits = False
        total = weights + batch * hbm_user
        rep.gpus_needed = math.ceil(total / gpu.hbm.capacity)
        rep.why_not.append(
            f"GPU HBM: weights {_gb(weights / tp)} + KV{' and sign bits' if 'sparse' in kind else ''} "
            f"{_gb(users_per_gpu * hbm_user / tp)} for {users_per_gpu} user(s) at {context} tokens need "
            f"{_gb(hbm_need)} per GPU, over its {_gb(gpu.hbm.capacity)}; it would take {rep.gpus_needed} GPUs "
            "(tensor parallel)"
        )
    if kind.startswith("host") and system.host_memory is not None:
        need = batch * context * kv_token
        rep.memory["host_memory"] = {"need": need, "have": system.host_memory.capacity}
        if need > system.host_memory.capacity:
            rep.fits = False
            rep.why_not.append(
                f"host memory: KV of {batch} user(s) at {context} tokens is {_gb(need)}, over "
                f"its {_gb(system.host_memory.capacity)}"
            )
    if kind.startswith("cem") and isinstance(system.cem, DReXConfig):
        cem = system.cem
        have = cem.packages * cem.package_capacity
        need = batch * context * (kv_token + sign_token)
        rep.memory["cem"] = {"need": need, "have": have}
        if need > have:
            rep.fits = False
            rep.why_not.append(
                f"CEM device: KV and sign bits of {batch} user(s) at {context} tokens are "
                f"{_gb(need)}, over its {_gb(have)}"
            )
    return rep
