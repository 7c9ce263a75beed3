"""SCF filter throughput: key-query comparisons per second for each available backend.

    .venv/bin/python benchmarks/bench_filter.py [--keys 1048576] [--dim 128] [--group 8] [--repeat 20]

One comparison = one query's sign vector against one key's (D bits). Target (issue 3): Numba >= 1 G/s for
1M keys, D = 128, G = 8 on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cemsim import kernels
from cemsim.attention.signs import pack_signs


def bench(
    backend: str, q: np.ndarray, k: np.ndarray, d: int, t: int, repeat: int, want: bool
) -> tuple[float, float]:
    """(best seconds, survivor fraction)."""
    res = kernels.scf_filter(q, k, d, t, backend=backend, return_matches=want)  # compile / warm up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        kernels.scf_filter(q, k, d, t, backend=backend, return_matches=want)
        best = min(best, time.perf_counter() - t0)
    return best, float(res.survivors.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1 << 20)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    k = pack_signs(rng.standard_normal((a.keys, a.dim), dtype=np.float32))
    q = pack_signs(rng.standard_normal((a.group, a.dim), dtype=np.float32))
    backends = ["numba", "numpy"] + (["cupy"] if kernels.cupy_available() else [])
    print(f"keys={a.keys} D={a.dim} G={a.group} cores={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    # Random signs: T = D/2 + 6 lets most keys through (survivors-only mode stops at the first passing
    # query); T = D/2 + 20 keeps about 1 in 100, so every query of the group is compared (the worst case).
    for thr in (a.dim // 2 + 6, a.dim // 2 + 20):
        for b in backends:
            for want in (False, True):
                reps = a.repeat if b != "numpy" else max(2, a.repeat // 10)
                t, frac = bench(b, q, k, a.dim, thr, reps, want)
                rate = a.keys * a.group / t
                what = "survivors+matches" if want else "survivors only"
                print(
                    f"T={thr:3d} survive={frac:5.3f} {b:6s} {what:18s} {t * 1e3:8.2f} ms  {rate / 1e9:6.2f} G comparisons/s"
                )


if __name__ == "__main__":
    main()
