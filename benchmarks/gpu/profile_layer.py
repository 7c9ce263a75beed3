"""One fused layer (planted 5 % survival, Llama-3-8B geometry), for looking inside it on the device.

Nsight Compute (the first run compiles and warms; ncu's filter skips its kernels and profiles the second's):

    ncu --clock-control none -k regex:'ls_select|ls_topk' --launch-skip 2 --launch-count 2 \\
        --section SpeedOfLight ... \\
        python3 benchmarks/gpu/profile_layer.py --ctx 131072 --config fused4/sample/64/fold/pdl

Phase trace (``--trace``): the kernels built with -DLS_TRACE, the layer replayed from its CUDA graph, then the
thread-0 timestamps of every ls_select2 / ls_topk_sample block (kernels/longsight_fused.cu LS_MARK) summarised:
median cycles of each phase, and from %globaltimer when each kernel's blocks started and ended relative to the
first select block's start (the band's attention blocks too: start, and partials counted), and how many top-k
blocks merged their head at once, counted and merged, or only counted their partial. The traced layer replays one
input set, so part of it is in L2; ``--graph-layers N`` also records N layers into one graph, each from its own
traced build and input set (every layer keeps its own marks), and gives when each layer's kernels ran and the gap
between layers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fused import PLANTED_THRESHOLD, Data, parse_config_key, shape_for, use_build

from cemsim.atomic import atomic_write_text
from cemsim.gpu import fused

SELECT_PHASES = ["query in smem", "filtered+compacted", "claimed (+1st row loads)", "rows scored"]
# kernels/longsight_fused.cu's trace arrays (built with -DLS_TRACE)
TRACE_SHAPES = {"ls_trace_select": (4096, 8), "ls_trace_topk": (1024, 15), "ls_trace_band": (4096, 7)}
# ls_trace_topk column 12: which way the block's partial of the picks went (topk_attend)
MERGE_PATHS = {1: "merged at once", 2: "counted, merged", 3: "counted"}
TOPK_PHASES = [
    "count read",
    "threshold sampled",
    "candidates",
    "range",
    "radix passes",
    "collect",
    "attend+merge",
]
# ls_trace_band columns 2-6 (SM clock cycles at the band block's phase boundaries)
BAND_PHASES = ["query in smem", "scores + softmax", "values summed", "partials written + counted"]


def replay_traced(cp, graph, mods: list, stream, replays: int) -> list[tuple]:
    """``graph`` replayed ``replays`` times, then once more with every traced module's arrays zeroed: per module
    of ``mods``, its (select, top-k, band) trace rows that this replay wrote."""
    for _ in range(replays):
        graph.launch(stream)
    stream.synchronize()
    for mod in mods:
        for name, shape in TRACE_SHAPES.items():
            cp.ndarray(shape, cp.int64, mod.get_global(name)).fill(0)
    graph.launch(stream)
    stream.synchronize()
    out = []
    for mod in mods:
        arrs = [
            cp.ndarray(shape, cp.int64, mod.get_global(name)).get() for name, shape in TRACE_SHAPES.items()
        ]
        out.append(tuple(a[a[:, 0] > 0] for a in arrs))
    return out


def layer_spans(traces: list[tuple]) -> list[dict]:
    """Per layer of a graph (one traced module each, in graph order), %globaltimer ns from the first layer's first
    select block: its select blocks' first start and last end, its top-k blocks' first start and last end (either
    block of a fan pair), its band blocks' last count, and the gap from the previous layer's last top-k block end
    to this layer's first select block start."""
    t0 = min(int(sel[:, 0].min()) for sel, _, _ in traces if len(sel))
    out, prev_end = [], None
    for sel, top, band in traces:
        row: dict = {}
        if len(sel):
            row["select_ns"] = [float(sel[:, 0].min() - t0), float(sel[sel[:, 6] > 0, 6].max() - t0)]
        if len(top):
            ends = np.concatenate([top[:, 9], top[top[:, 14] > 0, 14]])
            row["topk_ns"] = [float(top[:, 0].min() - t0), float(ends.max() - t0)]
            row["topk_rank0_end_ns"] = float(top[:, 9].max() - t0)
        if len(band):
            row["band_counted_ns"] = float(band[:, 1].max() - t0)
        if prev_end is not None and "select_ns" in row:
            row["gap_from_previous_ns"] = row["select_ns"][0] - prev_end
        if "topk_ns" in row:
            prev_end = row["topk_ns"][1]
        out.append(row)
    return out


def trace_layers(cp, mods: list, p_for, args_for, stream, replays: int) -> dict:
    """One layer a traced module of ``mods`` recorded into one graph (``p_for(k)`` makes layer k's pipeline on
    ``mods[k]``, ``args_for(k)`` its inputs), so that no layer overwrites another's marks: replayed, then once
    more with every array zeroed, and :func:`layer_spans` of that replay."""
    n = len(mods)
    pipes = [p_for(k) for k in range(n)]
    with stream:
        stream.begin_capture()
        try:
            for k, p in enumerate(pipes):
                p.record(*args_for(k), stream=stream)
        finally:
            graph = stream.end_capture()
    return {"graph_layers": n, "layers": layer_spans(replay_traced(cp, graph, mods, stream, replays))}


