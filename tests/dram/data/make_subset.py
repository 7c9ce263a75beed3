"""Build tests/dram/data/reference_subset.npz + .json from ../shared/dram-reference (run from the repo root).

The subset: the DRAMsim3 LP5X-8533-like and Ramulator 2 LPDDR5-6400 records (both simulators, identical
coordinate streams except p1) with their configs, coordinates packed as
rank | bankgroup << 1 | bank << 3 | column << 5 | new_key << 11 (uint16) and row (uint16).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
REF = REPO.parent / "shared" / "dram-reference"
OUT = Path(__file__).resolve().parent
CONFIGS = {
    "LP5X-8533-like_x16": "dramsim3_LP5X-8533-like_x16.ini",
    "LPDDR5-6400_x16_2r": "ram2_LPDDR5-6400_x16_2r.timings.json",
}


def main() -> None:
    recs = [r for r in json.loads((REF / "results.json").read_text())["records"] if r["config"] in CONFIGS]
    arrays = {}
    for r in recs:
        name = r["pattern_file"]
        if name in arrays:
            continue
        z = np.load(REF / name)
        key = z["key_id"]
        new = np.ones(key.size, dtype=np.uint16)
        new[1:] = key[1:] != key[:-1]
        packed = (z["rank"] | z["bankgroup"] << 1 | z["bank"] << 3 | z["column"] << 5).astype(
            np.uint16
        ) | new << 11
        arrays[name + ":packed"] = packed
        arrays[name + ":row"] = z["row"].astype(np.uint16)
    np.savez_compressed(OUT / "reference_subset.npz", **arrays)
    keep = ("simulator", "config", "pattern", "K", "read_GBps", "read_lat_ns_mean", "pattern_file")
    (OUT / "reference_subset.json").write_text(json.dumps([{k: r[k] for k in keep} for r in recs], indent=1))
    for f in CONFIGS.values():
        shutil.copy(REF / "configs" / f, OUT / f)


if __name__ == "__main__":
    main()
