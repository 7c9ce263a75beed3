"""The Ray engine gives the same table as the local pool (skipped cleanly when Ray is not installed)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
        _wait_until_ready(ray_cli, address, env)
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


def _wait_until_ready(ray_cli: Path, address: str, env: dict[str, str], seconds: float = 90.0) -> None:
    """`ray start` can return before the head accepts drivers on a loaded machine (a driver joining then
    failed to connect once in CI's test run): poll `ray status` as a user would, up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        status = subprocess.run(
            [str(ray_cli), "status", f"--address={address}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if status.returncode == 0:
            return
        assert time.monotonic() < deadline, f"the Ray head at {address} never answered: {status.stderr}"
        time.sleep(2.0)


def test_a_cluster_that_refuses_is_one_clear_error(
    small_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray.init's ConnectionError (raised after Ray's own retries, minutes on an address nobody serves)
    becomes one paragraph naming --address; nothing is written."""
    import ray

    from cemsim.errors import CemsimError

    def refuse(*args, **kwargs):
        raise ConnectionError("could not reach the GCS")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(
        CemsimError, match=re.escape("could not connect to a Ray cluster at 10.0.0.9:6379")
    ) as info:
        run_sweep(small_spec, tmp_path / "cluster", engine="ray", address="10.0.0.9:6379", progress=False)
    assert info.value.where == "--address"
    assert not list((tmp_path / "cluster").glob("*.parquet"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
