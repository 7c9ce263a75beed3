"""`cemsim trace info` and `cemsim trace project` from the command line."""

from __future__ import annotations

import json

import pytest

from cemsim.cli import main
from cemsim.trace.format import TraceReader, TraceWriter
from cemsim.trace.synthetic import SurvivalLaw, synthetic_header, synthetic_steps


@pytest.fixture()
def src(tmp_path):
    h = synthetic_header("smollm2-135m", k=32)
    path = tmp_path / "src.parquet"
    with TraceWriter(path, h) as w:
        for r in synthetic_steps(h, context=3000, steps=3, law=SurvivalLaw(survival=0.05), seed=2):
            w.write(r)
    return path


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_info_json(src, capsys):
    main(["trace", "info", str(src), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["model"] == "smollm2-135m" and s["steps"] == 3 and s["projected"] is False
    assert s["context_min"] == 3000 and s["context_max"] == 3002
    # keys considered / survivors over the whole file, read back here with pyarrow (5 % survival: about 20x)
    import pyarrow.parquet as pq

    cols = pq.read_table(src, columns=["keys_considered", "survivors"]).to_pydict()
    assert s["filter_ratio"] == pytest.approx(sum(cols["keys_considered"]) / sum(cols["survivors"]), rel=1e-9)


def test_info_table(src, capsys):
    main(["trace", "info", str(src)])
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "filter ratio" in out and "no (captured)" in out


def test_project_then_info(src, tmp_path, capsys):
    out = tmp_path / "p.parquet"
    main(
        [
            "trace",
            "project",
            str(src),
            "--context",
            "64K",
            "--geometry",
            "llama3-1b",
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    r = TraceReader(out)
    assert r.header.projected and r.header.model == "llama3-1b" and r.summary["context_min"] == 65536
    capsys.readouterr()
    main(["trace", "info", str(out)])
    assert "distance-power-law" in capsys.readouterr().out


def test_errors_exit_1(tmp_path, capsys):
    code, _, err = run(["trace", "info", str(tmp_path / "missing.parquet")], capsys)
    assert code == 1 and "no such trace file" in err
    bad = tmp_path / "bad.parquet"
    bad.write_text("this is a text file, not a trace at all")
    code, _, err = run(["trace", "info", str(bad)], capsys)
    assert code == 1 and "not a Parquet file" in err
    code, _, err = run(
        ["trace", "project", str(bad), "--context", "lots", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 1 and "--context" in err


def test_info_per_head_statistics_cover_full_layers_only(capsys):
    """Gemma 3 270M's real 4K capture: 15 sliding layers with all-zero sparse columns, 3 full ones. The
    per-head numbers are those of layers 5, 11 and 17 (docs/projection.md: 180 / 48 / 190 survivors per step),
    not averages that count the sliding layers' zero rows (which gave a minimum of 0 and a mean 6x too low)."""
    from pathlib import Path

    trace = Path(__file__).resolve().parents[2] / "traces" / "gemma3-270m-4096.parquet"
    main(["trace", "info", str(trace), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["layer_types"]["full"] == [5, 11, 17] and len(s["layer_types"]["sliding"]) == 15
    df = TraceReader(trace).to_pandas()
    want = df[df.layer.isin([5, 11, 17])].groupby("layer").survivors.mean()
    assert s["survivors_per_head"]["mean"] == pytest.approx(want.mean(), rel=1e-12)
    assert s["survivors_per_head"]["min"] == pytest.approx(want.min()) and want.min() > 40
    assert s["keys_considered_per_head"] == pytest.approx(3064.5)
    fr = df.keys_considered.sum() / df.survivors.sum()
    assert s["filter_ratio"] == pytest.approx(fr, rel=1e-12)  # sliding rows add 0 to both sums
    main(["trace", "info", str(trace)])
    assert "layer types" in (out := capsys.readouterr().out) and "sliding-window" in out
