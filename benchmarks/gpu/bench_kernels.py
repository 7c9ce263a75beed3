# ruff: noqa: B023  (closures are timed inside the loop iteration that made them)
"""XOR-popcount filter kernels on a real GPU, side by side (issue 7), with correctness checks.

Variants, each over packed signs of N keys (D = 64 or 128) and G queries of one KV group:
  bitmap      kernels/scf_bitmap.cu: one key per thread, queries in shared memory, 1 output bit per key
  bytemask    kernels/scf_filter.cu (cemsim's CuPy backend): 1 output byte per key
  naive       kernels/scf_naive.cu: the published artifact's design, one thread per (query, key), int32 counts
  torch       PyTorch bitwise ops (xor, SWAR popcount, compare, any over G)
  compact     kernels/scf_bitmap.cu fused filter + compaction into survivor indices
and one pipeline for one head: compact -> gather survivors' bf16 keys -> exact scores -> top-k (k = 1024).

Bytes counted per variant: key signs read once plus what the variant must write. Floor = bytes / measured
device-to-device copy bandwidth (read + written), measured in the same run. Key buffers rotate so their total
exceeds L2. Prints a table; --out writes JSON.  Run: python3 benchmarks/gpu/bench_kernels.py --out $OUT/k.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import cupy as cp
import numpy as np
import torch

KDIR = Path(__file__).resolve().parents[2] / "kernels"
L2_BYTES = 50 * 2**20
BLOCK = 256
COMPACT_KPT = 8  # keys per thread of scf_compact_* (kernels/scf_bitmap.cu)


def load(name: str) -> cp.RawModule:
    return cp.RawModule(code=(KDIR / name).read_text(), options=("-std=c++17",), name_expressions=None)


def time_us(fn, reps: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    ts = []
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(cp.cuda.get_elapsed_time(a, b) * 1e3)
    return statistics.median(ts)


def copy_bandwidth() -> float:
    src = cp.random.randint(0, 255, 2 * 2**30, dtype=cp.uint8)
    dst = cp.empty_like(src)
    us = time_us(lambda: dst.__setitem__(Ellipsis, src), reps=20)
    return 2 * src.nbytes / (us * 1e-6)


def reference(q: np.ndarray, k: np.ndarray, d: int, t: int) -> np.ndarray:
    m = d - np.bitwise_count(q[:, None, :] ^ k[None, :, :]).sum(-1)
    return (m >= t).any(0)


def torch_filter(q: torch.Tensor, k: torch.Tensor, d: int, t: int) -> torch.Tensor:
    m1, m2, m4, h01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101
    x = k[None, :, :] ^ q[:, None, :]
    x = x - ((x >> 1) & m1)
    x = (x & m2) + ((x >> 2) & m2)
    x = (x + (x >> 4)) & m4
    pc = ((x * h01) >> 56).sum(-1)
    return ((d - pc) >= t).any(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--sizes", default="1048576,4194304,16777216")
    ap.add_argument("--groups", default="1,4,8,16,32")
    args = ap.parse_args()
    bitmap_mod, filt_mod, naive_mod = load("scf_bitmap.cu"), load("scf_filter.cu"), load("scf_naive.cu")
    bw = copy_bandwidth()
    print(f"device-to-device copy: {bw / 1e12:.3f} TB/s (read + written)", flush=True)
    rows = []
    rng = np.random.default_rng(0)
    for d in (64, 128):
        w = d // 64
        for n in map(int, args.sizes.split(",")):
            nbytes = n * w * 8
            nbuf = max(1, -(-4 * L2_BYTES // nbytes))
            keys = [cp.asarray(rng.integers(0, 2**64, size=(n, w), dtype=np.uint64)) for _ in range(nbuf)]
            tkeys = [torch.as_tensor(kk, device="cuda").view(torch.int64) for kk in keys]
            for g in map(int, args.groups.split(",")):
                qh = rng.integers(0, 2**64, size=(g, w), dtype=np.uint64)
                q = cp.asarray(qh)
                # threshold that keeps ~5% of random keys overall
                t = int(
                    np.ceil(
                        d / 2 + np.sqrt(d) / 2 * {1: 1.65, 4: 2.25, 8: 2.5, 16: 2.75, 32: 2.95}.get(g, 2.5)
                    )
                )
                grid = (-(-n // BLOCK),)
                bitmap = cp.empty(-(-n // 32), dtype=cp.uint32)
                out_idx = cp.empty(n, dtype=cp.int32)
                count = cp.zeros(1, dtype=cp.uint64)
                mask = cp.empty(n, dtype=cp.uint8)
                i = [0]

                def nxt() -> int:
                    i[0] = (i[0] + 1) % nbuf
                    return i[0]

                fb = bitmap_mod.get_function(f"scf_bitmap_w{w}")
                fc = bitmap_mod.get_function(f"scf_compact_w{w}")
                ff = filt_mod.get_function("scf_filter")
                fn_ = naive_mod.get_function("scf_naive")
                # correctness on buffer 0 against NumPy
                ref = reference(qh, cp.asnumpy(keys[0]), d, t)
                fb(grid, (BLOCK,), (q, keys[0], np.int64(n), np.int32(g), np.int32(d), np.int32(t), bitmap))
                bits = np.unpackbits(cp.asnumpy(bitmap).view(np.uint8), bitorder="little")[:n].astype(bool)
                assert np.array_equal(bits, ref), "bitmap kernel disagrees with NumPy"
                cgrid = (-(-n // (BLOCK * COMPACT_KPT)),)
                count.fill(0)
                fc(
                    cgrid,
                    (BLOCK,),
                    (q, keys[0], np.int64(n), np.int32(g), np.int32(d), np.int32(t), out_idx, count),
                )
                c = int(count.get()[0])
                assert np.array_equal(np.sort(cp.asnumpy(out_idx[:c])), np.flatnonzero(ref)), (
                    "compaction wrong"
                )
                tq = torch.as_tensor(q, device="cuda").view(torch.int64)
                assert np.array_equal(torch_filter(tq, tkeys[0], d, t).cpu().numpy(), ref), (
                    "torch version wrong"
                )
                surv = c / n
                variants = {
                    "bitmap": (
                        lambda: fb(
                            grid,
                            (BLOCK,),
                            (q, keys[nxt()], np.int64(n), np.int32(g), np.int32(d), np.int32(t), bitmap),
                        ),
                        nbytes + n / 8,
                    ),
                    "compact": (
                        lambda: (
                            count.fill(0),
                            fc(
                                cgrid,
                                (BLOCK,),
                                (
                                    q,
                                    keys[nxt()],
                                    np.int64(n),
                                    np.int32(g),
                                    np.int32(d),
                                    np.int32(t),
                                    out_idx,
                                    count,
                                ),
                            ),
                        ),
                        nbytes + 4 * c,
                    ),
                }
                if g <= 16:
                    variants["bytemask"] = (
                        lambda: ff(
                            grid,
                            (BLOCK,),
                            (
                                q,
                                keys[nxt()],
                                np.int32(1),
                                np.int32(g),
                                np.int64(n),
                                np.int32(w),
                                np.int32(d),
                                np.int32(t),
                                0,
                                mask,
                            ),
                        ),
                        nbytes + n,
                    )
                if g * n <= 2**27:
                    matches = cp.empty(g * n, dtype=cp.int32)
                    ngrid = (-(-g * n // BLOCK),)
                    variants["naive"] = (
                        lambda: fn_(
                            ngrid,
                            (BLOCK,),
                            (q, keys[nxt()], np.int64(n), np.int32(g), np.int32(w), np.int32(d), matches),
                        ),
                        nbytes + 4 * g * n,
                    )
                if g * n * w <= 2**26:
                    variants["torch"] = (lambda: torch_filter(tq, tkeys[nxt()], d, t), nbytes + n)
                for name, (fn, moved) in variants.items():
                    us = time_us(fn)
                    floor_us = moved / bw * 1e6
                    rows.append(
                        {
                            "variant": name,
                            "D": d,
                            "N": n,
                            "G": g,
                            "threshold": t,
                            "survive_frac": surv,
                            "median_us": us,
                            "bytes": moved,
                            "floor_us": floor_us,
                            "fraction_of_copy_bw": floor_us / us,
                            "gcomparisons_per_s": g * n / (us * 1e-6) / 1e9,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"{name:9s} D={d:3d} N={n:>9,d} G={g:2d} {us:9.1f} us  floor {floor_us:8.1f} us  "
                        f"{r['fraction_of_copy_bw']:6.1%} of copy BW  {r['gcomparisons_per_s']:8.1f} Gcmp/s",
                        flush=True,
                    )
            keys.clear()
            tkeys.clear()
            cp.get_default_memory_pool().free_all_blocks()
    # pipeline: filter + compaction + exact scores + top-k for one head, D = 128
    pipe = []
    fc = bitmap_mod.get_function("scf_compact_w2")
    for n in (1 << 20, 1 << 22):
        keys_full = torch.randn(n, 128, dtype=torch.bfloat16, device="cuda")
        signs = torch.as_tensor(
            rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64).view(np.int64), device="cuda"
        )
        qv = torch.randn(4, 128, dtype=torch.bfloat16, device="cuda")
        q = cp.asarray(rng.integers(0, 2**64, size=(4, 2), dtype=np.uint64))
        t = 64 + 18
        out_idx = cp.empty(n, dtype=cp.int32)
        count = cp.zeros(1, dtype=cp.uint64)
        grid = (-(-n // (BLOCK * COMPACT_KPT)),)

        def run() -> torch.Tensor:
            count.fill(0)
            fc(
                grid,
                (BLOCK,),
                (q, cp.asarray(signs), np.int64(n), np.int32(4), np.int32(128), np.int32(t), out_idx, count),
            )
            c = int(count.get()[0])
            idx = torch.as_tensor(out_idx[:c], device="cuda").long()
            scores = keys_full.index_select(0, idx) @ qv.T / 128**0.5
            return torch.topk(scores, min(1024, c), dim=0).indices

        us = time_us(run, reps=30)
        count.fill(0)
        run()
        c = int(count.get()[0])
        moved = n * 16 + c * (4 + 256)
        pipe.append(
            {
                "N": n,
                "G": 4,
                "survivors": c,
                "median_us": us,
                "bytes": moved,
                "floor_us": moved / bw * 1e6,
                "fraction_of_copy_bw": moved / bw * 1e6 / us,
            }
        )
        print(f"pipeline N={n:,} survivors={c:,}: {us:.1f} us (floor {moved / bw * 1e6:.1f} us)", flush=True)
    if args.out:  # a temporary file renamed over the target: an interrupted run leaves no half-written file
        tmp = Path(args.out).with_name(Path(args.out).name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "copy_bandwidth_bytes_per_s": bw,
                    "gpu": torch.cuda.get_device_name(0),
                    "cupy": cp.__version__,
                    "torch": torch.__version__,
                    "filters": rows,
                    "pipeline": pipe,
                },
                indent=2,
            )
        )
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
