# ruff: noqa: B023  (closures are timed inside the loop iteration that made them)
"""ls_layer (kernels/ls_layer.cuh: the whole sparse layer in one launch, a cluster of blocks per row) against the
staged kernels choose_config picks (``--staged``; ``--async-select``: the same with the select's rows brought in
by cp.async), per layer of Llama-3-8B geometry, on the device machine:

    python3 benchmarks/gpu/bench_layer.py --out $OUT/layer.json [--trace]

The same data, method and floor as bench_fused.py (planted 5 % survival and random-sign targets; CUDA graphs
replayed back to back, inputs rotating among up to four sets; floor = bytes the step must read / copy bandwidth
measured in the same run); every configuration's row 0 checked against the NumPy reference (eagerly and from
its graph) before it is timed. ``--trace``: the kernels built with -DLS_TRACE, and each ls_layer block's phase
times (thread 0's SM clock at each phase boundary, %globaltimer at its start and end)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fused
from bench_fused import (
    L2,
    PLANTED_THRESHOLD,
    Data,
    back_to_back,
    check_row0,
    config_key,
    copy_bandwidth,
    graph_of_layers,
    parse_config_key,
    provenance,
    shape_for,
    use_build,
)

from cemsim.atomic import atomic_write_text
from cemsim.gpu import fused
from cemsim.gpu import reference as ref

PHASES = [
    "band scored",
    "tiles (filter, claims, scores)",
    "radix passes",
    "collect",
    "attention",
    "merge + out",
]


TRACE_SHAPE = (2048, 9)  # kernels/ls_layer.cuh ls_trace_layer


def phase_trace(cp, mod, graph, stream) -> dict:
    arr = cp.ndarray(TRACE_SHAPE, cp.int64, mod.get_global("ls_trace_layer"))
    arr.fill(0)
    graph.launch(stream)
    stream.synchronize()
    t = arr.get()
    t = t[t[:, 0] > 0]
    t0 = t[:, 0].min()
    return {
        "blocks": len(t),
        "phase_cycles_median": {
            ph: float(np.median(t[:, i + 2] - t[:, i + 1])) for i, ph in enumerate(PHASES)
        },
        "phase_cycles_max": {ph: float(np.max(t[:, i + 2] - t[:, i + 1])) for i, ph in enumerate(PHASES)},
        "start_ns": [0.0, float(np.max(t[:, 0] - t0))],
        "end_ns": [float(np.min(t[:, 8] - t0)), float(np.max(t[:, 8] - t0))],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--contexts", default="131072,524288,1048576")
    ap.add_argument("--survival", default="0.05", help="random-sign targets besides planted 5 %%")
    ap.add_argument("--ctas", default="0", help="ls_layer blocks per row to time (0: auto; empty: none)")
    ap.add_argument("--staged", action="store_true", help="also time choose_config's staged kernels")
    ap.add_argument(
        "--async-select", action="store_true", help="also time them with the async select (rows by cp.async)"
    )
    ap.add_argument(
        "--band-late", action="store_true", help="also time each staged form with Config.band_late"
    )
    ap.add_argument(
        "--configs", default="", help="comma list of config keys (cemsim.gpu.fused.config_key) to time too"
    )
    ap.add_argument(
        "--frag",
        default="",
        help="comma list of config keys to time with the frag filter too (frag-layout signs)",
    )
    ap.add_argument("--lists", default="0", help="ls_layer list caps to time (0: all the shared memory)")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--defines", default="", help="comma list of NAME=VALUE for the kernels' build (LAYER_*)")
    ap.add_argument(
        "--source", help="build this copy of kernels/longsight_fused.cu instead (an A/B against it)"
    )
    ap.add_argument(
        "--graph-layers",
        type=int,
        default=0,
        help="also time N layers recorded into one graph (the input sets in turn), per layer: a decode step's "
        "graph pays one launch for all its layers, where one graph a layer pays one each",
    )
    ap.add_argument(
        "--window", type=int, help="the band's window instead of LongSight's 1,024 (how much the band costs)"
    )
    a = ap.parse_args()
    import cupy as cp
    import torch

    if a.window is not None:
        bench_fused.WINDOW = a.window  # shape_for and Data read it at call time
    mod, defines = use_build(a.defines, a.trace, a.source)
    bw = copy_bandwidth(cp)
    out: dict = {"provenance": provenance(), "copy": bw, "defines": defines, "source": a.source, "points": []}
    bw_bps = bw["bandwidth_bytes_per_s"]
    print(f"copy bandwidth {bw_bps / 1e12:.2f} TB/s", flush=True)
    probe = fused.FusedLongSight(shape_for(1, 131072, 0.05), method="popc", config=fused.Config(layer=True))
    out["resident_clusters"] = {}
    for c in range(1, fused.LAYER_MAX_CTAS + 1):
        probe.config.ctas = c
        out["resident_clusters"][c] = probe.layer_geometry().resident
    print(f"clusters resident at once, by blocks per row: {out['resident_clusters']}", flush=True)
    del probe
    stream = cp.cuda.Stream(non_blocking=True)
    points = [(0.05, True)] + [(float(x), False) for x in a.survival.split(",") if x]
    for users in (int(b) for b in a.batches.split(",")):
        for ctx in (int(c) for c in a.contexts.split(",")):
            s0 = shape_for(users, ctx, 0.05)
            hot = s0.floor_bytes(s0.rows * s0.region * 0.05, s0.rows * s0.group * s0.k)
            nsets = int(max(1, min(4, -(-4 * L2 // hot))))
            for survival, plant in points:
                sets = [
                    Data(cp, torch, users, ctx, seed=1000 * users + ctx + i, planted=0.05 if plant else None)
                    for i in range(nsets)
                ]
                s = shape_for(users, ctx, survival)
                t = PLANTED_THRESHOLD if plant else ref.survival_threshold(s.head_dim, s.group, survival)
                thresholds = cp.full(s.rows, t, dtype=cp.int32)
                configs = {
                    f"layer{c}/list{n}": (fused.Config(layer=True, ctas=int(c)), int(n))
                    for c in a.ctas.split(",")
                    if c
                    for n in a.lists.split(",")
                }
                if a.staged:
                    configs["staged " + config_key(fused.choose_config(s))] = (fused.choose_config(s), 0)
                if a.async_select:
                    c = dataclasses.replace(fused.choose_config(s), select="async", rows=0)
                    configs["staged " + config_key(c)] = (c, 0)
                for key in (k for k in a.configs.split(",") if k):
                    configs[key] = (parse_config_key(key), 0)
                for key in (k for k in a.frag.split(",") if k):
                    configs["frag " + key] = (parse_config_key(key), 0)
                if a.band_late:
                    for c, _ in [v for v in configs.values() if not v[0].layer]:
                        c = dataclasses.replace(c, band_late=True)
                        configs["staged " + config_key(c)] = (c, 0)
                row: dict = {"users": users, "context": ctx, "survival_target": survival, "planted": plant,
                             "input_sets": nsets, "configs": {}}  # fmt: skip
                for name, (cfg, list_cap) in configs.items():
                    r: dict = {}
                    method = "frag" if name.startswith("frag ") else "popc"
                    args = [(d.signs(method), d.qsig, thresholds, d.q, d.keys, d.vals) for d in sets]
                    try:
                        pipes = [fused.FusedLongSight(s, method=method, config=cfg) for _ in sets]
                        for p in pipes:
                            p.layer_list = list_cap or None
                        p0 = pipes[0]
                        if cfg.layer:
                            g = p0.layer_geometry()
                            r["geometry"] = {"ctas": g.ctas, "scap": g.scap, "bcap": g.bcap, "smem": g.smem,
                                             "resident": g.resident}  # fmt: skip
                        p0.run(*args[0])
                        cp.cuda.Device().synchronize()
                        r["overflowed"] = p0.overflowed()
                        r.update(check_row0(cp, s, sets[0], thresholds, p0))
                        res = p0.results()
                        survivors, picks = int(res["count"].sum()), int(res["pick_count"].sum())
                        graphs = [p.capture(*x, stream=stream) for p, x in zip(pipes, args, strict=True)]
                        p0.out.fill(np.nan)
                        graphs[0].launch(stream)
                        stream.synchronize()
                        r["graph_row0_checked"] = check_row0(cp, s, sets[0], thresholds, p0)["row0_checked"]
                        r["b2b_us"] = back_to_back(cp, lambda i: graphs[i % nsets].launch(stream), stream)
                        r["b2b_repeat_us"] = back_to_back(
                            cp, lambda i: graphs[i % nsets].launch(stream), stream
                        )
                        if a.graph_layers > 0:
                            r.update(
                                graph_of_layers(
                                    cp, s, sets[0], thresholds, pipes, args, stream, a.graph_layers
                                )
                            )
                        floor = s.floor_bytes(survivors, picks) / bw_bps * 1e6
                        r.update({"survivors": survivors, "picks": picks, "floor_us": floor,
                                  "over_floor": min(r["b2b_us"], r["b2b_repeat_us"]) / floor})  # fmt: skip
                        if a.trace and cfg.layer:
                            r["trace"] = phase_trace(cp, mod, graphs[0], stream)
                    except Exception as e:
                        r["error"] = f"{type(e).__name__}: {e}"[:400]
                        traceback.print_exc()
                        cp.cuda.Device().synchronize()
                    row["configs"][name] = r
                    label = "planted 5%" if plant else f"{survival:.0%}"
                    in_graph = (
                        f"in a graph of {r['graph_layers']} layers {r['graph_layers_b2b_us_per_layer']:.1f} us "
                        f"a layer (check {r['graph_layers_row0_checked']}) "
                        if "graph_layers" in r
                        else ""
                    )
                    print(
                        f"{a.defines or 'default'} B={users} ctx={ctx:>8,} {label:>10} {name:<40} "
                        f"{min(r.get('b2b_us', np.nan), r.get('b2b_repeat_us', np.nan)):7.1f} us "
                        f"floor {r.get('floor_us', np.nan):6.1f} ({r.get('over_floor', np.nan):.2f}x) "
                        f"check {r.get('row0_checked')}/{r.get('graph_row0_checked')} "
                        f"overflow {r.get('overflowed')} {r.get('geometry', '')} {r.get('error', '')} "
                        f"{in_graph}"
                        f"{json.dumps(r.get('trace', {}).get('phase_cycles_median', {}))}",
                        flush=True,
                    )
                out["points"].append(row)
                del sets
                torch.cuda.empty_cache()
                cp.get_default_memory_pool().free_all_blocks()
                if a.out:
                    atomic_write_text(a.out, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
