"""Trace benchmarks (issue 4): bytes per decode step and read speed at 1M tokens, and capture time.

    .venv/bin/python benchmarks/bench_trace.py                 # projected 1M-token Llama-3-8B trace, k = 1024
    .venv/bin/python benchmarks/bench_trace.py --capture       # also time an 8K-prefill + 32-step CPU capture

Targets: <= 4 MB per decode step and >= 50 decode steps/s read at 1M tokens (Llama-3-8B, k = 1024);
capture of 8K prefill + 32 decode steps on the bundled model within 3 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from cemsim.trace.format import TraceReader, TraceWriter
from cemsim.trace.projection import project_file
from cemsim.trace.synthetic import SurvivalLaw, synthetic_header, synthetic_steps

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "traces" / "smollm2-4k.parquet"


def read_rate(path: Path, repeats: int = 3) -> dict[str, float]:
    best = {}
    for verify, check in ((True, True), (False, False)):
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            with TraceReader(path, verify=verify) as r:
                n = sum(1 for _ in r.iter_steps(topk=False, check=check))
            rates.append(n / (time.perf_counter() - t))
        best["verified" if verify else "unverified"] = max(rates)
    return best


def bench_projection(tmp: Path, steps: int) -> dict:
    if SHIPPED.is_file():
        sources, src_name = [SHIPPED], str(SHIPPED.relative_to(REPO))
    else:
        h = synthetic_header("smollm2-135m", k=256)
        src = tmp / "synthetic-4k.parquet"
        with TraceWriter(src, h) as w:
            for rec in synthetic_steps(h, context=4096, steps=8, law=SurvivalLaw(decay=0.3, clustering=0.1)):
                w.write(rec)
        sources, src_name = [src], "synthetic 4K (traces/smollm2-4k.parquet missing)"
    out = tmp / "p1m.parquet"
    t = time.perf_counter()
    project_file(
        sources, out, context=1 << 20, target="llama3-8b", k=1024, steps=steps, allow_extrapolation=True
    )
    proj_s = time.perf_counter() - t
    size = os.path.getsize(out)
    return {
        "source": src_name,
        "steps": steps,
        "project_s": proj_s,
        "bytes_per_step": size / steps,
        "read_steps_per_s": read_rate(out),
    }


def bench_synthetic_1m(tmp: Path, steps: int) -> dict:
    h = synthetic_header("llama3-8b", k=1024)
    out = tmp / "s1m.parquet"
    recs = list(
        synthetic_steps(h, context=1 << 20, steps=steps, law=SurvivalLaw(survival=0.05, clustering=0.1))
    )
    t = time.perf_counter()
    with TraceWriter(out, h) as w:
        for rec in recs:
            w.write(rec)
    write_s = time.perf_counter() - t
    return {
        "bytes_per_step": os.path.getsize(out) / steps,
        "write_steps_per_s": steps / write_s,
        "read_steps_per_s": read_rate(out),
    }


def bench_capture(tmp: Path, tokens: int, steps: int) -> dict:
    from cemsim.trace.capture import CaptureSpec, capture

    t = time.perf_counter()
    paths = capture(CaptureSpec(tokens=tokens, decode_steps=steps), tmp / "cap.parquet")
    wall = time.perf_counter() - t
    return {
        "tokens": tokens,
        "decode_steps": steps,
        "wall_s": wall,
        "bytes": os.path.getsize(paths["longsight"]),
        "load_avg_1min": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16, help="decode steps of the 1M-token traces")
    ap.add_argument("--capture", action="store_true", help="also time a CPU capture (minutes)")
    ap.add_argument(
        "--capture-tokens", type=int, default=8160, help="8K minus the decode steps: max positions 8192"
    )
    ap.add_argument("--capture-steps", type=int, default=32)
    args = ap.parse_args()
    results: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results["projected_1m_llama3_8b_k1024"] = bench_projection(tmp, args.steps)
        results["synthetic_1m_llama3_8b"] = bench_synthetic_1m(tmp, max(4, args.steps // 4))
        if args.capture:
            results["capture"] = bench_capture(tmp, args.capture_tokens, args.capture_steps)
    p = results["projected_1m_llama3_8b_k1024"]
    print(
        f"projected 1M Llama-3-8B k=1024: {p['bytes_per_step'] / 1e6:.2f} MB/step (target <= 4), "
        f"read {p['read_steps_per_s']['verified']:.0f} steps/s verified, "
        f"{p['read_steps_per_s']['unverified']:.0f} unverified (target >= 50); projection {p['project_s']:.1f} s"
    )
    s = results["synthetic_1m_llama3_8b"]
    print(
        f"synthetic 1M Llama-3-8B: {s['bytes_per_step'] / 1e6:.2f} MB/step, write {s['write_steps_per_s']:.0f} "
        f"steps/s, read {s['read_steps_per_s']['verified']:.0f} steps/s"
    )
    if "capture" in results:
        c = results["capture"]
        print(
            f"capture {c['tokens']} + {c['decode_steps']} steps: {c['wall_s']:.0f} s (target <= 180), "
            f"load average {c['load_avg_1min']:.1f}"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