def trace(cp, mod, p, args, stream, replays: int) -> dict:
    [(sel, top, band)] = replay_traced(cp, p.capture(*args, stream=stream), [mod], stream, replays)
    out: dict = {"select_blocks_traced": len(sel), "topk_blocks_traced": len(top)}
    t0 = sel[:, 0].min() if len(sel) else top[:, 0].min()
    if len(sel):
        done = sel[:, 5] > 0  # blocks with survivors
        out["select_phase_cycles_median"] = {
            ph: float(np.median(sel[done, i + 2] - sel[done, i + 1])) for i, ph in enumerate(SELECT_PHASES)
        }
        out["select_block_cycles_median"] = float(np.median(sel[done, 5] - sel[done, 1]))
        out["select_start_ns"] = [float(np.min(sel[:, 0] - t0)), float(np.max(sel[:, 0] - t0))]
        out["select_end_ns"] = [float(np.min(sel[done, 6] - t0)), float(np.max(sel[done, 6] - t0))]
    if len(top):
        full = top[:, 3] > 0  # blocks that ran the selection (not the copy path)
        out["topk_phase_cycles_median"] = {
            ph: float(np.median(top[full, i + 2] - top[full, i + 1])) for i, ph in enumerate(TOPK_PHASES)
        }
        out["topk_block_cycles_median"] = float(np.median(top[full, 8] - top[full, 1]))
        att = full & (top[:, 10] > 0) & (top[:, 11] > 0)  # blocks that attended (trace marks 10, 11)
        if att.any():
            out["topk_attend_cycles_median"] = {
                "weights": float(np.median(top[att, 10] - top[att, 7])),
                "value rows": float(np.median(top[att, 11] - top[att, 10])),
                "partial + merge": float(np.median(top[att, 8] - top[att, 11])),
            }
        res = top[:, 13] > 0  # resident before the wait (sample and fan top-ks mark it)
        if res.any():
            out["topk_resident_ns"] = [float(np.min(top[res, 13] - t0)), float(np.max(top[res, 13] - t0))]
        out["topk_start_ns"] = [float(np.min(top[:, 0] - t0)), float(np.max(top[:, 0] - t0))]
        out["topk_end_ns"] = [float(np.min(top[:, 9] - t0)), float(np.max(top[:, 9] - t0))]
        out["topk_partials"] = {name: int(np.sum(top[:, 12] == v)) for v, name in MERGE_PATHS.items()}
    if len(band):
        out["band_start_ns"] = [float(np.min(band[:, 0] - t0)), float(np.max(band[:, 0] - t0))]
        out["band_counted_ns"] = [float(np.min(band[:, 1] - t0)), float(np.max(band[:, 1] - t0))]
        out["band_phase_cycles_median"] = {
            ph: float(np.median(band[:, i + 3] - band[:, i + 2])) for i, ph in enumerate(BAND_PHASES)
        }
        out["band_block_cycles_median"] = float(np.median(band[:, 6] - band[:, 2]))
    return out


def traced_graph(cp, torch, a, s, key: str, ctx: int) -> dict:
    """--graph-layers: the layer ``key`` as a.graph_layers layers of one graph, each its own traced build and
    planted input set (seeds 2, 3, ...: no layer finds another's inputs in L2)."""
    n = a.graph_layers
    # layer 0 may share the single-layer trace's module (the same build); the others are builds of their own
    mods = [fused.build_module("LS_TRACE", *([f"LS_TRACE_COPY={k}"] if k else [])) for k in range(n)]
    sets = [Data(cp, torch, a.users, ctx, seed=2 + k, planted=0.05) for k in range(n)]
    thresholds = cp.full(s.rows, PLANTED_THRESHOLD, dtype=cp.int32)

    def args_for(k: int) -> tuple:
        d = sets[k]
        return (d.ksig, d.qsig, thresholds, d.q, d.keys, d.vals)

    def p_for(k: int):
        fused._module = lambda m=mods[k]: m  # this pipeline's kernels from module k
        p = fused.FusedLongSight(s, config=parse_config_key(key))
        p.run(*args_for(k))
        cp.cuda.Device().synchronize()
        return p

    return trace_layers(cp, mods, p_for, args_for, cp.cuda.Stream(non_blocking=True), replays=5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", default="131072")
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--config", default="fused4/sample/64/fold/pdl")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument(
        "--defines", default="", help="comma list of NAME=VALUE for the kernels' build (LS_KPT, ...)"
    )
    ap.add_argument(
        "--lineinfo",
        action="store_true",
        help="build with line tables (Nsight Compute's source page by line)",
    )
    ap.add_argument(
        "--graph-layers",
        type=int,
        default=0,
        help="with --trace: also N layers in one graph, each from its own traced build (-DLS_TRACE_COPY=k) and "
        "input set, so that every layer keeps its own marks: when each layer's kernels ran",
    )
    ap.add_argument("--out")
    a = ap.parse_args()
    import cupy as cp
    import torch

    mod, _ = use_build(a.defines, a.trace, lineinfo=a.lineinfo)  # the traced / variant build, when asked
    results = []
    for ctx in (int(c) for c in a.ctx.split(",")):
        s = shape_for(a.users, ctx, 0.05)
        data = Data(cp, torch, a.users, ctx, seed=1, planted=0.05)
        thresholds = cp.full(s.rows, PLANTED_THRESHOLD, dtype=cp.int32)
        args = (data.ksig, data.qsig, thresholds, data.q, data.keys, data.vals)
        for key in a.config.split(","):
            p = fused.FusedLongSight(s, config=parse_config_key(key))
            for _ in range(2):
                p.run(*args)
                cp.cuda.Device().synchronize()
            row = {"context": ctx, "users": a.users, "config": key, "survivors": int(p.count.sum())}
            if a.trace:
                row.update(trace(cp, mod, p, args, cp.cuda.Stream(non_blocking=True), replays=5))
            if a.trace and a.graph_layers > 0:
                row["in_a_graph"] = traced_graph(cp, torch, a, s, key, ctx)
            print(json.dumps(row), flush=True)
            results.append(row)
            del p
        del data
        cp.get_default_memory_pool().free_all_blocks()
    if a.out:
        atomic_write_text(a.out, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
