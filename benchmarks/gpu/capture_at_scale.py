"""Capture key-access traces from the bundled SmolLM2-135M at 128K and 1M tokens on a GPU (issue 7, item 4).

Runs on the GPU machine (needs torch with CUDA, transformers, pyarrow, numpy; CuPy for the filter if the policy
code uses it; no pydantic, simpy or gguf at import). For each context: bf16 model on the GPU, chunked dense
prefill with the KV cache in HBM, a few teacher-forced decode steps under LongSight (and dense, if asked), each
phase timed with torch.cuda.synchronize. Writes under --out: one trace per (context, policy) and summary.json
(rewritten after every context, so a crash keeps what finished). A context that fails (out of memory, say) is
recorded with its error and the next one runs.

    PYTHONUNBUFFERED=1 python benchmarks/gpu/capture_at_scale.py --out $OUT --contexts 131072,1048576 \\
        --thresholds traces/smollm2-4k.parquet --itq-file PATH/cemsim-itq.npz

Back on a CPU machine, compare each trace with the projection of the shipped 4K trace to the same length:

    python -m cemsim.trace.scale_compare --real OUT/smollm2-1048576.parquet

Contexts beyond the model's 8,192 trained positions run with allow_extrapolation (recorded in the headers).
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before torch is imported

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BANKS_PER_SLICE = 1024  # as in cemsim.trace.validate (DReX: one 128-key block per bank, 1,024 banks a slice)


def trace_summary(path: Path) -> dict:
    """Per (layer, KV head) mean survivors, keys considered and survival fraction; per-bank and per-block load."""
    from cemsim.trace.format import TraceReader

    surv, kc, bank_max, bank_mean, blocks = [], [], [], [], []
    with TraceReader(path) as r:
        h = r.header
        for s in r.iter_steps(topk=False):
            surv.append(s.survivors)
            kc.append(s.keys_considered)
            b = s.survivor_blocks.astype(np.int64)
            pad = -b.shape[-1] % BANKS_PER_SLICE
            per_bank = np.pad(b, ((0, 0), (0, 0), (0, pad))).reshape(*b.shape[:2], -1, BANKS_PER_SLICE).sum(2)
            bank_max.append(per_bank.max(-1))
            bank_mean.append(per_bank.mean(-1))
            lo, hi = s.sinks // h.block_size + 1, (s.context_len - s.window) // h.block_size
            blocks.append(s.survivor_blocks[..., lo:hi].reshape(-1))
        size = os.path.getsize(path)
    surv_m, kc_m = np.mean(surv, 0), np.mean(kc, 0)
    allb = np.concatenate(blocks) if blocks else np.zeros(0)
    return {
        "trace": path.name,
        "bytes": size,
        "policy": h.policy,
        "steps": len(surv),
        "dtype": h.dtype,
        "k": h.k,
        "survivors_mean_per_head": surv_m.round(2).tolist(),
        "keys_considered_mean_per_head": kc_m.round(1).tolist(),
        "survival_fraction_per_head": (surv_m / np.maximum(kc_m, 1)).round(6).tolist(),
        "survivors_total_mean": float(surv_m.sum()),
        "survival_fraction_overall": float(surv_m.sum() / max(kc_m.sum(), 1)),
        "busiest_bank_mean_per_head": np.mean(bank_max, 0).round(2).tolist(),
        "mean_bank_load_per_head": np.mean(bank_mean, 0).round(3).tolist(),
        # dense and window traces have no sparse region, hence no blocks to describe
        "block_survivors_p50_p90_p99_max": [float(np.percentile(allb, q)) for q in (50, 90, 99, 100)]
        if allb.size
        else None,
        "header_extra": h.extra,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--contexts", default="131072,1048576", help="comma-separated prompt lengths in tokens")
    ap.add_argument("--decode-steps", type=int, default=4)
    ap.add_argument("--policies", default="longsight", help="e.g. longsight or longsight,dense")
    ap.add_argument(
        "--thresholds",
        type=Path,
        default=REPO / "traces" / "smollm2-4k.parquet",
        help="thresholds file or a LongSight trace whose thresholds to reuse (default: the shipped 4K)",
    )
    ap.add_argument("--calibrate", action="store_true", help="calibrate thresholds instead of --thresholds")
    ap.add_argument("--itq-file", type=Path, help="ITQ rotations used by the 4K trace (cemsim-itq.npz)")
    ap.add_argument("--text", default="stdlib-source", help="stdlib-source (default), stdlib-docs, or a file")
    ap.add_argument("--repeat-text", action="store_true", help="cycle the text when it is too short")
    ap.add_argument("--prefill-chunk", type=int, default=8192)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="bf16 (default on cuda) or fp32")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()

    import torch

    from cemsim.atomic import atomic_write_text
    from cemsim.trace.capture import CaptureSpec, capture, device_info, parse_policies

    args.out.mkdir(parents=True, exist_ok=True)
    policies = parse_policies(args.policies)
    summary: dict = {
        "device": device_info(args.device),
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [],
    }

    def save() -> None:
        atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))

    def progress(what: str, done: int, total: int) -> None:
        if done == total or what.startswith("decode") or done % 16 == 0:
            print(f"  [{time.strftime('%H:%M:%S')}] {what} {done}/{total}", flush=True)

    for ctx in (int(c) for c in args.contexts.split(",") if c.strip()):
        print(
            f"=== context {ctx:,} tokens, {args.decode_steps} decode steps, {','.join(policies)}", flush=True
        )
        run: dict = {"context": ctx, "policies": list(policies)}
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            spec = CaptureSpec(
                model=args.model,
                tokens=ctx,
                decode_steps=args.decode_steps,
                policies=policies,
                thresholds_file=None if args.calibrate else args.thresholds,
                itq_file=args.itq_file,
                text=args.text,
                device=args.device,
                dtype=args.dtype,
                prefill_chunk=args.prefill_chunk,
                allow_extrapolation=True,
                repeat_text=args.repeat_text,
            )
            paths = capture(spec, args.out / f"smollm2-{ctx}.parquet", progress, timings=timings)
            run["traces"] = {p: trace_summary(path) for p, path in paths.items()}
            run["ok"] = True
        except BaseException as exc:  # OOM, a CUDA error, a bad input: record it and go on
            if isinstance(exc, KeyboardInterrupt):
                raise
            run["ok"] = False
            run["error"] = f"{type(exc).__name__}: {exc}"
            run["traceback"] = traceback.format_exc()[-4000:]
            print(f"  FAILED: {run['error']}", flush=True)
        run["timings_s"] = timings
        run["wall_s"] = round(time.perf_counter() - t0, 2)
        if args.device.startswith("cuda"):
            run["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        summary["runs"].append(run)
        save()
        print(f"  done in {run['wall_s']} s; timings {timings}", flush=True)
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0 if all(r["ok"] for r in summary["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
