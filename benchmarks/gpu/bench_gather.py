# ruff: noqa: B023  (closures are timed inside the loop iteration that made them)
"""Scattered row gathers on the device machine (kernels/gather_probe.cu): how fast the GPU reads key rows at
random positions, the fused select's second phase, apart from its filter:

    python3 benchmarks/gpu/bench_gather.py --out $OUT/gather.json

A table of 2 GiB of rows; lists of a fraction of the rows of a span, at random positions, sorted (as the
select's survivors are); every case rotates among lists of disjoint spans whose rows together exceed the L2
twice over, so each launch reads from DRAM. Kernels: registers (R rows in flight a lane group, R = 1-16), and
cp.async into shared memory (a block's rows all in flight at once); and the same bytes read in order. Times:
CUDA events around 20 back-to-back launches, median of 7 rounds; rates in bytes read per second, against the
device-to-device copy bandwidth (read + written) measured in the same run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fused import L2, back_to_back, copy_bandwidth, provenance

from cemsim.atomic import atomic_write_text
from cemsim.kernels import KERNEL_DIR

TABLE_BYTES = 2 * 2**30
THREADS = 256
LDG_ROWS = (1, 2, 4, 8, 16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--row-bytes", default="128,256,512")
    ap.add_argument("--fraction", type=float, default=0.05, help="rows of a span in a list")
    ap.add_argument(
        "--spans", default="1048576,8388608", help="rows a list is drawn from (128K x 8 heads, 1M x 8)"
    )
    ap.add_argument("--per-block", default="32,64,128", help="rows a cp.async block brings in at once")
    a = ap.parse_args()
    import cupy as cp

    mod = cp.RawModule(
        code=(KERNEL_DIR / "gather_probe.cu").read_text(), options=("-std=c++17", f"-I{KERNEL_DIR}")
    )
    f_ldg = {r: mod.get_function(f"gather_ldg_r{r}") for r in LDG_ROWS}
    f_async, f_stream = mod.get_function("gather_async"), mod.get_function("stream_read")
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    bw = copy_bandwidth(cp)
    copy_bps = bw["bandwidth_bytes_per_s"]
    print(f"copy bandwidth (read + written) {copy_bps / 1e12:.2f} TB/s", flush=True)
    table = cp.empty(TABLE_BYTES // 16 * 4, dtype=cp.uint32)
    table[:] = cp.arange(table.size, dtype=cp.uint32)
    out_buf = cp.empty(sms * 64 * THREADS, dtype=cp.uint32)
    stream = cp.cuda.Stream(non_blocking=True)
    rng = np.random.default_rng(7)
    res: dict = {"provenance": provenance(), "copy": bw, "sms": sms, "cases": []}
    i32, i64 = np.int32, np.int64
    for row_bytes in (int(x) for x in a.row_bytes.split(",")):
        rows_in_table = TABLE_BYTES // row_bytes
        for span in (int(x) for x in a.spans.split(",")):
            span = min(span, rows_in_table)
            n = int(span * a.fraction)
            nsets = int(min(rows_in_table // span, max(1, -(-2 * L2 // (n * row_bytes)))))
            lists = []
            for k in range(nsets):
                pos = np.sort(rng.choice(span, size=n, replace=False)) + k * span
                lists.append(cp.asarray(pos.astype(np.int32)))
            moved = n * row_bytes
            case: dict = {"row_bytes": row_bytes, "span_rows": span, "rows": n, "bytes": moved, "sets": nsets,
                          "us": {}}  # fmt: skip

            def record(name: str, launch) -> None:
                us = back_to_back(cp, launch, stream)
                case["us"][name] = us
                print(
                    f"rows {row_bytes:>4} B  span {span:>9,}  {n:>8,} rows ({moved / 1e6:6.1f} MB) x {nsets}  "
                    f"{name:<12} {us:8.2f} us  {moved / us / 1e6:6.2f} TB/s  "
                    f"({moved / us * 1e6 / (copy_bps / 2):.0%} of copy's read rate)",
                    flush=True,
                )

            with stream:
                for r, f in f_ldg.items():
                    grid = (sms * 8,)
                    record(f"ldg r{r}", lambda i: f(grid, (THREADS,), (table, lists[i % nsets], i32(n),
                                                                        i32(row_bytes), out_buf)))  # fmt: skip
                for per in (int(x) for x in a.per_block.split(",")):
                    smem = per * row_bytes
                    if smem > 96 * 1024:
                        continue
                    f_async.max_dynamic_shared_size_bytes = smem
                    grid = (min(-(-n // per), sms * 64),)
                    record(f"async {per}", lambda i: f_async(grid, (THREADS,), (table, lists[i % nsets], i32(n),
                           i32(row_bytes), i32(per), out_buf), shared_mem=smem))  # fmt: skip
                words = moved // 16
                record("in order", lambda i: f_stream((sms * 8,), (THREADS,), (
                    table[(i % nsets) * words * 4 :], i64(words), out_buf)))  # fmt: skip
            res["cases"].append(case)
            lists.clear()  # free the device memory before the next case
            if a.out:
                atomic_write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
