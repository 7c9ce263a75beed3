"""A real, closed-form evaluate function for testing the sweep machinery without the SimPy simulator:
a decode step streams the weights and the KV cache from wherever they live, at sustained bandwidth.
Set CEMSIM_TEST_EVAL_LOG to a file to log every call (resume tests count them) and CEMSIM_TEST_EVAL_SLEEP
to slow each point down (kill tests)."""

from __future__ import annotations

import os
import time
from typing import Any

from cemsim.errors import CemsimError
from cemsim.sweep.expand import PointTask


def evaluate(task: PointTask) -> dict[str, Any]:
    if log := os.environ.get("CEMSIM_TEST_EVAL_LOG"):
        with open(log, "a") as fh:
            fh.write(task.point_id + "\n")
    if delay := float(os.environ.get("CEMSIM_TEST_EVAL_SLEEP", "0")):
        time.sleep(delay)
    s = task.system
    assert s is not None
    w = s.workload
    if w.attention.policy == "quest":
        raise CemsimError("the roofline evaluator has no model of Quest's page metadata")
    hbm_bw = s.gpu.hbm.peak_bandwidth * s.gpu.hbm.sustained_efficiency * s.gpu.count
    weights = s.geometry.weight_params() * w.dtype_bytes
    kv = s.geometry.kv_bytes_per_token(w.dtype_bytes) * w.context * w.batch
    if s.kv_location == "hbm":
        capacity, kv_bw, kv_comp = s.gpu.hbm.capacity * s.gpu.count - weights, hbm_bw, "gpu.hbm"
    elif s.kv_location == "host_memory":
        capacity, kv_comp = s.host_memory.capacity, "host_memory"
        kv_bw = min(
            s.link.bandwidth_per_direction * s.link.protocol_efficiency,
            s.host_memory.channels * s.host_memory.channel_bandwidth * s.host_memory.sustained_efficiency,
        )
    else:
        cem = s.cem
        capacity, kv_comp = cem.packages * cem.package_capacity, "cem"
        kv_bw = cem.packages * cem.channels_per_package * cem.channel_bandwidth
    fits = kv <= capacity
    t_weights, t_kv = weights / hbm_bw, kv / kv_bw
    step = t_weights + t_kv + s.gpu.layer_overhead * s.geometry.layers
    e_hbm = weights * 8 * s.gpu.hbm.energy_per_bit / w.batch
    e_kv = kv * 8 * 4e-12 / w.batch
    return {
        "system": s.name,
        "context_tokens": w.context,
        "batch": w.batch,
        "fits": fits,
        "fits_reason": None if fits else f"KV cache {kv / 1e9:.1f} GB > {capacity / 1e9:.1f} GB",
        "latency_per_token_s": step if fits else None,
        "throughput_tokens_per_s": w.batch / step if fits else None,
        "energy_per_token_j": (e_hbm + e_kv) if fits else None,
        "energy_breakdown_j": {"gpu": e_hbm, kv_comp.split(".")[0] if kv_comp != "gpu.hbm" else "hbm": e_kv},
        "time_breakdown_s": {
            "weights": t_weights,
            "attention": t_kv,
            "overhead": s.gpu.layer_overhead * s.geometry.layers,
        },
        "bandwidth_utilization": {
            "gpu.hbm": min(1.0, (weights / step) / (s.gpu.hbm.peak_bandwidth * s.gpu.count))
        },
        "bytes_moved": {"weights": weights, "kv": kv},
    }
