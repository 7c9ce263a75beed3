"""Statistics of one replay: bandwidth, latency percentiles, row-hit rates, command counts and energy.

Latency basis follows the reference data set (dram-reference/README.md): open loop, acceptance -> data
return (the source is backpressured, so acceptance is its arrival); closed loop, the client's issue of the
key -> data return. ``read_latency_from_arrival_*`` is always the client's issue -> return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cemsim.dram import kernel_state as K
from cemsim.dram.timing import COMMAND_NAMES

if TYPE_CHECKING:
    from cemsim.dram.replay import DramResult


def _lat(values: np.ndarray, tck: float, prefix: str) -> dict[str, float]:
    if values.size == 0:
        return {f"mean_{prefix}_s": 0.0, f"p50_{prefix}_s": 0.0, f"p95_{prefix}_s": 0.0}
    v = values.astype(np.float64) * tck
    return {
        f"mean_{prefix}_s": float(v.mean()),
        f"p50_{prefix}_s": float(np.percentile(v, 50)),
        f"p95_{prefix}_s": float(np.percentile(v, 95)),
    }


def summarize(res: DramResult) -> dict[str, Any]:
    spec = res.spec
    tck = spec.tck_s
    reads = res.kind == 0
    n_reads = int(reads.sum())
    ends = res.counts[:, K.C_END]
    end_tick = int(res.done.max()) + 1 if res.done.size else 0
    simulated_s = end_tick * tck
    read_bytes = n_reads * spec.burst_bytes
    rbw = read_bytes / simulated_s if simulated_s > 0 else 0.0
    basis = res.issued if res.closed_loop else res.accepted
    out: dict[str, Any] = {
        "spec": spec.name,
        "controller": spec.controller.name,
        "requests": int(res.done.size),
        "reads": n_reads,
        "writes": int((res.kind == 1).sum()),
        "internal_ops": int((res.kind == 2).sum()),
        "channels": int(res.counts.shape[0]),
        "read_bandwidth_bytes_per_s": rbw,
        "read_fraction_of_peak": rbw / (spec.channel_peak_bytes_per_s * res.counts.shape[0]),
        "latency_basis": "key issue -> data return" if res.closed_loop else "acceptance -> data return",
    }
    out.update(_lat((res.done - basis)[reads], tck, "read_latency"))
    out.update(_lat((res.done - res.issued)[reads], tck, "read_latency_from_arrival"))
    c = res.counts.sum(axis=0)
    served = int(c[K.C_READS])
    out["row_hit_rate"] = float(c[K.C_READ_HITS]) / served if served else 0.0
    cls = res.row_class[reads]
    out["row_hit_rate_first_command"] = float((cls == 0).mean()) if cls.size else 0.0
    out["row_misses"] = int((cls == 1).sum())
    out["row_conflicts"] = int((cls == 2).sum())
    commands = {name: int(c[i]) for i, name in enumerate(COMMAND_NAMES)}
    commands["PRE_auto"] = int(c[K.C_AUTO_PRE])
    out["commands"] = commands
    out["simulated_s"] = simulated_s
    out["end_tick_per_channel"] = [int(e) + 1 for e in ends]
    e = spec.energy
    nch = res.counts.shape[0]
    rank_ticks = spec.pseudo_channels * spec.ranks * end_tick * nch
    active = min(float(c[K.C_RANK_ACTIVE]), float(rank_ticks))
    out["rank_active_fraction"] = active / rank_ticks if rank_ticks else 0.0
    if e.precharge_standby_w > 0:
        frac = out["rank_active_fraction"]
        active_j = e.background_w * frac * simulated_s * nch
        precharge_j = e.precharge_standby_w * (1.0 - frac) * simulated_s * nch
    else:
        active_j, precharge_j = e.background_w * simulated_s * nch, 0.0
    parts = {
        "activate_j": e.act_j * commands["ACT"],
        "read_j": e.read_j * commands["RD"],
        "write_j": e.write_j * commands["WR"],
        "refresh_j": e.refresh_j * commands["REF"],
        "active_standby_j": active_j,
        "precharge_standby_j": precharge_j,
    }
    out["energy_j"] = float(sum(parts.values()))
    out["energy_breakdown_j"] = parts
    out["energy_source"] = e.source
    out["wall_s"] = res.wall_s
    n_cmds = sum(commands[k] for k in COMMAND_NAMES)
    out["dram_commands"] = n_cmds
    out["engine_events"] = int(c[K.C_EVENTS])
    return out
