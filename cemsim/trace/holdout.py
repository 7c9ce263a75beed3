"""Held-out test of the projection law: fit on short captures, predict longer real ones (docs/projection.md).

For each test capture the law fitted on ``fit`` traces predicts, per (layer, KV head), the expected survivors
at every decode step's context (the mean of the law, no random draw) with its standard error from the fit
covariance; both are averaged over the test's steps and set against the real mean survivors. Only heads
with a sparse stage count (full-attention layers of local/global models).

    python -m cemsim.trace.holdout --fit traces/gemma3-270m-4096.parquet traces/gemma3-270m-8192.parquet \\
        --test traces/gemma3-270m-16384.parquet traces/gemma3-270m-32752.parquet
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cemsim.trace.format import TraceReader
from cemsim.trace.projection import expected_survivors, fit_traces


def _real(path: str | os.PathLike[str]) -> tuple[Any, np.ndarray, np.ndarray, list[int]]:
    with TraceReader(path) as r:
        steps = list(r.iter_steps(topk=False))
        h = r.header
    surv = np.mean([s.survivors for s in steps], 0)
    kc = np.mean([s.keys_considered for s in steps], 0)
    return h, surv, kc, [s.context_len for s in steps]


def holdout(
    fit_paths: Sequence[str | os.PathLike[str]], test_paths: Sequence[str | os.PathLike[str]]
) -> dict:
    """Per test trace: predicted vs real survivors per head, relative errors, z-scores, filter ratios."""
    fit, _ = fit_traces(fit_paths)
    out: dict[str, Any] = {"fit": [str(p) for p in fit_paths], "tests": []}
    for path in test_paths:
        h, real, kc, ctxs = _real(path)
        pred = np.zeros_like(real)
        var = np.zeros_like(real)
        for c in ctxs:
            e, se = expected_survivors(fit, h, c)
            pred += e / len(ctxs)
            var += se**2 / len(ctxs)
        se = np.sqrt(var)
        full = h.full_layers
        p, r, s_, k = pred[full], real[full], se[full], kc[full]
        rel = p / np.maximum(r, 1e-9) - 1
        out["tests"].append(
            {
                "path": str(path),
                "context": int(np.mean(ctxs)),
                "heads": [[int(layer), int(hh)] for layer in full for hh in range(h.kv_heads)],
                "real_survivors": np.round(r.ravel(), 1).tolist(),
                "pred_survivors": np.round(p.ravel(), 1).tolist(),
                "pred_se": np.round(s_.ravel(), 1).tolist(),
                "rel_err": np.round(rel.ravel(), 4).tolist(),
                "z": np.round(((p - r) / np.maximum(s_, 1e-9)).ravel(), 2).tolist(),
                "total_rel_err": float(p.sum() / r.sum() - 1),
                "head_abs_rel_err_median": float(np.median(np.abs(rel))),
                "filter_ratio_real": float(k.sum() / r.sum()),
                "filter_ratio_pred": float(k.sum() / p.sum()),
                "real_filter_ratio_per_head": np.round((k / np.maximum(r, 1e-9)).ravel(), 2).tolist(),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", nargs="+", required=True)
    ap.add_argument("--test", nargs="+", required=True)
    args = ap.parse_args(argv)
    print(json.dumps(holdout(args.fit, args.test), indent=1))


if __name__ == "__main__":
    main()
