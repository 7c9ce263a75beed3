"""Bit-identity corpus for DRAM kernel work (issue 13): record every per-request output and the visited-tick
count of a fixed set of replays, then check a changed kernel against the record.

    cd REPO && PYTHONPATH=. .venv/bin/python benchmarks/dram_corpus.py --save /tmp/dram-corpus.npz
    ... change cemsim/dram ...
    cd REPO && PYTHONPATH=. .venv/bin/python benchmarks/dram_corpus.py --check /tmp/dram-corpus.npz

Cases: every record of the reference set (../shared/dram-reference, if present), and synthetic streams on
the four DRAM presets under eight controller variants (default, closed page, per-bank refresh, DRAMsim3
profile, its closed-page and per-bank-refresh forms, a 300-entry queue, broadcast op ACTs), each with reads
only, 30 % writes, and 10 % writes + 20 % bank-internal ops, open loop saturating, open loop with spaced
arrivals and closed loop (K = 8), plus a three-channel closed-loop stream. Kept per case: accept, issue,
first-command and done ticks, row classes, command counts (the loop-iteration counter apart) and the number
of ticks the loop visited. ``PYTHONPATH=.`` matters: a script under benchmarks/ otherwise imports the
installed checkout's cemsim. Numba's cache only tracks the file of the jitted function (kernel.py), so after
editing schedule.py or kernel_state.py alone, delete cemsim/dram/__pycache__/*.nbi/*.nbc first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from cemsim.dram import PROFILES, DramSpec, load_dram_spec, replay
from cemsim.dram import kernel_state as K
from cemsim.dram.replay import DramResult

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.dram.test_reference import RECORDS, replay_record  # noqa: E402

PRESETS = ("lpddr5x-8533", "lpddr5-6400", "ddr5-4800", "hbm3")
MIXES = ((0, 0), (0.3, 0), (0.1, 0.2))  # (write fraction, op fraction)


def synthetic(spec: DramSpec, n: int, seed: int, wfrac: float, opfrac: float, nch: int = 1) -> dict:
    """Keys of 8 bursts in a random bank and one of 64 rows (so rows repeat), with writes and ops mixed in."""
    rng = np.random.default_rng(seed)
    nk = n // 8
    nb = spec.ranks * spec.pseudo_channels * spec.banks
    b = rng.integers(0, nb, nk)
    r = rng.integers(0, min(spec.rows, 64), nk)
    co = rng.integers(0, spec.columns // 8, nk) * 8
    m = nk * 8
    kind = np.zeros(m, np.int64)
    u = rng.random(m)
    kind[u < wfrac] = 1
    kind[(u >= wfrac) & (u < wfrac + opfrac)] = 2
    d = {
        "rank": np.repeat(b // spec.banks, 8),
        "bankgroup": np.repeat((b % spec.banks) // spec.banks_per_group, 8),
        "bank": np.repeat(b % spec.banks_per_group, 8),
        "row": np.repeat(r, 8),
        "column": np.repeat(co, 8) + np.tile(np.arange(8), nk),
        "key_id": np.repeat(np.arange(nk), 8),
        "kind": kind,
        "is_write": (kind == 1).astype(np.int64),
        "hold": np.where(kind == 2, rng.integers(1, 60, m), 0),
    }
    if nch > 1:
        d["channel"] = np.sort(rng.integers(0, nch, m))
    return d


def variants(base: DramSpec) -> dict[str, DramSpec]:
    c = base.controller
    ds3 = PROFILES["dramsim3"]
    return {
        "def": base,
        "closed": replace(base, controller=replace(c, row_policy="closed")),
        "perbank": replace(base, controller=replace(c, refresh="per_bank")),
        "ds3": base.with_controller("dramsim3"),
        "ds3closed": base.with_controller(replace(ds3, row_policy="closed", refresh="all_bank")),
        "ds3pb": base.with_controller(replace(ds3, refresh="per_bank")),
        "bigq": replace(base, controller=replace(c, queue_size=300)),
        "bcast": replace(base, act_limits="broadcast"),
    }


def cases() -> Iterator[tuple[str, Callable[[], DramResult]]]:
    for rec in RECORDS:
        name = f"ref-{rec['simulator']}-{rec['config']}-{rec['pattern']}-K{rec['K']}"
        yield name, lambda rec=rec: replay_record(rec)
    for pname in PRESETS:
        for vn, spec in variants(load_dram_spec(pname)).items():
            for si, (wf, of) in enumerate(MIXES):
                d = synthetic(spec, 12000, 7 + si, wf, of)
                arr = np.cumsum(np.random.default_rng(si).integers(0, 6, d["row"].size))
                tag = f"{pname}-{vn}-w{wf}-o{of}"
                yield f"{tag}-open", lambda spec=spec, d=d: replay(spec, **d)
                yield f"{tag}-arr", lambda spec=spec, d=d, arr=arr: replay(spec, **d, arrival=arr)
                yield f"{tag}-K8", lambda spec=spec, d=d: replay(spec, **d, depth=8)
            d = synthetic(spec, 16000, 99, 0.0 if vn.startswith("ds3") else 0.2, 0.1, nch=3)
            yield f"{pname}-{vn}-3ch-K4", lambda spec=spec, d=d: replay(spec, **d, depth=4)


def outputs(r: DramResult) -> dict[str, np.ndarray]:
    counts = r.counts.copy()
    visited = counts[:, K.C_EVENTS].copy()
    counts[:, K.C_EVENTS] = 0
    return {
        "done": r.done,
        "accepted": r.accepted,
        "issued": r.issued,
        "first_command": r.first_command,
        "row_class": r.row_class,
        "counts": counts,
        "visited_ticks": visited,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path, help="record the corpus here (.npz)")
    mode.add_argument("--check", type=Path, help="compare against this record")
    args = ap.parse_args()
    ref = None if args.save else np.load(args.check)
    got: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    ncases = 0
    bad_out: list[str] = []
    bad_visits: list[str] = []
    for name, run in cases():
        ncases += 1
        for field, value in outputs(run()).items():
            key = f"{name}|{field}"
            if ref is None:
                got[key] = value
            elif key not in ref.files or not np.array_equal(ref[key], value):
                (bad_visits if field == "visited_ticks" else bad_out).append(key)
    if args.save:
        tmp = args.save.with_name(args.save.name + ".tmp.npz")
        np.savez_compressed(tmp, **got)
        tmp.replace(args.save)
        print(f"recorded {ncases} cases ({len(got)} arrays) in {time.perf_counter() - t0:.0f} s: {args.save}")
        return
    print(f"{ncases} cases in {time.perf_counter() - t0:.0f} s: {len(bad_out)} output arrays differ, "
          f"{len(bad_visits)} visited-tick counts differ")  # fmt: skip
    for key in (bad_out + bad_visits)[:20]:
        print("  differs:", key)
    sys.exit(1 if bad_out or bad_visits else 0)


if __name__ == "__main__":
    main()
