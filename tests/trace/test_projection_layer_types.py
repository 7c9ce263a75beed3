"""Projection with layer types (Gemma 3's sliding layers) and the trained-positions guard, on the shipped
real Gemma 3 270M captures (traces/gemma3-270m-*.parquet, NVIDIA H200) and the SmolLM2 4K capture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cemsim.cli import main
from cemsim.errors import CemsimError
from cemsim.trace.format import TraceReader
from cemsim.trace.projection import MAX_EXTRAPOLATION, fit_traces, project_file

TRACES = Path(__file__).resolve().parents[2] / "traces"
GEMMA = [TRACES / "gemma3-270m-4096.parquet", TRACES / "gemma3-270m-8192.parquet"]
SMOL = TRACES / "smollm2-4k.parquet"


def test_fit_uses_full_layers_only():
    fit, h = fit_traces(GEMMA)
    assert h.full_layers == [5, 11, 17]
    assert (fit.bins_used[h.sliding_layers] == 0).all()
    assert (fit.bins_used[h.full_layers] > 0).all()
    assert np.isfinite(fit.var_log_a[h.full_layers]).all()


def test_projection_keeps_layer_types_and_carries_uncertainty(tmp_path):
    out = tmp_path / "p.parquet"
    header = project_file(GEMMA, out, context=16384, steps=2, seed=3)
    assert header.layer_types == TraceReader(GEMMA[0]).header.layer_types and header.local_window == 512
    e = header.projection["expected_survivors_at_target"]
    per, se = np.array(e["per_head"]), np.array(e["se_per_head"])
    assert per.shape == (18, 1) and (per[header.sliding_layers] == 0).all()
    assert (per[header.full_layers] > 0).all() and (se[header.full_layers] > 0).all()
    lo, hi = e["filter_ratio_1se"]
    assert lo < e["filter_ratio"] < hi
    assert header.projection["extrapolation"]["factor"] == 0.5
    assert not header.projection["extrapolation"]["beyond_trained_positions"]
    with TraceReader(out) as r:
        for s in r.iter_steps():
            assert not s.keys_considered[header.sliding_layers].any()
            assert (s.keys_considered[header.full_layers] == s.context_len - 1024 - 16).all()
        df = r.to_pandas()
    assert (df[df.layer.isin(header.sliding_layers)].window == 512).all()


def test_refuses_past_trained_positions_unless_overridden(tmp_path):
    with pytest.raises(CemsimError, match=r"2\.0x the 32,768 positions.*--allow-extrapolation"):
        project_file(GEMMA, tmp_path / "x.parquet", context=65536, steps=1)
    assert not (tmp_path / "x.parquet").exists()
    h = project_file(GEMMA, tmp_path / "y.parquet", context=65536, steps=1, allow_extrapolation=True)
    ex = h.projection["extrapolation"]
    assert ex["allowed_by_override"] and ex["factor"] == 2.0 and ex["max_factor"] == MAX_EXTRAPOLATION
    # SmolLM2's 4K capture predates model_max_positions in headers: its preset's 8,192 applies.
    with pytest.raises(CemsimError, match="8,192 positions smollm2-135m"):
        project_file([SMOL], tmp_path / "z.parquet", context=1 << 20, target="llama3-8b", steps=1)


def test_cli_refuses_and_says_when_overridden(tmp_path, capsys):
    args = ["trace", "project", str(GEMMA[0]), "--context", "64K", "--steps", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "a.parquet")])
    assert exc.value.code == 1 and "--allow-extrapolation" in capsys.readouterr().err
    main([*args, "--out", str(tmp_path / "b.parquet"), "--allow-extrapolation"])
    out = capsys.readouterr().out
    assert "extrapolated" in out and "32,768 positions" in out


def test_geometry_mapping_between_hybrid_and_dense(tmp_path):
    """SmolLM2 (all full) onto Gemma 3 27B: only its 10 global layers get sparse keys; Gemma 270M onto
    Llama-3-8B: every target layer takes one of the three global source layers."""
    h = project_file([SMOL], tmp_path / "g27.parquet", context=8192, target="gemma3-27b", steps=1, k=256)
    assert h.local_window == 1024 and len(h.full_layers) == 10
    with TraceReader(tmp_path / "g27.parquet") as r:
        s = next(r.iter_steps())
    assert not s.survivors[h.sliding_layers].any() and s.survivors[h.full_layers].sum(axis=1).all()
    h8 = project_file(GEMMA, tmp_path / "l8.parquet", context=16384, target="llama3-8b", steps=1)
    assert h8.layer_types is None
    per = np.array(h8.projection["expected_survivors_at_target"]["per_head"])
    assert (per > 0).all()
