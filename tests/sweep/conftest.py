"""Shared fixtures: a small spec over the shipped systems, evaluated by the closed-form roofline_eval."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sweep_helpers import EVAL, HERE, REPO, write_spec


@pytest.fixture
def small_spec(tmp_path: Path) -> Path:
    return write_spec(
        tmp_path / "small.yaml",
        f"""\
name: small
evaluate: {EVAL}
systems:
  - {REPO}/hwconfigs/h100.yaml
  - {REPO}/hwconfigs/h100-drex.yaml
axes:
  workload.context: [4K, 256K, 1M]
  workload.batch: [1, 8]
""",
    )


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for a `cemsim` subprocess that can import roofline_eval."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    return env
