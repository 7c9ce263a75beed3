"""The Ray engine gives the same table as the local pool (skipped cleanly when Ray is not installed)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_sweep_run import stable

from cemsim.sweep.runner import run_sweep

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_matches_local(small_spec: Path, tmp_path: Path) -> None:
    local = run_sweep(small_spec, tmp_path / "local", engine="local", workers=2, progress=False)
    ray_run = run_sweep(small_spec, tmp_path / "ray", engine="ray", workers=2, progress=False)
    assert ray_run.evaluated == 12
    pd.testing.assert_frame_equal(stable(local.frame), stable(ray_run.frame))
    # and a Ray rerun into the local run's folder reuses every point
    assert run_sweep(small_spec, tmp_path / "local", engine="ray", workers=2, progress=False).evaluated == 0
