"""The DES against the independent analytic model on every shipped hwconfig (docs/validation.md, section 3).

    python benchmarks/analytic_table.py [--law] [HWCONFIG ...] > table.md

Llama-3-8B, two decode steps of the steps tests/sim/test_analytic.py checks (survivors binomial per 128-key
block at about 5 %, heads within +-50 %; k 1,024), or with --law cemsim.trace.synthetic's survival law
(survival 0.05, log-normal spread 0.5 across heads, k by LongSight's published schedule). Batch 1 at 4K /
64K / 1M and batch 8 / 16 at 16K. Prints one markdown table: the DES latency per token, the analytic point
estimate, their relative difference and the analytic bounds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# this checkout's cemsim (not whichever one the environment installed) and the tests' step generator, so the
# table shows the code and the cases CI checks
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cemsim.attention.policies import published_k  # noqa: E402
from cemsim.config.loader import load_system  # noqa: E402
from cemsim.sim.analytic import analytic  # noqa: E402
from cemsim.sim.simulate import prepare, simulate  # noqa: E402
from cemsim.trace.synthetic import synthetic_header, synthetic_steps  # noqa: E402
from tests.sim.conftest import make_header, make_step  # noqa: E402

SINGLE = [(4096, 1), (65536, 1), (1 << 20, 1)]  # one user: the two must agree
CONTENDED = [(16384, 8), (16384, 16)]  # users contend: the DES must be the slower


def row(hw: Path, context: int, batch: int, steps: int, law: bool) -> str:
    system = load_system(hw).system
    if law:
        header = synthetic_header(system.geometry, k=published_k(context))
        records = list(synthetic_steps(header, context=context, steps=steps))
    else:
        header = make_header(system.geometry)
        records = [make_step(header, context, step=i) for i in range(steps)]
    prep = prepare(system, header, records, batch=batch)
    des, est = simulate(prep), analytic(prep)
    head = f"| {hw.stem} | {context:,} | {batch} |"
    if not des.fits:
        return f"{head} does not fit | | | |"
    d, a = des.latency_per_token_s * 1e3, est.latency_per_token_s * 1e3
    lo, hi = est.latency_bounds_s["lower"] * 1e3, est.latency_bounds_s["upper"] * 1e3
    return f"{head} {d:.4f} | {a:.4f} | {d / a - 1:+.3%} | [{lo:.3f}, {hi:.3f}] |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--law", action="store_true", help="cemsim.trace.synthetic's survival law instead")
    ap.add_argument("hwconfigs", nargs="*", type=Path, help="default: every hwconfigs/*.yaml")
    args = ap.parse_args()
    configs = args.hwconfigs or sorted((REPO / "hwconfigs").glob("*.yaml"))
    print("| hwconfig | context | batch | DES (ms) | analytic estimate (ms) | DES / estimate - 1 |", end="")
    print(" analytic [lower, upper] (ms) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for cases in (SINGLE, CONTENDED):
        for hw in configs:
            for context, batch in cases:
                print(row(hw, context, batch, args.steps, args.law), flush=True)


if __name__ == "__main__":
    main()
