"""One launch of each SCF filter kernel worth profiling, at 16M keys, for Nsight Compute on the device:

    ncu --clock-control none --section SpeedOfLight ... python3 benchmarks/gpu/profile_filters.py

(the frag b1-MMA filter at G = 8 and 16 for D = 128 and 64, today's b1-MMA and popc bitmaps at G = 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cemsim.gpu import reference as ref
from cemsim.gpu.fused import FragFilterKernel, bitmap_filter
from cemsim.gpu.sign_layout import to_frag


def main() -> None:
    import cupy as cp

    n = 1 << 24
    for d in (128, 64):
        w = d // 64
        keys = cp.random.randint(0, 2**63 - 1, size=(n, w), dtype=cp.int64).view(cp.uint64)
        frag = to_frag(keys)
        out = cp.empty(n // 32, dtype=cp.uint32)
        for g in (8, 16):
            q = cp.asarray(np.random.default_rng(g).integers(0, 2**64, size=(g, w), dtype=np.uint64))
            t = np.int32(ref.survival_threshold(d, g, 0.05))
            FragFilterKernel(w, g)(q, frag, n, g, int(t), out)
            if g == 8 and d == 128:
                for name in ("mma", "popc"):
                    bitmap_filter(name, w)(
                        (-(-(n // 32) // 64),),
                        (256,),
                        (q, keys, np.int64(n), np.int32(g), np.int32(d), t, out),
                    )
        cp.cuda.Device().synchronize()


if __name__ == "__main__":
    main()
