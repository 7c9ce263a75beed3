"""`cemsim config check/show` through the real console script: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HWCONFIGS = sorted((REPO / "hwconfigs").glob("*.yaml"))


def cemsim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cemsim.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_check_all_shipped_configs() -> None:
    r = cemsim("config", "check", *map(str, HWCONFIGS))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok") == len(HWCONFIGS)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: t\ngpu: [\n", "malformed YAML"),
        (
            "name: t\ngpu:\n  preset: h100-sxm\n  hbm:\n    peak_bandwith: 3 TB/s\nworkload: {model: llama3-8b}\n",
            "did you mean 'peak_bandwidth'",
        ),
        (
            "name: t\ngpu:\n  preset: h100-sxm\n  hbm:\n    peak_bandwidth: 3 TB\nworkload: {model: llama3-8b}\n",
            "is a size in bytes",
        ),
        (
            "name: t\ngpu:\n  preset: h100-sxm\n  impl: rooflin\nworkload: {model: llama3-8b}\n",
            "valid: roofline",
        ),
        (
            "name: t\ngpu:\n  preset: h100-sxm\n  hbm:\n    capacity: -1 GB\nworkload: {model: llama3-8b}\n",
            "greater than zero",
        ),
    ],
)
def test_check_bad_file_exits_1_with_one_message(tmp_path: Path, text: str, fragment: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    r = cemsim("config", "check", str(bad))
    assert r.returncode == 1
    assert fragment in r.stderr
    assert "bad.yaml" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_check_missing_file(tmp_path: Path) -> None:
    r = cemsim("config", "check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_show_json_has_the_derived_contract() -> None:
    r = cemsim("config", "show", str(REPO / "hwconfigs" / "h100-drex.yaml"), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    for key in (
        "cem.pfu_count",
        "cem.nma_count",
        "cem.capacity_bytes",
        "cem.nma_flops",
        "cem.nma_bandwidth_bytes_per_s",
        "cem.pfu_bandwidth_bytes_per_s",
        "gpu.hbm_capacity_bytes",
        "gpu.hbm_bandwidth_bytes_per_s",
    ):
        assert isinstance(data["derived"][key], int | float), key
    assert data["config"]["cem"]["pfu"]["bitmap_time_per_dim"] == pytest.approx(1.25e-9)
    assert data["provenance"]["cem.pfu.power"]["tag"] == "spec"


def test_show_table_prints_sources() -> None:
    r = cemsim("config", "show", str(REPO / "hwconfigs" / "h100.yaml"))
    assert r.returncode == 0, r.stderr
    assert "3.35 TB/s" in r.stdout and "spec" in r.stdout and "Derived figures" in r.stdout
