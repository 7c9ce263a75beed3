"""`cemsim demo` end to end: capture on CPU, projection, the 162-point sweep on the simulator, charts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cemsim.trace.format import TraceReader

pytest.importorskip("transformers")


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cemsim.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_parquet(out / "context_scaling" / "results.parquet")
    assert len(frame) == 162 and set(frame["status"]) == {"ok"}
    assert frame["system"].nunique() == 6 and frame["context_tokens"].max() == 1 << 20
    assert (frame["trace_model"] == "llama3-8b").all()
    band = pd.read_parquet(out / "drex_filter_ratio" / "results.parquet")
    assert len(band) == 54 and set(band["status"]) == {"ok"}
    assert set(band["attention.filter_ratio"]) == {20.0, 28.9}
    for chart in ("context_scaling_b1", "energy_breakdown_b1", "time_breakdown_b1"):
        assert (out / "charts" / f"{chart}.png").stat().st_size > 10_000
        assert (out / "charts" / f"{chart}.svg").is_file()
    assert "Per-token latency (ms), batch 1" in proc.stdout
    # the capture read the pinned text (the same tokens on any Python), whose sha256 its header records
    header = TraceReader(out / "traces" / "smollm2-135m-4K.parquet").header
    assert header.text_source.startswith("Python 3.11.7's Language Reference topics")
    assert header.extra["text_sha256"] == "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee"
