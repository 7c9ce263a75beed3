"""The SCF-filter table of docs/gpu-kernels.md from a bench_fused.py results file:

    python benchmarks/gpu/filter_table.py benchmarks/gpu/results/h200-filter-run3-2026-12-02.json

Each cell: time back to back (20 launches between two events) and single launch (event-timed, host launch
latency included), each with its fraction of the copy bandwidth measured in the same run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

VARIANTS = ("popc", "mma", "mmax", "issue7_bitmap", "frag")


def table(result: dict) -> str:
    rows = result["filters"]
    by = {(r["D"], r["G"], r["variant"]): r for r in rows}
    lines = [
        "| D | G | " + " | ".join(VARIANTS) + " |",
        "|---|---|" + "---|" * len(VARIANTS),
    ]
    for d in sorted({r["D"] for r in rows}, reverse=True):
        for g in sorted({r["G"] for r in rows if r["D"] == d}):
            cells = []
            for v in VARIANTS:
                r = by.get((d, g, v))
                if r is None:
                    cells.append("–")
                    continue
                wrong = "" if r["correct"] else " WRONG"
                cells.append(
                    f"{r['b2b_us']:.1f} ({r['b2b_fraction_of_copy_bw']:.0%}) · "
                    f"{r['median_us']:.1f} ({r['fraction_of_copy_bw']:.0%}){wrong}"
                )
            lines.append(f"| {d} | {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines).replace("%", " %")


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    bw = result["hbm_copy"]["bandwidth_bytes_per_s"]
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s, {result['provenance']['date']}\n")
    print(table(result))


if __name__ == "__main__":
    main()
