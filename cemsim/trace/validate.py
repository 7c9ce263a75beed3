"""Compare a projected trace with a real one of the same geometry and context (docs/projection.md).

Per (layer, KV head) it averages over steps: survivors, and the load of the busiest bank. Banks follow the
DReX layout: one 128-key block of a context slice per bank, 1,024 banks (8 channels x 128) per slice, so
block b of a head lands in bank b mod 1024 (at 8K tokens every block has its own bank). It also compares
the pooled distribution of survivors per block (p50, p90, p99, max).

    python -m cemsim.trace.validate --sources c2k.parquet c4k.parquet --real c8k.parquet
    python -m cemsim.trace.validate --source-sets c2k.parquet c4k.parquet c2k.parquet,c4k.parquet --real c8k.parquet
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cemsim.trace.format import TraceReader
from cemsim.trace.projection import project_file

BANKS_PER_SLICE = 1024


def head_stats(path: Path) -> dict[str, np.ndarray]:
    surv, bank_max, blocks, kc = [], [], [], []
    with TraceReader(path) as r:
        for s in r.iter_steps(topk=False):
            surv.append(s.survivors)
            kc.append(s.keys_considered)
            nb = s.survivor_blocks.shape[-1]
            pad = -nb % BANKS_PER_SLICE
            b = np.pad(s.survivor_blocks.astype(np.int64), ((0, 0), (0, 0), (0, pad)))
            per_bank = b.reshape(*b.shape[:2], -1, BANKS_PER_SLICE).sum(2)
            bank_max.append(per_bank.max(-1))
            full = s.survivor_blocks[
                ..., s.sinks // r.header.block_size + 1 : (s.context_len - s.window) // r.header.block_size
            ]
            blocks.append(full.reshape(-1))
    return {
        "survivors": np.mean(surv, 0),
        "bank_max": np.mean(bank_max, 0),
        "keys_considered": np.mean(kc, 0),
        "blocks": np.concatenate(blocks),
    }


def compare(projected: Path, real: Path) -> dict[str, Any]:
    p, r = head_stats(projected), head_stats(real)
    rel = p["survivors"] / np.maximum(r["survivors"], 1) - 1
    rel_bank = p["bank_max"] / np.maximum(r["bank_max"], 1) - 1
    q = (50, 90, 99, 100)
    return {
        "survivors_real_mean": float(r["survivors"].mean()),
        "survivors_proj_mean": float(p["survivors"].mean()),
        "total_rel_err": float(p["survivors"].sum() / r["survivors"].sum() - 1),
        "head_abs_rel_err_median": float(np.median(np.abs(rel))),
        # Survivor-weighted: sum |proj - real| / sum real over heads (heads with few survivors weigh little).
        "head_weighted_abs_err": float(np.abs(p["survivors"] - r["survivors"]).sum() / r["survivors"].sum()),
        "head_abs_rel_err_p90": float(np.percentile(np.abs(rel), 90)),
        "head_log_corr": float(
            np.corrcoef(np.log1p(p["survivors"]).ravel(), np.log1p(r["survivors"]).ravel())[0, 1]
        ),
        "bank_max_real_mean": float(r["bank_max"].mean()),
        "bank_max_proj_mean": float(p["bank_max"].mean()),
        "bank_max_abs_rel_err_median": float(np.median(np.abs(rel_bank))),
        "block_pct_real": [float(np.percentile(r["blocks"], x)) for x in q],
        "block_pct_proj": [float(np.percentile(p["blocks"], x)) for x in q],
    }


def run(sources: list[Path], real: Path, early_tokens: int = 0, seed: int = 0) -> dict[str, Any]:
    with TraceReader(real) as rr:
        ctx, steps = int(rr.summary["context_min"]), rr.num_steps
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "proj.parquet"
        header = project_file(
            sources,
            out,
            context=ctx,
            steps=steps,
            early_tokens=early_tokens,
            seed=seed,
            allow_extrapolation=True,
        )
        res = compare(out, real)
    res["rel_se_median"] = header.projection["expected_survivors_at_target"]["rel_se_median"]
    res["beta_median"] = float(np.median(header.projection["fit"]["beta"]))
    return res


def table(source_sets: list[list[Path]], real: Path, early_tokens: int = 0) -> str:
    """A markdown table, one row per set of sources, against one real trace."""
    head = (
        "| sources | survivors/head real -> proj | total err | weighted head err | median head err | p90 head err "
        "| log corr | busiest bank real -> proj (err) | block p50/p90/p99/max real | proj | fit rel s.e. | beta |\n"
        "|---|---|---:|---:|---:|---:|---:|---|---|---|---:|---:|\n"
    )
    rows = []
    for srcs in source_sets:
        r = run(srcs, real, early_tokens)
        rows.append(
            f"| {' + '.join(p.stem for p in srcs)} | {r['survivors_real_mean']:.1f} -> {r['survivors_proj_mean']:.1f} "
            f"| {100 * r['total_rel_err']:+.0f}% | {100 * r['head_weighted_abs_err']:.0f}% "
            f"| {100 * r['head_abs_rel_err_median']:.0f}% | {100 * r['head_abs_rel_err_p90']:.0f}% "
            f"| {r['head_log_corr']:.2f} | {r['bank_max_real_mean']:.1f} -> {r['bank_max_proj_mean']:.1f} "
            f"({100 * r['bank_max_abs_rel_err_median']:.0f}%) "
            f"| {'/'.join(f'{x:.0f}' for x in r['block_pct_real'])} | {'/'.join(f'{x:.0f}' for x in r['block_pct_proj'])} "
            f"| {100 * r['rel_se_median']:.0f}% | {r['beta_median']:.2f} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", type=Path, help="one set of source traces")
    ap.add_argument(
        "--source-sets", nargs="+", help="several sets, each comma-separated paths: a table row each"
    )
    ap.add_argument("--real", type=Path, required=True)
    ap.add_argument("--early-tokens", type=int, default=0)
    args = ap.parse_args()
    import json

    if args.source_sets:
        sets = [[Path(p) for p in s.split(",")] for s in args.source_sets]
        print(table(sets, args.real, args.early_tokens))
    elif args.sources:
        print(json.dumps(run(args.sources, args.real, args.early_tokens), indent=2))
    else:
        ap.error("give --sources or --source-sets")


if __name__ == "__main__":
    main()
