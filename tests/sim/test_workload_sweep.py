"""Filter ratio as a sweep axis (issue 15, items 3 and 6): the shipped specs expand to valid points, a small
real sweep over the ratio moves DReX and not the dense GPU, and the charts draw it (a band on the
context-scaling chart, throughput against the ratio)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from cemsim.plots import context_scaling, filter_ratio
from cemsim.plots.charts import plot_results
from cemsim.plots.data import load
from cemsim.sweep.expand import expand
from cemsim.sweep.runner import run_sweep
from cemsim.sweep.spec import load_spec
from cemsim.trace.format import TraceWriter
from tests.sim.conftest import REPO, make_header, make_step
from tests.sim.conftest import load as load_config

RATIO = "param.workload.attention.filter_ratio"


@pytest.mark.parametrize("name, points", [("filter_ratio", 126), ("drex_filter_ratio", 54)])
def test_the_shipped_filter_ratio_specs_expand_to_valid_points(name, points):
    pts = expand(
        load_spec(REPO / "analysis" / f"{name}.yaml"),
        trace_override=str(REPO / "traces" / "smollm2-4k.parquet"),
    )
    assert len(pts) == points and all(p.valid for p in pts)
    ratios = {p.system.workload.attention.filter_ratio for p in pts}
    assert len(ratios) >= 2 and None not in ratios


def test_the_placement_spec_expands_to_every_named_choice():
    pts = expand(
        load_spec(REPO / "analysis" / "kv_placement.yaml"),
        trace_override=str(REPO / "traces" / "smollm2-4k.parquet"),
    )
    assert len(pts) == 12 and all(p.valid for p in pts)
    assert {p.system.cem.layout.kv_placement for p in pts} == {
        "head_per_package",
        "rotate_by_user",
        "user_per_package",
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, Path]:
    """h100 and h100-drex at ratios 5 / 50 and at the trace's own survival, two contexts, batch 8."""
    folder = tmp_path_factory.mktemp("fr")
    system = load_config(REPO / "hwconfigs" / "h100-drex.yaml")
    header = make_header(system.geometry, k=256)
    trace = folder / "l8-64k.parquet"
    with TraceWriter(trace, header) as w:
        w.write(make_step(header, 65536, survival=0.02))
    base = f"""\
options: {{steps: 1}}
trace: {trace}
systems:
  - {REPO}/hwconfigs/h100.yaml
  - {REPO}/hwconfigs/h100-drex.yaml
"""
    (folder / "own.yaml").write_text(
        base + "axes:\n  workload.context: [32K, 64K]\n  workload.batch: [8]\n"
        "plots:\n  - {chart: context_scaling, scenarios: ../ratios}\n"
    )
    (folder / "ratios.yaml").write_text(
        base + "axes:\n  workload.attention.filter_ratio: [5, 50]\n  workload.context: [32K, 64K]\n"
        "  workload.batch: [8]\nplots:\n  - {chart: filter_ratio}\n"
    )
    ratios = run_sweep(folder / "ratios.yaml", folder / "ratios", workers=1, progress=False)
    own = run_sweep(folder / "own.yaml", folder / "own", workers=1, progress=False)
    for rep in (ratios, own):
        assert set(rep.frame["status"]) == {"ok"}, rep.frame[["system", "error"]]
    return own.results_path, ratios.results_path


def test_the_ratio_moves_drex_and_not_the_dense_gpu(sweep):
    _, ratios = sweep
    frame, _ = load([ratios])
    at = frame[frame["context_tokens"] == 32768].set_index(["system", RATIO])  # where both fit
    drex = frame[frame["context_tokens"] == 65536].set_index(["system", RATIO]).loc["h100-drex"]
    drex = drex["throughput_tokens_per_s"]
    dense = at.loc["h100"]["throughput_tokens_per_s"]
    assert drex.loc[50.0] > 1.05 * drex.loc[5.0]
    assert dense.loc[50.0] == pytest.approx(dense.loc[5.0], rel=1e-12)
    assert set(at.loc["h100-drex"]["attention.filter_ratio"]) == {5.0, 50.0}  # recorded in the result
    assert at.loc["h100"]["attention.filter_ratio"].isna().all()  # not applicable, and said so
    assert at.loc["h100"]["attention.rules"].str.contains("not applicable").all()


def test_the_context_scaling_chart_draws_drex_as_a_band(sweep, tmp_path):
    own, ratios = sweep
    frame, _ = load([own])
    extra, _ = load([ratios])
    fig = dict(context_scaling.figures(frame, scenarios=extra))["context_scaling_b8"]
    ax_lat = fig.axes[2]
    bands = [c for c in ax_lat.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # DReX only: the dense system's scenarios coincide with its line
    top = bands[0].get_paths()[0].vertices[:, 1].max()
    worst = extra[extra["system"] == "h100-drex"]["latency_per_token_s"].max() * 1e3
    assert top == pytest.approx(
        max(worst, frame[frame["system"] == "h100-drex"]["latency_per_token_s"].max() * 1e3)
    )
    labels = ax_lat.get_legend_handles_labels()[1]
    assert "h100-drex (band: filter ratio 5x, 50x; line: the trace's)" in labels
    # through `cemsim plot`: the spec's scenarios option names the sibling sweep folder
    written = plot_results([own.parent], tmp_path)
    assert (tmp_path / "context_scaling_b8.png") in written


def test_the_filter_ratio_chart(sweep):
    _, ratios = sweep
    frame, _ = load([ratios])
    figs = dict(filter_ratio.figures(frame))
    ax = figs["filter_ratio_b8"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"h100", "h100-drex"}
    assert list(lines["h100-drex"].get_xdata()) == [5.0, 50.0]
    assert isinstance(frame, pd.DataFrame)
