"""Calibration measurements on a real GPU (torch only, CUDA events, medians of many runs).

Measures what the simulator's GPU model needs, for Llama-3-8B geometry in bf16:
  - HBM streaming bandwidth (device-to-device copy, bytes read + written);
  - dense decode attention (one query token, GQA 32/8 heads, D = 128) at contexts 4K.. what fits, batch 1 and 8;
  - the non-attention matrix-vector work of one decode layer (QKV, O, gate/up, down) at batch 1..64;
  - one whole decode layer's linear work x 32 layers (what one token costs without attention).
Writes one JSON file with provenance (GPU, driver, torch version, date). Run on the device machine:
    python3 benchmarks/gpu/calibrate.py --out $OUT/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
from run_info import host_info  # this script's folder

GEOM = {"layers": 32, "hidden": 4096, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "intermediate": 14336}


def time_ms(fn, *, warmup: int = 5, reps: int = 30, graph: bool = False) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs, timed with CUDA events after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            fn()
        run = g.replay
        for _ in range(3):
            run()
    else:
        run = fn
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def hbm_copy(gib: float = 4.0) -> dict:
    n = int(gib * 2**30) // 2
    src = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), reps=20)
    moved = 2 * n * 2
    return {"bytes_read_plus_written": moved, "median_ms": ms, "bandwidth_bytes_per_s": moved / (ms / 1e3)}


def decode_attention(context: int, batch: int) -> dict:
    g = GEOM
    q = torch.randn(batch, g["q_heads"], 1, g["head_dim"], dtype=torch.bfloat16, device="cuda")
    k = torch.randn(batch, g["kv_heads"], context, g["head_dim"], dtype=torch.bfloat16, device="cuda")
    v = torch.randn_like(k)
    f = torch.nn.functional.scaled_dot_product_attention

    def run() -> torch.Tensor:
        return f(q, k, v, enable_gqa=True)

    ms = time_ms(run, reps=30)
    kv_bytes = 2 * k.numel() * 2
    return {
        "context": context,
        "batch": batch,
        "median_ms": ms,
        "kv_bytes": kv_bytes,
        "achieved_bytes_per_s": kv_bytes / (ms / 1e3),
        "layers": 1,
    }


def layer_linear(batch: int) -> dict:
    g = GEOM
    h, q_out, kv_out, inter = (
        g["hidden"],
        g["q_heads"] * g["head_dim"],
        g["kv_heads"] * g["head_dim"],
        g["intermediate"],
    )
    # separate weights per layer so 32 layers stream 32 x the bytes (no L2 reuse between layers)
    layers = []
    for _ in range(g["layers"]):
        layers.append(
            (
                torch.randn(q_out + 2 * kv_out, h, dtype=torch.bfloat16, device="cuda"),
                torch.randn(h, q_out, dtype=torch.bfloat16, device="cuda"),
                torch.randn(2 * inter, h, dtype=torch.bfloat16, device="cuda"),
                torch.randn(h, inter, dtype=torch.bfloat16, device="cuda"),
            )
        )
    x = torch.randn(batch, h, dtype=torch.bfloat16, device="cuda")

    def one_layer(w) -> torch.Tensor:
        wqkv, wo, wgu, wd = w
        y = x @ wqkv.T
        y = y[:, :q_out] @ wo.T
        gu = y @ wgu.T
        a = torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]
        return a @ wd.T

    def all_layers() -> None:
        for w in layers:
            one_layer(w)

    weight_bytes = sum(t.numel() for w in layers for t in w) * 2
    flops = 2 * batch * weight_bytes // 2
    ms_all = time_ms(all_layers, reps=15, graph=True)
    ms_one = time_ms(lambda: one_layer(layers[0]), reps=30, graph=True)
    layers.clear()
    torch.cuda.empty_cache()
    return {
        "batch": batch,
        "median_ms_32_layers": ms_all,
        "median_ms_one_layer_graph": ms_one,
        "weight_bytes_32_layers": weight_bytes,
        "flops_32_layers": flops,
        "achieved_bytes_per_s": weight_bytes / (ms_all / 1e3),
    }


def decode_step(context: int, batch: int) -> dict:
    """One whole decode step of Llama-3-8B geometry (32 layers: QKV, attention over a KV cache of ``context``
    tokens, O, MLP; then the LM head), captured in a CUDA graph as serving engines run decode."""
    g = GEOM
    h, qd, kvd, inter, vocab = (
        g["hidden"],
        g["q_heads"] * g["head_dim"],
        g["kv_heads"] * g["head_dim"],
        g["intermediate"],
        128256,
    )
    dev, bf = "cuda", torch.bfloat16
    layers = []
    for _ in range(g["layers"]):
        layers.append(
            (
                torch.randn(qd + 2 * kvd, h, dtype=bf, device=dev) * 0.02,
                torch.randn(h, qd, dtype=bf, device=dev) * 0.02,
                torch.randn(2 * inter, h, dtype=bf, device=dev) * 0.02,
                torch.randn(h, inter, dtype=bf, device=dev) * 0.02,
                torch.randn(batch, g["kv_heads"], context, g["head_dim"], dtype=bf, device=dev),
                torch.randn(batch, g["kv_heads"], context, g["head_dim"], dtype=bf, device=dev),
            )
        )
    head = torch.randn(vocab, h, dtype=bf, device=dev) * 0.02
    x0 = torch.randn(batch, h, dtype=bf, device=dev)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def step() -> torch.Tensor:
        x = x0
        for wqkv, wo, wgu, wd, kc, vc in layers:
            xn = torch.nn.functional.rms_norm(x, (h,))
            qkv = xn @ wqkv.T
            q = qkv[:, :qd].view(batch, g["q_heads"], 1, g["head_dim"])
            a = sdpa(q, kc, vc, enable_gqa=True).reshape(batch, qd)
            x = x + a @ wo.T
            gu = torch.nn.functional.rms_norm(x, (h,)) @ wgu.T
            x = x + (torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]) @ wd.T
        return torch.nn.functional.rms_norm(x, (h,)) @ head.T

    ms = time_ms(step, reps=15, graph=True)
    kv_bytes = sum(t[4].numel() + t[5].numel() for t in layers) * 2
    weight_bytes = (sum(t.numel() for w in layers for t in w[:4]) + head.numel()) * 2
    layers.clear()
    torch.cuda.empty_cache()
    return {
        "context": context,
        "batch": batch,
        "median_ms": ms,
        "kv_bytes": kv_bytes,
        "weight_bytes": weight_bytes,
    }


def sparse_layer(
    context: int, survive_target: float = 0.05, k: int = 1024, window: int = 1024, sinks: int = 16
) -> dict:
    """LongSight on the GPU, one layer of Llama-3-8B geometry at batch 1 (the h100-sparse-hbm system): per KV
    head the SCF filter + compaction (kernels/scf_bitmap.cu), survivors' keys gathered and scored exactly,
    top-k per query head, those values gathered; dense attention over window + sinks; one softmax over both.
    Captured in a CUDA graph (fixed survivor capacity, no host sync)."""
    from pathlib import Path

    import cupy as cp
    import numpy as np

    g = GEOM
    hk, grp, d = g["kv_heads"], g["q_heads"] // g["kv_heads"], g["head_dim"]
    dev, bf = "cuda", torch.bfloat16
    mod = cp.RawModule(
        code=(Path(__file__).resolve().parents[2] / "kernels" / "scf_bitmap.cu").read_text(),
        options=("-std=c++17",),
    )
    compact = mod.get_function("scf_compact_w2")
    sparse_n = context - window - sinks
    keys = torch.randn(hk, context, d, dtype=bf, device=dev)
    vals = torch.randn(hk, context, d, dtype=bf, device=dev)
    signs = torch.randint(-(2**62), 2**62, (hk, sparse_n, 2), dtype=torch.int64, device=dev)
    qsig = torch.randint(-(2**62), 2**62, (hk, grp, 2), dtype=torch.int64, device=dev)
    q = torch.randn(hk, grp, d, dtype=bf, device=dev)
    threshold = 77  # ~5% of random keys survive for G = 4, D = 128
    cap = max(
        k, int(sparse_n * survive_target * 3)
    )  # the kernel writes up to the survivor count: keep headroom
    idx = torch.zeros(hk, cap, dtype=torch.int32, device=dev)
    count = torch.zeros(hk, dtype=torch.int64, device=dev)
    ar = torch.arange(cap, device=dev)
    block, kpt = 256, 8
    grid = (-(-sparse_n // (block * kpt)),)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    dense_k = torch.cat([keys[:, :sinks], keys[:, context - window :]], 1)[None]
    dense_v = torch.cat([vals[:, :sinks], vals[:, context - window :]], 1)[None]

    def layer() -> torch.Tensor:
        stream = cp.cuda.Stream.from_external(torch.cuda.current_stream())
        count.zero_()
        with stream:
            for hh in range(hk):
                compact(
                    grid,
                    (block,),
                    (
                        qsig[hh].data_ptr(),
                        signs[hh].data_ptr(),
                        np.int64(sparse_n),
                        np.int32(grp),
                        np.int32(d),
                        np.int32(threshold),
                        idx[hh].data_ptr(),
                        count[hh : hh + 1].data_ptr(),
                    ),
                )
        valid = ar[None, :] < count[:, None]
        pos = torch.where(valid, idx.long() + sinks, 0)
        # torch.gather measured faster here than advanced indexing keys[heads, pos] (1.04 vs 1.39 ms at 1M)
        ks = torch.gather(keys, 1, pos[:, :, None].expand(-1, -1, d))  # [H, cap, D]
        sc = torch.bmm(ks, q.transpose(1, 2)).float() / d**0.5  # [H, cap, G]
        sc = sc.masked_fill(~valid[:, :, None], float("-inf"))
        top, ti = torch.topk(sc, k, dim=1)  # [H, k, G]
        vpos = torch.gather(pos, 1, ti.reshape(hk, -1)).reshape(hk, k * grp)
        vs = torch.gather(vals, 1, vpos[:, :, None].expand(-1, -1, d)).view(hk, k, grp, d)
        o_dense = sdpa(q.view(1, hk * grp, 1, d), dense_k, dense_v, enable_gqa=True)  # window + sinks
        w = torch.softmax(top, dim=1)  # the sparse part; merged below with the dense part's weight
        o_sparse = torch.einsum("hkg,hkgd->hgd", w.to(bf), vs)
        return o_dense.view(hk, grp, d) * 0.5 + o_sparse * 0.5

    ms = time_ms(layer, reps=30, graph=True)
    layer()
    torch.cuda.synchronize()
    survivors = int(count.sum().item())
    assert int(count.max().item()) <= cap, "survivors overflowed the capacity"
    bytes_read = (
        hk * sparse_n * 16 + survivors * d * 2 + hk * k * grp * d * 2 + 2 * hk * (window + sinks) * d * 2
    )
    return {
        "context": context,
        "batch": 1,
        "median_ms_per_layer": ms,
        "survivors_per_layer": survivors,
        "kv_heads": hk,
        "k": k,
        "window": window,
        "sinks": sinks,
        "threshold": threshold,
        "bytes_read_per_layer": bytes_read,
    }


def matmul_peak() -> dict:
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    ms = time_ms(lambda: a @ b, reps=20)
    return {"n": n, "median_ms": ms, "flops_per_s": 2 * n**3 / (ms / 1e3)}


def provenance() -> dict:
    return {
        **host_info(),
        "method": "CUDA events, median of 15-30 timed runs after warm-up; random bf16 data",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-context", type=int, default=1 << 20)
    ap.add_argument("--only", choices=["all", "step", "sparse"], default="all")
    args = ap.parse_args()
    torch.manual_seed(0)
    result: dict = {"schema_version": 1, "geometry": GEOM, "dtype": "bf16", "provenance": provenance()}
    if args.only == "all":
        result["hbm_copy"] = hbm_copy()
        print("hbm copy", result["hbm_copy"], flush=True)
        result["matmul_peak"] = matmul_peak()
        print("matmul", result["matmul_peak"], flush=True)
        attn = []
        free = torch.cuda.mem_get_info()[0]
        for batch in (1, 8):
            ctx = 4096
            while ctx <= args.max_context:
                need = 2 * batch * GEOM["kv_heads"] * ctx * GEOM["head_dim"] * 2
                if need > 0.7 * free:
                    break
                attn.append(decode_attention(ctx, batch))
                print("attn", attn[-1], flush=True)
                ctx *= 2
        result["decode_attention_per_layer"] = attn
        lin = []
        for batch in (1, 2, 4, 8, 16, 32, 64):
            lin.append(layer_linear(batch))
            print("linear", lin[-1], flush=True)
        result["decode_linear"] = lin
    if args.only in ("all", "step"):
        steps = []
        for batch, contexts in (
            (1, (4096, 16384, 65536, 131072, 262144)),
            (8, (4096, 16384, 32768)),
            (32, (4096,)),
            (64, (4096,)),
        ):
            for ctx in contexts:
                steps.append(decode_step(ctx, batch))
                print("step", steps[-1], flush=True)
        result["decode_step"] = steps
    if args.only in ("all", "sparse"):
        sparse = []
        for ctx in (32768, 131072, 524288, 1048576):
            sparse.append(sparse_layer(ctx))
            print("sparse", sparse[-1], flush=True)
        result["sparse_layer"] = sparse
    tmp = args.out + ".tmp"  # renamed over the target: an interrupted run leaves no half-written file
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
