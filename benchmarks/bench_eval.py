"""Wall and CPU time of `cemsim eval` pieces on the bundled model (CPU): dense pass, sparse pass, ITQ.

    .venv/bin/python benchmarks/bench_eval.py [--tokens 8192] [--policy longsight] [--thresholds FILE]
                                              [--threshold T] [--no-itq] [--cold]
                                              [--sparse-path auto|fused|gather|full]

--cold drops the cached dense NLL first, so the dense pass is timed too (a first run); otherwise the
dense pass comes from the cache when an earlier run made it. CPU seconds (``time.process_time``, all threads
of this process) and the load average before and after are printed too: on a shared machine wall time
alone overstates the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from cemsim.attention.eval import evaluate
from cemsim.attention.model_loader import load_model
from cemsim.attention.runner import make_policy
from cemsim.attention.text import load_text
from cemsim.paths import cache_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--policy", default="longsight")
    ap.add_argument("--threshold", type=int, default=None)
    ap.add_argument("--thresholds", default=None)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--no-itq", action="store_true")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument(
        "--sparse-path",
        default="auto",
        choices=["auto", "fused", "gather", "full"],
        help="LongSight's implementation: auto takes the fused Numba kernel on CPU",
    )
    a = ap.parse_args()
    if a.cold:
        for p in (cache_dir() / "eval").glob("dense-nll-*.npy"):
            p.unlink()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    c0 = time.process_time()
    lm = load_model()
    text = load_text()
    t1 = time.perf_counter()
    cfg, info = make_policy(
        lm,
        text,
        kind=a.policy,
        context=a.tokens,
        window=a.window,
        threshold=a.threshold,
        thresholds_file=a.thresholds,
        itq=not a.no_itq,
    )
    t2 = time.perf_counter()
    rep = evaluate(lm, text, a.tokens, cfg, itq=not a.no_itq, sparse_path=a.sparse_path)
    t3 = time.perf_counter()
    c3 = time.process_time()
    print(
        json.dumps(
            {
                "tokens": a.tokens,
                "policy": a.policy,
                "sparse_path": a.sparse_path,
                "load_s": round(t1 - t0, 1),
                "policy_setup_s": round(t2 - t1, 1),
                "dense_s": round(rep.seconds["dense"], 1),
                "dense_cached": rep.dense_cached,
                "sparse_s": round(rep.seconds["sparse"], 1),
                "dense_cpu_s": round(rep.seconds["dense_cpu"], 1),
                "sparse_cpu_s": round(rep.seconds["sparse_cpu"], 1),
                "total_s": round(t3 - t0, 1),
                "total_cpu_s": round(c3 - c0, 1),
                "ppl_increase": round(rep.ppl_increase, 4),
                "ppl_dense": round(rep.ppl_dense, 4),
                "ppl_sparse": round(rep.ppl_sparse, 4),
                "filter_ratio": round(rep.filter_ratio, 2),
                "topk_recall": rep.topk_recall,
                "kv_load_reduction": rep.kv_load_reduction,
                "bytes_per_token": rep.bytes_per_token,
                "dense_bytes_per_token": rep.dense_bytes_per_token,
                "backend": rep.backend,
                "load_average_before": [round(x, 2) for x in load_before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()],
                **info,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
