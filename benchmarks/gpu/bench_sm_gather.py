# ruff: noqa: B023  (closures are timed inside the loop iteration that made them)
"""How fast one SM takes in scattered 256-byte rows (kernels/sm_gather_probe.cu), on the device machine:

    python3 benchmarks/gpu/bench_sm_gather.py --out $OUT/sm_gather.json

The fused top-k block attends over its 1,024 picks' value rows alone on its SM (docs/gpu-kernels.md, eighth
step: ~256 KB at ~30 bytes a clock). Here 1, 2, 4, 32 and 132 blocks of 1,024 threads (one an SM: each asks
for 128 KB of shared memory) each read 1,024 rows of 256 bytes at random positions of a 2 GiB table, by plain
loads as topk_attend issues them (16 lanes a row, 8 rows in flight a lane group) and by bulk copies into
shared memory (cp.async.bulk on an mbarrier, 4 stages of 128 rows). "cold": every launch takes the next rows
of a 2M-entry random list (512 MB of rows, so they come from DRAM); "hot": every launch the same rows (from
L2 after the first). Times: CUDA events around 20 back-to-back launches, median of 7 rounds (launch gaps
included: a lower bound on each block's rate); rates in bytes a block (one SM) takes in per microsecond and per
clock at an assumed 1.98 GHz (the boost clock; nvidia-smi reads the idle clock, not the one under load). Both
kernels' folds are checked against the host's fold of the same rows."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fused import back_to_back, provenance

from cemsim.atomic import atomic_write_text
from cemsim.kernels import KERNEL_DIR

TABLE_BYTES = 2 * 2**30
ROW_BYTES = 256
THREADS = 1024
LIST = 2 * 2**20
SMEM = 128 * 1024  # one block an SM (and the bulk kernel's 4 x 32 KB ring)
CLOCK_HZ = 1.98e9  # assumed: H200 SXM boost clock (datasheet)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--blocks", default="1,2,4,32,132")
    ap.add_argument("--per-block", type=int, default=1024)
    a = ap.parse_args()
    import cupy as cp

    mod = cp.RawModule(code=(KERNEL_DIR / "sm_gather_probe.cu").read_text(), options=("-std=c++17",))
    kernels = {"ldg": mod.get_function("sm_gather_ldg"), "bulk": mod.get_function("sm_gather_bulk")}
    for f in kernels.values():
        f.max_dynamic_shared_size_bytes = SMEM
    table = cp.empty(TABLE_BYTES // 4, dtype=cp.uint32)
    table[:] = cp.arange(table.size, dtype=cp.uint32)
    rows_in_table = TABLE_BYTES // ROW_BYTES
    rng = np.random.default_rng(11)
    rows = cp.asarray(rng.integers(0, rows_in_table, size=LIST, dtype=np.int32))
    stream = cp.cuda.Stream(non_blocking=True)
    res: dict = {"provenance": provenance(), "clock_hz_assumed": CLOCK_HZ, "cases": []}
    i64, i32 = np.int64, np.int32
    pb = a.per_block
    for blocks in (int(b) for b in a.blocks.split(",")):
        out = cp.empty(blocks * THREADS, dtype=cp.uint32)
        per_launch = blocks * pb
        # correctness: both kernels fold the same rows to the same words, and to the host's fold of them
        firsts = {}
        for name, f in kernels.items():
            with stream:
                f((blocks,), (THREADS,), (table, rows, i64(0), i32(pb), out), shared_mem=SMEM)
            stream.synchronize()
            firsts[name] = int(np.bitwise_xor.reduce(cp.asnumpy(out)))
        want = int(
            np.bitwise_xor.reduce(cp.asnumpy(table.reshape(-1, ROW_BYTES // 4)[rows[:per_launch]]).ravel())
        )
        case: dict = {
            "blocks": blocks,
            "rows_per_block": pb,
            "checked": firsts == {"ldg": want, "bulk": want},
        }
        for name, f in kernels.items():
            for temp in ("cold", "hot"):

                def launch(i: int) -> None:
                    first = (i * per_launch) % (LIST - per_launch) if temp == "cold" else 0
                    f((blocks,), (THREADS,), (table, rows, i64(first), i32(pb), out), shared_mem=SMEM)

                with stream:
                    us = back_to_back(cp, launch, stream)
                bpb = pb * ROW_BYTES
                case[f"{name}_{temp}_us"] = us
                case[f"{name}_{temp}_bytes_per_clock_per_sm"] = bpb / (us * 1e-6 * CLOCK_HZ)
                print(
                    f"blocks {blocks:>3} {name:>4} {temp}: {us:7.2f} us  {bpb / us / 1e3:6.1f} GB/s a block "
                    f"({bpb / (us * 1e-6 * CLOCK_HZ):5.1f} B/clk at 1.98 GHz)  checked {case['checked']}",
                    flush=True,
                )
        res["cases"].append(case)
        if a.out:
            atomic_write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
