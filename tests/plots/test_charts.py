"""Charts drawn from result files of a real (simulated) sweep: what each chart draws must match the table
it was read from: bar stacks add up to the reported totals, no-fit points are crosses, not values."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from cemsim.plots import breakdown, context_scaling, energy, users
from cemsim.plots.charts import plot_results
from cemsim.plots.data import load


def _frame(path: Path) -> pd.DataFrame:
    frame, _ = load([path])
    return frame


def _stack_heights(ax) -> dict[float, float]:
    """Top of each stacked bar, keyed by its x position."""
    tops: dict[float, float] = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2, 6)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    return tops


def test_context_scaling_draws_fitting_points_and_crosses_for_the_rest(scaling_results: Path) -> None:
    frame = _frame(scaling_results)
    figs = dict(context_scaling.figures(frame))
    assert set(figs) == {"context_scaling_b1", "context_scaling_b32"}
    fig = figs["context_scaling_b32"]
    strip, _, ax_lat, _ = fig.axes
    sub = frame[frame["batch"] == 32]
    nofit = sub[~sub["fits"].astype(bool)]
    assert len(nofit) > 0, "batch 32 at 256K must overflow some system"
    crosses = sum(len(c.get_offsets()) for c in strip.collections)
    assert crosses == len(nofit)
    drawn = {line.get_label(): line for line in ax_lat.get_lines()}
    for system, rows in sub.groupby("system"):
        ok = rows[rows["fits"].astype(bool)].sort_values("context_tokens")
        np.testing.assert_allclose(drawn[system].get_ydata(), ok["latency_per_token_s"] * 1e3)
    assert ax_lat.get_xscale() == "log" and "ms" in ax_lat.get_ylabel()


def test_energy_stacks_add_up_to_energy_per_token(scaling_results: Path) -> None:
    frame = _frame(scaling_results)
    [(stem, fig)] = energy.figures(frame, batch=1, contexts=["8K", "256K"])
    assert stem == "energy_breakdown_b1"
    for ax, ctx in zip(fig.axes, [8192, 262144], strict=True):
        sub = frame[(frame["batch"] == 1) & (frame["context_tokens"] == ctx)]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        tops = _stack_heights(ax)
        top_of_axis = ax.get_ylim()[1]
        for x, system in enumerate(labels):
            row = sub[sub["system"] == system].iloc[0]
            if not row["fits"]:
                assert x not in tops
                continue
            expected = row["energy_per_token_j"] * 1e3
            assert tops[x] == pytest.approx(expected, rel=1e-6)
            assert tops[x] <= top_of_axis or any("cut" in t.get_text() for t in ax.texts)


def test_time_breakdown_stacks_add_up_to_latency(scaling_results: Path) -> None:
    frame = _frame(scaling_results)
    [(_, fig)] = breakdown.figures(frame, batch=1)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        sub = frame[(frame["batch"] == 1) & (frame["system"] == ax.get_title())].sort_values("context_tokens")
        tops = _stack_heights(ax)
        for x, (_, row) in enumerate(sub.iterrows()):
            if row["fits"]:
                assert tops[x] == pytest.approx(row["latency_per_token_s"] * 1e3, rel=1e-6)


def test_users_chart_marks_points_over_the_slo(scaling_results: Path) -> None:
    frame = _frame(scaling_results)
    figs = dict(users.figures(frame, context="8K", slo_ms=20))
    fig = figs["users_8K"]
    ax_t, ax_l = fig.axes
    assert any(line.get_ydata()[0] == 20 for line in ax_l.get_lines() if line.get_linestyle() == "--")
    sub = frame[(frame["context_tokens"] == 8192) & frame["fits"].astype(bool)]
    over = int((sub["latency_per_token_s"] * 1e3 > 20).sum())
    hollow = sum(
        len(c.get_offsets())
        for c in ax_t.collections
        if len(c.get_facecolors()) and tuple(c.get_facecolors()[0][:3]) == (1.0, 1.0, 1.0)
    )
    assert hollow == over


def test_plot_results_writes_png_and_svg_from_the_files_only(scaling_results: Path, tmp_path: Path) -> None:
    written = plot_results([scaling_results.parent], tmp_path / "charts", only=["energy"])
    assert sorted(p.name for p in written) == ["energy_breakdown_b1.png", "energy_breakdown_b1.svg"]
    img = mpimg.imread(tmp_path / "charts" / "energy_breakdown_b1.png")
    assert img.shape[0] > 300 and img.shape[1] > 600 and img.std() > 0.05  # a real picture, not blank
    svg = (tmp_path / "charts" / "energy_breakdown_b1.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "energy per token (mJ)" in svg
    # the spec's chart options (contexts: [8K, 256K]) travelled in the results file's metadata
    assert "context 8K" in svg and "context 256K" in svg and "context 64K" not in svg
    assert not list((tmp_path / "charts").glob(".*tmp"))


def test_cli_plot_errors_are_one_paragraph(tmp_path: Path, capsys) -> None:
    from cemsim.cli import main

    with pytest.raises(SystemExit) as info:
        main(["plot", str(tmp_path / "none"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "no results file" in err and "Traceback" not in err
