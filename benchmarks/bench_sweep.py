"""Benchmark: the standard context-scaling sweep (6 systems x 9 contexts x 3 batch sizes = 162 points) on the
local process pool and on Ray, each from an empty results folder; prints wall time and Ray's overhead.

    .venv/bin/python benchmarks/bench_sweep.py [--trace TRACE] [--workers 2] [--engines local,ray]

Without --trace it writes a synthetic Llama-3-8B trace at 1M tokens (4 decode steps, survival-law model of
cemsim.trace.synthetic); `cemsim demo` uses the projected capture instead. Targets: local <= 180 s on 2 cores;
Ray overhead over local <= 30%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cemsim.sweep.runner import run_sweep

REPO = Path(__file__).resolve().parent.parent


def synthetic_trace(path: Path, context: int = 1 << 20, steps: int = 4) -> Path:
    from cemsim.trace.format import TraceWriter
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    header = synthetic_header("llama3-8b", k=1024)
    with TraceWriter(path, header) as writer:
        for rec in synthetic_steps(header, context=context, steps=steps):
            writer.write(rec)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(REPO / "analysis" / "context_scaling.yaml"))
    ap.add_argument("--trace", default=None)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--engines", default="local,ray")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        trace = args.trace or str(synthetic_trace(Path(tmp) / "llama3-8b-1m.parquet"))
        print(
            f"spec {args.spec}\ntrace {trace}\nworkers {args.workers}, cpus {os.cpu_count()}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        times: dict[str, float] = {}
        frames = {}
        for engine in args.engines.split(","):
            if engine == "ray":
                try:
                    import ray  # noqa: F401
                except ImportError:
                    print("ray: not installed (pip install 'cemsim[ray]'), skipped")
                    continue
            t0 = time.perf_counter()
            report = run_sweep(
                args.spec,
                Path(tmp) / f"out_{engine}",
                engine=engine,
                workers=args.workers,
                trace=trace,
                progress=False,
            )
            times[engine] = time.perf_counter() - t0
            frames[engine] = report.frame
            print(
                f"{engine:>5}: {len(report.frame)} points ({dict(report.counts)}) in {times[engine]:.1f} s "
                f"= {len(report.frame) / times[engine]:.2f} points/s"
            )
        if "local" in times and "ray" in times:
            cols = ["point_id", "status", "latency_per_token_s", "energy_per_token_j", "fits"]
            same = (
                frames["local"][cols]
                .sort_values("point_id")
                .reset_index(drop=True)
                .equals(frames["ray"][cols].sort_values("point_id").reset_index(drop=True))
            )
            print(
                f"ray overhead over local: {100 * (times['ray'] / times['local'] - 1):+.1f}% "
                f"(same results: {same})"
            )


if __name__ == "__main__":
    main()
