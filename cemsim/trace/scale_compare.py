"""Compare a GPU capture at scale (128K, 1M tokens) with the CPU projection of a short capture to the same length.

The projection (``cemsim trace project``) extends a short real trace, by default the shipped
``traces/smollm2-4k.parquet``, to the real trace's context and step count in the same geometry; both are then
reduced by :func:`cemsim.trace.validate.head_stats` (survivors per (layer, KV head), busiest bank, survivors per
128-key block) and compared by :func:`cemsim.trace.validate.compare`. On top of that this module keeps the
per-head table and checks that the two traces are comparable (same thresholds and ITQ setting), warning when not.

    python -m cemsim.trace.scale_compare --real gpu-1m.parquet [--sources traces/smollm2-4k.parquet] [--json OUT]

CPU only (the projection needs the config layer, pydantic); the GPU side is benchmarks/gpu/capture_at_scale.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cemsim.paths import repo_root
from cemsim.trace.format import TraceReader
from cemsim.trace.validate import compare, head_stats


def default_source() -> Path:
    root = repo_root()
    return (root or Path(".")) / "traces" / "smollm2-4k.parquet"


def _warnings(real_h: Any, src_h: Any) -> list[str]:
    out = []
    if real_h.thresholds != src_h.thresholds:
        out.append("thresholds differ between the real and the source trace: survivors are not comparable")
    if real_h.itq != src_h.itq:
        out.append(f"ITQ differs (real {real_h.itq}, source {src_h.itq})")
    if real_h.dtype != src_h.dtype:
        out.append(
            f"dtype differs (real {real_h.dtype}, source {src_h.dtype}): signs of keys near 0 can flip"
        )
    if (real_h.extra or {}).get("extrapolated"):
        out.append(
            "the real trace ran beyond the model's trained positions (an extrapolating model); "
            f"text repeated {(real_h.extra or {}).get('text_repeats', 1)}x"
        )
    return out


def compare_capture(
    real: str | Path, sources: list[str | Path] | None = None, *, seed: int = 0, early_tokens: int = 0
) -> dict[str, Any]:
    """Project ``sources`` to the real trace's context and steps; the error summary and per-head tables."""
    from cemsim.trace.projection import project_file

    real = Path(real)
    srcs = [Path(s) for s in (sources or [default_source()])]
    with TraceReader(real) as rr:
        ctx, steps, real_h = int(rr.summary["context_min"]), rr.num_steps, rr.header
    with TraceReader(srcs[0]) as sr:
        src_h = sr.header
    with tempfile.TemporaryDirectory() as d:
        proj = Path(d) / "proj.parquet"
        header = project_file(
            srcs,
            proj,
            context=ctx,
            steps=steps,
            early_tokens=early_tokens,
            seed=seed,
            allow_extrapolation=True,
        )
        res = compare(proj, real)
        p, r = head_stats(proj), head_stats(real)
    res.update(
        real=str(real),
        sources=[str(s) for s in srcs],
        context=ctx,
        steps=steps,
        real_survivors=r["survivors"].tolist(),
        proj_survivors=p["survivors"].tolist(),
        real_bank_max=r["bank_max"].tolist(),
        proj_bank_max=p["bank_max"].tolist(),
        keys_considered=r["keys_considered"].tolist(),
        real_survival_fraction=float(r["survivors"].sum() / max(r["keys_considered"].sum(), 1)),
        proj_survival_fraction=float(p["survivors"].sum() / max(p["keys_considered"].sum(), 1)),
        rel_se_median=header.projection["expected_survivors_at_target"]["rel_se_median"],
        warnings=_warnings(real_h, src_h),
    )
    return res


def format_report(res: dict[str, Any]) -> str:
    """Markdown: one summary table and one per-(layer, KV head) table of survivors and busiest bank."""
    lines = [
        f"Real: {res['real']} ({res['context']:,} tokens, {res['steps']} steps). "
        f"Projected from: {', '.join(res['sources'])}.",
        "",
        "| survivors/head real -> proj | total err | weighted head err | median head err | p90 head err | log corr "
        "| survival fraction real -> proj | busiest bank real -> proj (median err) | block p50/p90/p99/max real | proj "
        "| fit rel s.e. |",
        "|---|---:|---:|---:|---:|---:|---|---|---|---|---:|",
        f"| {res['survivors_real_mean']:.1f} -> {res['survivors_proj_mean']:.1f} | {100 * res['total_rel_err']:+.0f}% "
        f"| {100 * res['head_weighted_abs_err']:.0f}% | {100 * res['head_abs_rel_err_median']:.0f}% "
        f"| {100 * res['head_abs_rel_err_p90']:.0f}% | {res['head_log_corr']:.2f} "
        f"| {100 * res['real_survival_fraction']:.3f}% -> {100 * res['proj_survival_fraction']:.3f}% "
        f"| {res['bank_max_real_mean']:.1f} -> {res['bank_max_proj_mean']:.1f} "
        f"({100 * res['bank_max_abs_rel_err_median']:.0f}%) "
        f"| {'/'.join(f'{x:.0f}' for x in res['block_pct_real'])} "
        f"| {'/'.join(f'{x:.0f}' for x in res['block_pct_proj'])} | {100 * res['rel_se_median']:.0f}% |",
        "",
        "Per layer and KV head: mean survivors real / projected (busiest bank real / projected).",
        "",
    ]
    rs, ps = np.asarray(res["real_survivors"]), np.asarray(res["proj_survivors"])
    rb, pb = np.asarray(res["real_bank_max"]), np.asarray(res["proj_bank_max"])
    heads = rs.shape[1]
    lines.append("| layer | " + " | ".join(f"head {h}" for h in range(heads)) + " |")
    lines.append("|---:|" + "---|" * heads)
    for layer in range(rs.shape[0]):
        cells = [
            f"{rs[layer, h]:.0f} / {ps[layer, h]:.0f} ({rb[layer, h]:.0f} / {pb[layer, h]:.0f})"
            for h in range(heads)
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    for w in res["warnings"]:
        lines.append(f"\nWARNING: {w}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, required=True, help="the captured trace (e.g. from the GPU)")
    ap.add_argument(
        "--sources", nargs="+", type=Path, help="short traces to project (default: the shipped 4K)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the full result as JSON")
    args = ap.parse_args(argv)
    res = compare_capture(args.real, args.sources, seed=args.seed)
    print(format_report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
