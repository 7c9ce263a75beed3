"""Build tests/dram/data/dramsim3_energy.json: DRAMsim3's own energy statistics on every DRAMsim3 stream of the
reference set (../shared/dram-reference), for tests/dram/test_energy.py. Run from the repo root with the
reference set's replay driver built against DRAMsim3 (commit 2981759):

    .venv/bin/python tests/dram/data/make_dramsim3_energy.py /path/to/replay_dramsim3

DRAMsim3 writes energies in V x mA x cycles (src/configuration.cc: "if we convert cycles to ns then it's
exactly pJ"); they are stored here as joules, times tCK. Only the DRAMsim3 statistics go into the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
REF = REPO.parent / "shared" / "dram-reference"
OUT = Path(__file__).resolve().parent / "dramsim3_energy.json"
INI = {
    "LP5X-8533-like_x16": "dramsim3_LP5X-8533-like_x16.ini",
    "LPDDR4-2400_x16": "dramsim3_LPDDR4-2400_x16.ini",
    "HBM2_1ch": "dramsim3_HBM2_1ch.ini",
}


def dramsim3_stats(binary: str, ini: Path, npz: Path, depth: int | None) -> dict:
    z = np.load(npz)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.txt"
        with trace.open("w") as f:
            f.write(f"{z['addr'].size}\n")
            for a, k in zip(z["addr"].tolist(), z["key_id"].tolist(), strict=True):
                f.write(f"{a:x} 0 0 {k}\n")
        out = Path(tmp) / "out"
        out.mkdir()
        cmd = [binary, str(ini), str(out), str(trace), str(depth or 0), "200000000", str(out / "r.bin")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        return info, json.loads((out / "dramsim3.json").read_text())["0"]


def main() -> None:
    binary = sys.argv[1]
    recs = json.loads((REF / "results.json").read_text())["records"]
    rows = []
    for r in recs:
        if r["simulator"] != "dramsim3":
            continue
        info, d = dramsim3_stats(binary, REF / "configs" / INI[r["config"]], REF / r["pattern_file"], r["K"])
        j = 1e-12 * info["tck"]  # one DRAMsim3 energy unit in joules
        rows.append(
            {
                "config": r["config"],
                "pattern": r["pattern"],
                "K": r["K"],
                "num_cycles": d["num_cycles"],
                "num_act_cmds": d["num_act_cmds"],
                "num_read_cmds": d["num_read_cmds"],
                "num_ref_cmds": d["num_ref_cmds"],
                "rank_active_cycles": sum(d["rank_active_cycles"].values()),
                "act_energy_j": d["act_energy"] * j,
                "read_energy_j": d["read_energy"] * j,
                "ref_energy_j": d["ref_energy"] * j,
                "act_stb_energy_j": sum(d["act_stb_energy"].values()) * j,
                "pre_stb_energy_j": sum(d["pre_stb_energy"].values()) * j,
                "total_energy_j": d["total_energy"] * j,
            }
        )
        print(r["config"], r["pattern"], r["K"], f"{rows[-1]['total_energy_j']:.6e} J", flush=True)
    OUT.write_text(json.dumps({"dramsim3_commit": "2981759", "records": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
