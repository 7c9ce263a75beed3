"""A `kind: eval` sweep runs the sparse-attention evaluation (`cemsim eval --json` rows) on the bundled model:
threshold 0 filters nothing (filter ratio 1); a high threshold filters keys out."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import write_spec

from cemsim.sweep.runner import run_sweep

pytest.importorskip("cemsim.attention.eval")


@pytest.mark.slow
def test_threshold_sweep_rows(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "t.yaml",
        """\
kind: eval
options: {model: smollm2-135m, tokens: 1536, policy: longsight, window: 256, k: 64}
axes:
  threshold: [0, 44]
""",
    )
    report = run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    rows = report.frame.set_index("param.threshold")
    assert set(rows["status"]) == {"ok"}, rows["error"].tolist()
    assert rows.loc[0, "filter_ratio"] == pytest.approx(1.0)
    assert rows.loc[44, "filter_ratio"] > 1.5
