"""Measurements of real GPUs that calibrate and validate the simulator (issue 7).

Each JSON file here holds one measurement campaign with its provenance (GPU, driver, torch and CuPy versions,
date, method), written by ``benchmarks/gpu/calibrate.py`` (or its ``hbm_copy`` and ``matmul_peak`` alone, for
the H200 file) on the device machine. ``validate.py`` replays them
against the simulator; ``tests/calibration`` keeps that comparison in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CALIBRATION_DIR = Path(__file__).parent
H100 = CALIBRATION_DIR / "h100-sxm-2026-11-23.json"
H200 = CALIBRATION_DIR / "h200-sxm-2026-12-02.json"  # copy bandwidth and matmul rate only


def load_calibration(path: Path = H100) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
