"""DReX on the DRAM engine (issue 13): wall time of a decode step at full detail and in sampled mode, and the
sampled mode's error against full detail.

    .venv/bin/python benchmarks/bench_drex.py             # every case, one subprocess each
    .venv/bin/python benchmarks/bench_drex.py --markdown  # the table for docs/benchmarks.md

System h100-drex, Llama-3-8B geometry, synthetic survival-law steps (cemsim.trace.synthetic, survival 0.05:
a 20x filter ratio, about 52K survivors per KV head at 1M tokens), k = 1024, one decode step per case.
"prepare" turns the step record into per-Key-Block work (numpy); "simulate" is the SimPy run, including every
DRAM engine call (the engine is compiled once, before timing: Numba's cache). Batch 64 at 128K needs 1.13 TB
of KV and sign bits, over DReX's 512 GB: that case runs a what-if device with cem.package_capacity 160 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES: dict[str, dict] = {
    "1M-b1-full": {"context": 1 << 20, "batch": 1, "set": {"cem.dram_detail": "full"}},
    "1M-b1-sampled": {"context": 1 << 20, "batch": 1, "set": {"cem.dram_detail": "sampled"}},
    "128K-b64-full": {
        "context": 1 << 17,
        "batch": 64,
        "set": {"cem.dram_detail": "full", "cem.package_capacity": "160 GB"},
    },
    "128K-b64-sampled": {
        "context": 1 << 17,
        "batch": 64,
        "set": {"cem.dram_detail": "sampled", "cem.package_capacity": "160 GB"},
    },
}


def warm_up() -> None:
    """Compile (or load from Numba's cache) the engine before anything is timed."""
    from cemsim.config.loader import load_system
    from cemsim.sim.simulate import prepare, simulate
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    system = load_system(REPO / "hwconfigs" / "h100-drex.yaml").system
    header = synthetic_header(system.geometry, k=1024)
    simulate(prepare(system, header, list(synthetic_steps(header, context=1 << 13, steps=1))))


def run_case(name: str) -> dict:
    from cemsim.config.loader import load_system
    from cemsim.sim.simulate import prepare, simulate
    from cemsim.trace.synthetic import synthetic_header, synthetic_steps

    warm_up()
    case = CASES[name]
    system = load_system(REPO / "hwconfigs" / "h100-drex.yaml", case["set"]).system
    header = synthetic_header(system.geometry, k=1024)
    steps = list(synthetic_steps(header, context=case["context"], steps=1))
    t0, c0 = time.perf_counter(), time.process_time()
    prep = prepare(system, header, steps, batch=case["batch"])
    t1 = time.perf_counter()
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
        "latency_ms": res.latency_per_token_s * 1e3,
        "attention_wait_ms": res.time_breakdown_s.get("attention_wait", 0.0) * 1e3,
        "throughput": res.throughput_tokens_per_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), help="run one case in this process and print JSON")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    rows = {}
    for name in CASES:
        out = subprocess.run(
            [sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True
        )
        rows[name] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:>17}: prepare {r['prepare_s']:.2f} s, simulate {r['simulate_s']:.2f} s, total "
            f"{r['total_s']:.2f} s (CPU {r['total_cpu_s']:.2f} s); {r['latency_ms']:.3f} ms/token, "
            f"attention wait {r['attention_wait_ms']:.3f} ms",
            file=sys.stderr,
        )
    for ctx in ("1M-b1", "128K-b64"):
        full, sampled = rows[f"{ctx}-full"], rows[f"{ctx}-sampled"]
        err = sampled["latency_ms"] / full["latency_ms"] - 1
        wait = sampled["attention_wait_ms"] / full["attention_wait_ms"] - 1
        print(f"{ctx}: sampled vs full: latency {err:+.3%}, attention wait {wait:+.3%}", file=sys.stderr)
        sampled["error_vs_full"], sampled["wait_error_vs_full"] = err, wait
    if args.markdown:
        print(
            "| case | context | batch | prepare (s) | simulate (s) | total (s) | total CPU (s) | events "
            "| latency (ms/token) | attention wait (ms) | sampled vs full |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows.values():
            err = (
                f"{r['error_vs_full']:+.2%} ({r['wait_error_vs_full']:+.2%} wait)"
                if "error_vs_full" in r
                else ""
            )
            print(
                f"| {r['case']} | {r['context']} | {r['batch']} | {r['prepare_s']:.2f} | {r['simulate_s']:.2f} | "
                f"{r['total_s']:.2f} | {r['total_cpu_s']:.2f} | {r['events']} | {r['latency_ms']:.3f} | "
                f"{r['attention_wait_ms']:.3f} | {err} |"
            )
    else:
        print(json.dumps(list(rows.values()), indent=2))


if __name__ == "__main__":
    main()
