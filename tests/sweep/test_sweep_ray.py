"""The Ray engine gives the same table as the local pool (skipped cleanly when Ray is not installed)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
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


@pytest.mark.slow
def test_ray_existing_cluster_by_address(
    small_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--address` joins a cluster someone else started (here `ray start --head`) and leaves it running."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command-line tool is not installed beside this Python")
    port = _free_port()
    # Both sides without Ray's token authentication (on by default for `ray start`): a real cluster would
    # hand its token to the driver through RAY_AUTH_TOKEN instead.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    started = subprocess.run(
        [
            str(ray_cli),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={ray_tmp}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr
    try:
        address = f"127.0.0.1:{port}"
        local = run_sweep(small_spec, tmp_path / "local", engine="local", workers=2, progress=False)
        remote = run_sweep(small_spec, tmp_path / "cluster", engine="ray", address=address, progress=False)
        assert remote.evaluated == 12
        pd.testing.assert_frame_equal(stable(local.frame), stable(remote.frame))
        # The cluster outlives the sweep: a second driver can still join it.
        status = subprocess.run(
            [str(ray_cli), "status", f"--address={address}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
    finally:
        subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
