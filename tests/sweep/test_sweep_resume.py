"""A sweep killed by a signal midway resumes with nothing lost: the finished points are reused, only the
rest is evaluated, and the final table equals that of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from test_sweep_run import stable

from cemsim.sweep.runner import run_sweep
from cemsim.sweep.store import read_results


def _points(out: Path) -> set[str]:
    return {p.stem for p in (out / "points").glob("*.parquet")} if (out / "points").is_dir() else set()


def test_killed_sweep_resumes_to_the_same_table(small_spec: Path, tmp_path: Path, subprocess_env) -> None:
    out = tmp_path / "out"
    env = dict(subprocess_env, CEMSIM_TEST_EVAL_SLEEP="0.2")
    cmd = [
        sys.executable,
        "-m",
        "cemsim.cli",
        "sweep",
        str(small_spec),
        "--out",
        str(out),
        "--workers",
        "2",
        "-q",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while len(_points(out)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers, mid-run
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = _points(out)
    assert 4 <= len(done_before) < 12, "the kill should land midway"
    assert not (out / "results.parquet").exists()
    for pid in done_before:  # every stored point file is whole
        assert len(pd.read_parquet(out / "points" / f"{pid}.parquet")) == 1

    log = tmp_path / "resume.log"
    resumed = subprocess.run(
        cmd, env=dict(env, CEMSIM_TEST_EVAL_LOG=str(log)), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(log.read_text().splitlines()) == 12 - len(done_before)
    assert f"{len(done_before)} already done" in resumed.stderr

    resumed_frame, _ = read_results(out)
    clean = run_sweep(small_spec, tmp_path / "clean", workers=1, progress=False)
    pd.testing.assert_frame_equal(stable(resumed_frame), stable(clean.frame))
