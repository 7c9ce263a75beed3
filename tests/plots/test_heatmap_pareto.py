"""The hardware heatmap (a real DReX sweep over link bandwidth x packages) and the Pareto front."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plot_helpers import REPO

from cemsim.plots import heatmap, pareto
from cemsim.plots.data import load
from cemsim.sweep.runner import run_sweep
from cemsim.sweep.store import ResultStore


def test_heatmap_cells_are_the_swept_results(tmp_path: Path, trace_256k: Path) -> None:
    spec = tmp_path / "hm.yaml"
    spec.write_text(f"""\
name: hm
options: {{steps: 1}}
trace: {trace_256k}
systems: [{REPO}/hwconfigs/h100-drex.yaml]
overrides: {{workload.context: 64K, workload.batch: 8}}
axes:
  link.bandwidth_per_direction: [32 GB/s, 128 GB/s]
  cem.packages: [1, 4]
""")
    report = run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    frame, _ = load([report.results_path])
    [(stem, fig)] = heatmap.figures(frame, x="link.bandwidth_per_direction", y="cem.packages", x_scale=1e9)
    assert stem == "heatmap_h100-drex_64K_b8"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "128"]
    grid = ax.images[0].get_array()
    for _, row in frame.iterrows():
        i = [1, 4].index(row["param.cem.packages"])
        j = [32e9, 128e9].index(row["param.link.bandwidth_per_direction"])
        if row["fits"]:
            assert grid[i, j] == pytest.approx(row["throughput_tokens_per_s"])
        else:  # one 64 GB package cannot hold 8 x 64K tokens of Llama-3-8B KV (64 GiB)
            assert np.ma.is_masked(grid[i, j]) and row["param.cem.packages"] == 1
    assert sum(t.get_text() == "no fit" for t in ax.texts) == int((~frame["fits"].astype(bool)).sum()) == 2


@given(st.lists(st.tuples(st.floats(1, 100), st.floats(0, 1)), min_size=1, max_size=40))
def test_pareto_front_is_exactly_the_non_dominated_points(points: list[tuple[float, float]]) -> None:
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    front = set(pareto.pareto_front(x, y).tolist())

    def dominated(i: int) -> bool:
        return any((x[j] >= x[i] and y[j] <= y[i]) and (x[j] > x[i] or y[j] < y[i]) for j in range(len(x)))

    for i in range(len(x)):
        if dominated(i):
            assert i not in front
    # every non-dominated value pair is represented on the front (duplicates keep one)
    kept = {(x[i], y[i]) for i in front}
    assert kept == {(x[i], y[i]) for i in range(len(x)) if not dominated(i)}


def test_pareto_chart_from_eval_rows(tmp_path: Path) -> None:
    rows = [
        {"status": "ok", "param.threshold": t, "param.itq": itq, "filter_ratio": fr, "ppl_increase": dp}
        for t, itq, fr, dp in [
            (0, True, 1.0, 0.0),
            (40, True, 12.0, 0.02),
            (44, True, 30.0, 0.06),
            (0, False, 1.0, 0.0),
            (40, False, 4.0, 0.03),
            (44, False, 9.0, 0.08),
        ]
    ]
    ResultStore(tmp_path).write_results(pd.DataFrame(rows), {"name": "t", "plots": []})
    frame, _ = load([tmp_path])
    [(stem, fig)] = pareto.figures(frame, group="param.itq", budget=0.05)
    assert stem == "pareto_accuracy_filter_ratio"
    ax = fig.axes[0]
    fronts = {line.get_label(): line for line in ax.get_lines() if "Pareto" in str(line.get_label())}
    assert set(fronts) == {"itq=True: Pareto front", "itq=False: Pareto front"}
    np.testing.assert_allclose(fronts["itq=True: Pareto front"].get_xdata(), [1.0, 12.0, 30.0])
    np.testing.assert_allclose(fronts["itq=True: Pareto front"].get_ydata(), [0.0, 2.0, 6.0])  # percent
    assert any(
        line.get_ydata()[0] == pytest.approx(5.0) for line in ax.get_lines() if line.get_linestyle() == "--"
    )


def test_pareto_from_eval_json_rows(tmp_path: Path) -> None:
    """`cemsim eval --json > run.jsonl` rows are results files too: the chart reads them directly."""
    import json

    from cemsim.plots.charts import plot_results

    rows = [
        {
            "model": "smollm2-135m",
            "policy": "longsight",
            "itq": itq,
            "filter_ratio": fr,
            "ppl_increase": dp,
            "bytes_breakdown": {"keys": 1.0},
        }
        for itq, fr, dp in [(True, 1.0, 0.0), (True, 20.0, 0.04), (False, 1.0, 0.0), (False, 6.0, 0.05)]
    ]
    path = tmp_path / "evals.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    written = plot_results([path], tmp_path / "charts")
    assert [p.name for p in written] == [
        "pareto_accuracy_filter_ratio.png",
        "pareto_accuracy_filter_ratio.svg",
    ]
    svg = written[1].read_text()
    assert "itq=True: Pareto front" in svg and "budget 5%" in svg
