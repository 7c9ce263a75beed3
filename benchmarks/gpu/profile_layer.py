"""One fused layer (batch 1, planted 5 % survival, Llama-3-8B geometry) run twice, for Nsight Compute on the device:

    ncu --clock-control none -k regex:'ls_select|ls_topk' --launch-skip 2 --launch-count 2 \\
        --section SpeedOfLight ... python3 benchmarks/gpu/profile_layer.py --ctx 131072 --config fused8/sample/64/fold

(the first run compiles and warms; ncu's filter then skips its kernels and profiles the second run's)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fused import PLANTED_THRESHOLD, Data, parse_config_key, shape_for

from cemsim.gpu.fused import FusedLongSight


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctx", type=int, default=131072)
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--config", default="fused8/sample/64/fold")
    a = ap.parse_args()
    import cupy as cp
    import torch

    s = shape_for(a.users, a.ctx, 0.05)
    data = Data(cp, torch, a.users, a.ctx, seed=1, planted=0.05)
    thresholds = cp.full(s.rows, PLANTED_THRESHOLD, dtype=cp.int32)
    p = FusedLongSight(s, config=parse_config_key(a.config))
    for _ in range(2):
        p.run(data.ksig, data.qsig, thresholds, data.q, data.keys, data.vals)
        cp.cuda.Device().synchronize()
    print(f"survivors {int(p.count.sum())}, config {p.config}", flush=True)


if __name__ == "__main__":
    main()
