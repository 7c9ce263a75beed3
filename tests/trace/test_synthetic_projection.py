"""Synthetic traces follow their law; projection recovers a known law and keeps projected traces small."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from cemsim.errors import CemsimError
from cemsim.trace.format import TraceReader, TraceWriter
from cemsim.trace.projection import expected_survivors, fit_traces, head_map, mapped, project_file
from cemsim.trace.synthetic import SurvivalLaw, head_scales, synthetic_header, synthetic_steps

LAW = SurvivalLaw(survival=0.08, decay=0.3, spread=0.5, clustering=0.1)


def write(path: Path, header, recs) -> Path:
    with TraceWriter(path, header) as w:
        for r in recs:
            w.write(r)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("src")
    h = synthetic_header("smollm2-135m", k=64)
    return [
        write(d / f"s{c}.parquet", h, synthetic_steps(h, context=c, steps=6, law=LAW, seed=5, with_topk=True))
        for c in (2048, 4096)
    ]


def test_synthetic_follows_its_law():
    h = synthetic_header("smollm2-135m", k=64)
    law = SurvivalLaw(survival=0.1, decay=0.0, spread=0.0)
    recs = list(synthetic_steps(h, context=8192, steps=2, law=law, seed=1))
    for r in recs:
        r.check(h)
        assert r.window == 1024 and r.sinks == 16
        assert r.keys_considered[0, 0] == r.context_len - 1024 - 16
    frac = recs[0].survivors.sum() / recs[0].keys_considered.sum()
    assert abs(frac - 0.1) < 0.005
    again = list(synthetic_steps(h, context=8192, steps=2, law=law, seed=1))
    np.testing.assert_array_equal(recs[1].survivor_blocks, again[1].survivor_blocks)
    dense = next(synthetic_steps(dataclasses.replace(h, policy="dense"), context=3000))
    assert dense.window == 3000 and dense.survivors.sum() == 0 and dense.keys_considered.sum() == 0


def test_fit_recovers_known_law(sources):
    fit, _ = fit_traces(sources)
    assert abs(float(np.median(fit.beta)) - LAW.decay) < 0.05
    truth = np.log(head_scales(synthetic_header("smollm2-135m"), LAW, 5))
    assert float(np.median(np.abs(fit.log_a - truth))) < 0.15
    assert 0.03 < float(np.median(fit.rho)) < 0.2  # clustering 0.1 measured back


def test_projection_matches_synthetic_truth_at_32k(sources, tmp_path):
    out = tmp_path / "p.parquet"
    header = project_file(sources, out, context=32768, steps=3, seed=1)
    assert header.projected and header.projection["model"].startswith("distance-power-law")
    proj = list(TraceReader(out).iter_steps())
    h = synthetic_header("smollm2-135m", k=64)
    real = list(synthetic_steps(h, context=32768, steps=3, law=LAW, seed=5))
    ps = np.mean([r.survivors for r in proj], axis=0)
    rs = np.mean([r.survivors for r in real], axis=0)
    assert abs(ps.sum() / rs.sum() - 1) < 0.10
    assert float(np.median(np.abs(ps / rs - 1))) < 0.25
    # The delta-method standard error covers the per-head error most of the time.
    fit, _ = fit_traces(sources)
    e, se = expected_survivors(fit, h, 32768)
    assert np.mean(np.abs(e - rs) < 3 * se + 3 * np.sqrt(rs)) > 0.8


def test_projection_to_llama8b_at_1m_is_small(sources, tmp_path):
    out = tmp_path / "p1m.parquet"
    header = project_file(sources, out, context=1 << 20, target="llama3-8b", k=1024, steps=2)
    assert (header.model, header.layers, header.kv_heads, header.head_dim, header.k) == (
        "llama3-8b",
        32,
        8,
        128,
        1024,
    )
    assert os.path.getsize(out) / 2 < 4e6
    recs = list(TraceReader(out).iter_steps())
    assert recs[0].survivor_blocks.shape == (32, 8, 8192)
    assert recs[1].context_len == (1 << 20) + 1
    assert np.all(recs[0].values_fetched <= 4 * 1024)


def test_head_map_rule():
    ls, hs = head_map(30, 3, 32, 8)
    assert ls.shape == (32, 8) and ls[0, 0] == 0 and ls[31, 0] == 29 and ls[16, 0] == 15
    np.testing.assert_array_equal(hs[0], [0, 1, 2, 0, 1, 2, 0, 1])
    assert np.all(np.diff(ls[:, 0]) >= 0)


def test_mapped_fit_reindexes(sources):
    fit, _ = fit_traces(sources)
    ls, hs = head_map(30, 3, 32, 8)
    m = mapped(fit, ls, hs)
    assert m.beta.shape == (32, 8) and m.beta[31, 5] == fit.beta[29, 2]


def test_refuses_what_it_does_not_model(sources, tmp_path):
    out = tmp_path / "p.parquet"
    project_file(sources, out, context=8192, steps=1)
    with pytest.raises(CemsimError, match="itself a projected trace"):
        project_file([out], tmp_path / "pp.parquet", context=16384)
    h = synthetic_header("smollm2-135m", k=8, policy="oracle-topk")
    src = write(tmp_path / "o.parquet", h, synthetic_steps(h, context=2048, steps=1))
    with pytest.raises(CemsimError, match="not modelled"):
        project_file([src], tmp_path / "po.parquet", context=8192)
    short = synthetic_header("smollm2-135m", k=8)
    src = write(tmp_path / "short.parquet", short, synthetic_steps(short, context=1000, steps=2))
    with pytest.raises(CemsimError, match="no sparse region"):
        project_file([src], tmp_path / "ps.parquet", context=8192)
    with pytest.raises(CemsimError, match="positive"):
        project_file(sources, tmp_path / "p0.parquet", context=0)


def test_validation_on_a_known_law(tmp_path):
    from cemsim.trace.validate import run

    h = synthetic_header("smollm2-135m", k=64)
    paths = []
    for c, n in ((1024, 4), (2048, 4), (4096, 4), (8160, 4)):
        paths.append(
            write(tmp_path / f"y{c}.parquet", h, synthetic_steps(h, context=c + 1, steps=n, law=LAW, seed=3))
        )
    res = run(paths[:3], paths[3])
    assert abs(res["total_rel_err"]) < 0.1
    assert res["head_abs_rel_err_median"] < 0.2
    assert res["bank_max_abs_rel_err_median"] < 0.25
    assert res["head_log_corr"] > 0.9
