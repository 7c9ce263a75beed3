"""DRAM engine speed (issue 13): DRAM commands per CPU-second, and the engine against DRAMsim3 on one stream.

    .venv/bin/python benchmarks/bench_dram.py                # engine alone
    .venv/bin/python benchmarks/bench_dram.py --dramsim3 PATH/replay_dramsim3   # also time DRAMsim3

Streams: random 256-B keys (8 bursts of one row in a random bank, the reference set's p3/p4 generator) on the
reference set's DRAMsim3 LP5X-8533-like config (DRAMsim3 profile) and on the lpddr5x-8533 preset (Ramulator
profile), open loop and closed loop K = 16. Times are CPU seconds of this process (time.process_time), best
of ``--repeat``, after one warm-up call (Numba compiled and cached); the machine is shared, so CPU time is the
fair measure. DRAMsim3 runs the reference set's own replay driver (dram-reference/drivers) on the same
stream as a text trace; its CPU time (user + sys of the child) includes reading that trace, its wall time
is printed too. Without a DRAMsim3 binary the reference set's recorded wall_s are shown instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from cemsim.dram import encode_address, load_dram_spec, replay

REPO = Path(__file__).resolve().parents[1]
REF = REPO.parent / "shared" / "dram-reference"
LP5X_INI = REF / "configs" / "dramsim3_LP5X-8533-like_x16.ini"


def key_stream(spec, n_keys: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    nb = spec.ranks * spec.banks
    bank = rng.integers(0, nb, n_keys)
    row = rng.integers(0, spec.rows, n_keys)
    co0 = rng.integers(0, spec.columns // 8, n_keys) * 8
    return {
        "rank": np.repeat(bank // spec.banks, 8),
        "bankgroup": np.repeat((bank % spec.banks) // spec.banks_per_group, 8),
        "bank": np.repeat(bank % spec.banks_per_group, 8),
        "row": np.repeat(row, 8),
        "column": np.repeat(co0, 8) + np.tile(np.arange(8), n_keys),
        "key_id": np.repeat(np.arange(n_keys), 8),
    }


def time_engine(spec, coords, depth, repeat: int) -> dict:
    n = coords["row"].size
    kw = {**coords, "is_write": np.zeros(n, dtype=np.int64), "depth": depth}
    replay(spec, **{k: (v[:64] if isinstance(v, np.ndarray) else v) for k, v in kw.items()})  # warm up
    best = None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        res = replay(spec, **kw)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        if best is None or cpu < best[0]:
            best = (cpu, wall, res)
    cpu, wall, res = best
    s = res.stats
    return {
        "requests": n,
        "commands": s["dram_commands"],
        "cpu_s": cpu,
        "wall_s": wall,
        "mcmd_per_cpu_s": s["dram_commands"] / cpu / 1e6,
        "us_per_request": cpu / n * 1e6,
        "read_GBps": s["read_bandwidth_bytes_per_s"] / 1e9,
        "end_tick": int(max(s["end_tick_per_channel"])),
    }


def time_dramsim3(binary: Path, spec, coords, depth) -> dict:
    addr = encode_address(spec, coords)
    n = addr.size
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.txt"
        with trace.open("w") as f:
            f.write(f"{n}\n")
            for a, k in zip(addr.tolist(), coords["key_id"].tolist(), strict=True):
                f.write(f"{a:x} 0 0 {k}\n")
        out = Path(tmp) / "out"
        out.mkdir()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        proc = subprocess.run(
            [
                str(binary),
                str(LP5X_INI),
                str(out),
                str(trace),
                str(depth or 0),
                "200000000",
                str(out / "r.bin"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - w0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall, "cycles": info["cycles"], "done": info["done"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=32768, help="keys (8 bursts each) per stream")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dramsim3", type=Path, default=os.environ.get("CEMSIM_DRAMSIM3_REPLAY"))
    args = ap.parse_args()
    rows = []
    specs = {"lpddr5x-8533 (ramulator2-lpddr5 profile)": load_dram_spec("lpddr5x-8533")}
    if LP5X_INI.is_file():
        specs = {"LP5X-8533-like .ini (dramsim3 profile)": load_dram_spec(LP5X_INI), **specs}
    for name, spec in specs.items():
        coords = key_stream(spec, args.keys)
        for depth in (None, 16):
            r = time_engine(spec, coords, depth, args.repeat)
            r.update(config=name, loop="open" if depth is None else f"closed K={depth}")
            if args.dramsim3 and "dramsim3" in name:
                d = time_dramsim3(args.dramsim3, spec, coords, depth)
                r.update(dramsim3_cpu_s=d["cpu_s"], dramsim3_wall_s=d["wall_s"], dramsim3_end=d["cycles"])
                r["speedup_cpu"] = d["cpu_s"] / r["cpu_s"]
            rows.append(r)
            extra = ""
            if "speedup_cpu" in r:
                extra = (
                    f" | DRAMsim3 {r['dramsim3_cpu_s']:.3f} s CPU ({r['dramsim3_wall_s']:.3f} s wall), "
                    f"{r['speedup_cpu']:.1f}x; end cycle {r['end_tick']} vs {r['dramsim3_end']}"
                )
            print(
                f"{name:42s} {r['loop']:12s} {r['requests']:8d} req {r['commands']:8d} cmd  "
                f"{r['cpu_s']:.3f} s CPU ({r['wall_s']:.3f} wall)  {r['mcmd_per_cpu_s']:.2f} M cmd/s  "
                f"{r['us_per_request']:.3f} us/req  {r['read_GBps']:.2f} GB/s{extra}",
                flush=True,
            )
    if not args.dramsim3 and (REF / "results.json").is_file():
        recs = json.loads((REF / "results.json").read_text())["records"]
        w = [
            r["wall_s"] for r in recs if r["simulator"] == "dramsim3" and r["config"] == "LP5X-8533-like_x16"
        ]
        print(f"no DRAMsim3 binary given; the reference set's DRAMsim3 LP5X runs took {min(w):.2f}-{max(w):.2f} s "
              "wall per 32768 requests (2 shared cores, incl. trace parsing)")  # fmt: skip


if __name__ == "__main__":
    main()
