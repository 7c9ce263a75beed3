"""Simulator benchmarks (issue 5): wall time per simulated decode step, events/s, peak memory, scaling.

    .venv/bin/python benchmarks/bench_sim.py            # every case, one subprocess each (own peak RSS)
    .venv/bin/python benchmarks/bench_sim.py --markdown # the table for docs/benchmarks.md

Inputs are in-memory synthetic steps (cemsim.trace.synthetic, Llama-3-8B geometry, LongSight policy with
k = 1024), so the numbers measure the simulator, not trace I/O. "prepare" turns a step record into per-epoch
work (numpy); "simulate" is the SimPy run, including the DRAM engine's DReX phases (cemsim/dram; the engine is
loaded from Numba's cache by a small warm-up step before the clock starts). Batch 64 at 128K needs 1.13 TB of KV + sign bits, more than
DReX's 512 GB: that case raises cem.package_capacity to 160 GB (a what-if device) so it can be simulated.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, dict] = {
    "1M-b1": {"context": 1 << 20, "batch": 1},
    "128K-b64": {"context": 1 << 17, "batch": 64, "set": {"cem.package_capacity": "160 GB"}},
    # scaling with context (batch 1) and with batch (128K)
    "32K-b1": {"context": 1 << 15, "batch": 1},
    "128K-b1": {"context": 1 << 17, "batch": 1},
    "512K-b1": {"context": 1 << 19, "batch": 1},
    "128K-b8": {"context": 1 << 17, "batch": 8},
    "128K-b32": {"context": 1 << 17, "batch": 32, "set": {"cem.package_capacity": "160 GB"}},
}


def run_case(name: str) -> dict:
    from bench_drex import warm_up

    from cemsim.config.loader import load_system
    from cemsim.sim.simulate import prepare, simulate
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    warm_up()  # the DRAM engine (DReX phases) compiled or loaded from Numba's cache before the clock starts
    case = CASES[name]
    system = load_system(REPO / "hwconfigs" / "h100-drex.yaml", case.get("set")).system
    header = synthetic_header(system.geometry, k=1024)
    steps = list(synthetic_steps(header, context=case["context"], steps=1))
    t0, c0 = time.perf_counter(), time.process_time()
    prep = prepare(system, header, steps, batch=case["batch"])
    t1, c1 = time.perf_counter(), time.process_time()
    res = simulate(prep)
    t2, c2 = time.perf_counter(), time.process_time()
    assert res.fits and res.truncated is None, (res.why_not, res.truncated)
    return {
        "case": name,
        "context": case["context"],
        "batch": case["batch"],
        "prepare_s": t1 - t0,
        "simulate_s": t2 - t1,
        "total_s": t2 - t0,
        "total_cpu_s": c2 - c0,
        "events": res.events,
        "events_per_s": res.events_per_s,
        "events_per_cpu_s": res.events / max(c2 - c1, 1e-9),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "simulated_latency_ms": res.latency_per_token_s * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), help="run one case in this process and print JSON")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    rows = []
    for name in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"{name:>9}: prepare {r['prepare_s']:.3f} s, simulate {r['simulate_s']:.3f} s, "
            f"{r['events']} events ({r['events_per_s']:,.0f}/s), peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"simulated step {r['simulated_latency_ms']:.2f} ms",
            file=sys.stderr,
        )
    if args.markdown:
        print(
            "| case | context | batch | prepare (s) | simulate (s) | total (s) | total CPU (s) | events | events/s "
            "| events/CPU-s | peak RSS (MB) | simulated step (ms) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['case']} | {r['context']} | {r['batch']} | {r['prepare_s']:.3f} | {r['simulate_s']:.3f} | "
                f"{r['total_s']:.3f} | {r['total_cpu_s']:.3f} | {r['events']} | {r['events_per_s']:,.0f} | "
                f"{r['events_per_cpu_s']:,.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['simulated_latency_ms']:.2f} |"
            )
    else:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
