"""Running sweeps: results are stored per point and combined; reruns evaluate nothing; simulator errors and
invalid configs become rows, not crashes; the pool and the inline path give the same table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import EVAL, REPO, write_spec

from cemsim.sweep.runner import run_sweep
from cemsim.sweep.store import read_results

VOLATILE = ["elapsed_s"]  # wall-clock time of a point: the one column that differs between runs


def stable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=VOLATILE).sort_values("params", kind="stable").reset_index(drop=True)


def test_sweep_stores_points_and_reruns_evaluate_nothing(
    small_spec: Path, tmp_path: Path, monkeypatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("CEMSIM_TEST_EVAL_LOG", str(log))
    out = tmp_path / "out"
    first = run_sweep(small_spec, out, workers=1, progress=False)
    assert first.evaluated == 12 and first.skipped == 0
    assert len(list((out / "points").glob("*.parquet"))) == 12
    assert len(log.read_text().splitlines()) == 12
    frame, meta = read_results(out)
    assert len(frame) == 12 and set(frame["status"]) == {"ok"}
    assert meta["name"] == "small" and meta["axes"] == ["workload.context", "workload.batch"]
    # nested result dicts are flattened into dotted columns
    assert {"energy_breakdown_j.gpu", "time_breakdown_s.attention", "bytes_moved.kv"} <= set(frame.columns)
    # the 1M-token dense H100 point does not fit 80 GB; the DReX one does
    big = frame[frame["context_tokens"] == 1 << 20].set_index(["system", "batch"])
    assert not big.loc[("h100", 1), "fits"] and big.loc[("h100-drex", 1), "fits"]
    second = run_sweep(small_spec, out, workers=1, progress=False)
    assert second.evaluated == 0 and second.skipped == 12
    assert len(log.read_text().splitlines()) == 12
    pd.testing.assert_frame_equal(stable(first.frame), stable(second.frame))


def test_pool_matches_inline(small_spec: Path, tmp_path: Path) -> None:
    inline = run_sweep(small_spec, tmp_path / "a", workers=1, progress=False)
    pool = run_sweep(small_spec, tmp_path / "b", workers=2, progress=False)
    pd.testing.assert_frame_equal(stable(inline.frame), stable(pool.frame))


def test_errors_and_invalid_points_are_rows(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        f"""\
evaluate: {EVAL}
systems: [{REPO}/hwconfigs/h100.yaml]
axes:
  workload.attention.policy: [dense, quest, bogus]
""",
    )
    report = run_sweep(spec, tmp_path / "out", workers=1, progress=False)
    by_policy = report.frame.set_index("param.workload.attention.policy")
    assert by_policy.loc["dense", "status"] == "ok"
    assert by_policy.loc["quest", "status"] == "error"
    assert "no model of Quest" in by_policy.loc["quest", "error"]
    assert by_policy.loc["bogus", "status"] == "invalid"
    assert "workload.attention.policy" in by_policy.loc["bogus", "error"]
    # the simulator's error is a result of that point: stored, so a rerun does not repeat it
    assert len(list((tmp_path / "out" / "points").glob("*.parquet"))) == 2
    assert run_sweep(spec, tmp_path / "out", workers=1, progress=False).evaluated == 0


def test_cli_bad_spec_exits_1_with_one_paragraph(tmp_path: Path, capsys) -> None:
    from cemsim.cli import main

    spec = write_spec(
        tmp_path / "bad.yaml", f"systems: [{REPO}/hwconfigs/h100.yaml]\naxes:\n  workload.contxt: [1]\n"
    )
    with pytest.raises(SystemExit) as info:
        main(["sweep", str(spec), "--out", str(tmp_path / "o")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{spec}, line 3, field axes.workload.contxt" in err.replace("\n", "")


def test_unknown_evaluate_function_is_a_clear_error(small_spec: Path, tmp_path: Path) -> None:
    from cemsim.errors import CemsimError

    with pytest.raises(CemsimError, match="cannot import module 'no_such_module'"):
        run_sweep(small_spec, tmp_path / "o", workers=2, progress=False, evaluate="no_such_module:f")


def test_summary_pivots_latency_by_context_and_system(small_spec: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from cemsim.sweep.summary import summary_tables

    report = run_sweep(small_spec, tmp_path / "out", workers=1, progress=False)
    latency, throughput = summary_tables(report.frame)
    console = Console(width=80, record=True)
    console.print(latency)
    text = console.export_text()
    assert latency.title == "Per-token latency (ms), batch 1" and "1M" in text and "256K" in text
    h100_1m = report.frame.query("system == 'h100' and batch == 1 and context_tokens == 1048576").iloc[0]
    assert not h100_1m["fits"] and "no fit" in text
    drex_4k = report.frame.query("system == 'h100-drex' and batch == 1 and context_tokens == 4096").iloc[0]
    assert f"{drex_4k['latency_per_token_s'] * 1e3:.2f}" in text
    assert "batch 8" in throughput.title
