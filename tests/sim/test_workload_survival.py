"""Survival per simulated context (issue 15, item 2) and the filter ratio as a scenario axis (item 3)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from cemsim.sim.simulate import prepare, simulate
from cemsim.trace.format import TraceReader
from cemsim.trace.projection import SurvivalFit, expected_survivors, head_map, mapped, project_file
from tests.sim.conftest import REPO, load, make_header, make_step

DREX = REPO / "hwconfigs" / "h100-drex.yaml"
SOURCE = REPO / "traces" / "smollm2-4k.parquet"


@lru_cache(maxsize=1)
def projected_256k(tmp: str) -> tuple:
    """The shipped capture projected to Llama-3-8B at 256K tokens (the demo does the same at 1M)."""
    out = Path(tmp) / "l8-256k.parquet"
    project_file(
        [SOURCE], out, context=256 * 1024, target="llama3-8b", steps=2, seed=3, allow_extrapolation=True
    )
    with TraceReader(out) as r:
        return r.header, tuple(r.iter_steps(topk=False))


@pytest.fixture(scope="module")
def projected(tmp_path_factory):
    return projected_256k(str(tmp_path_factory.mktemp("proj")))


def expected_at(header, context: int) -> np.ndarray:
    proj = header.projection
    fit = SurvivalFit.from_dict(proj["fit"])
    ls, hs = head_map(proj["source_layers"], proj["source_kv_heads"], header.layers, header.kv_heads)
    e, _ = expected_survivors(mapped(fit, ls, hs), header, context)
    return e


def test_a_shorter_context_draws_from_the_projection_not_the_long_contexts_fraction(projected):
    header, records = projected
    prep = prepare(load(DREX), header, records, context=8192)
    w = prep.works[0]
    assert w.context == 8192
    assert prep.attention.survival_source.startswith("projection (distance-power-law/1) to 8192 tokens")
    # the projection's own expectation at 8K, per head: the simulated survivors are a draw around it
    e8 = expected_at(header, 8192)
    assert w.survivors.sum() == pytest.approx(e8.sum(), rel=0.1)
    # the old rule (the 256K step's survival fraction on 8K's considered keys) is far below: survival falls
    # with distance, so a long context's fraction understates a short one's
    rec = records[0]
    fraction_rule = rec.survivors / rec.keys_considered * w.considered
    assert w.survivors.sum() > 3 * fraction_rule.sum()
    res = simulate(prep)
    assert res.attention["survival_source"] == prep.attention.survival_source


def test_the_trace_at_its_own_context_is_replayed_as_projected(projected):
    header, records = projected
    prep = prepare(load(DREX), header, records)
    assert prep.attention.survival_source.startswith(f"projected at {records[0].context_len} tokens")
    np.testing.assert_array_equal(prep.works[0].survivors, records[0].survivors)


def test_a_longer_context_than_the_projected_draws_from_the_projection(projected):
    header, records = projected
    prep = prepare(load(DREX), header, records, context=512 * 1024, max_steps=1)
    assert prep.works[0].context == 512 * 1024
    assert prep.works[0].survivors.sum() == pytest.approx(expected_at(header, 512 * 1024).sum(), rel=0.1)


def test_a_capture_below_its_context_says_it_scaled():
    system = load(DREX)
    header = make_header(system.geometry)
    prep = prepare(system, header, [make_step(header, 65536)], context=16384)
    assert "scaled from the trace at 65536 tokens" in prep.attention.survival_source


# -- filter ratio ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [5.0, 20.0, 100.0])
def test_filter_ratio_sets_the_mean_ratio_and_keeps_the_spread(projected, ratio):
    header, records = projected
    base = prepare(load(DREX), header, records, max_steps=1)
    prep = prepare(load(DREX, **{"workload.attention.filter_ratio": ratio}), header, records, max_steps=1)
    w, b = prep.works[0], base.works[0]
    assert w.considered.sum() / w.survivors.sum() == pytest.approx(ratio, rel=0.01)
    # per-head dispersion: every head scaled by one factor, except those it would take past every key
    capped = w.survivors == w.considered
    free = ~capped & (b.survivors >= 50)  # rounding aside
    factor = w.survivors[free] / b.survivors[free]
    assert factor.std() / factor.mean() < 0.02
    assert (factor.mean() * b.survivors[capped] >= w.considered[capped] - 1).all()
    assert capped.mean() < (0.2 if ratio < 10 else 1e-9)
    # per-block dispersion: a head's blocks keep one factor until a block is full (no block passes more keys
    # than it has); what a full block cannot take goes to the head's other blocks
    from cemsim.sim.survival import redistribute
    from cemsim.trace.synthetic import sparse_keys_per_block

    rec = records[0]
    keys = sparse_keys_per_block(rec.context_len, header, rec.window, rec.sinks)
    blocks = redistribute(rec.survivor_blocks, keys, w.survivors).astype(np.int64)
    assert (blocks <= keys).all()
    np.testing.assert_array_equal(blocks.sum(-1), w.survivors)
    old = rec.survivor_blocks.astype(np.int64)
    for i in zip(*np.nonzero(free), strict=True):
        part = (blocks[i] < keys) & (old[i] >= 20)  # not full, and enough to read a factor from
        if part.sum() >= 2:
            f = blocks[i][part] / old[i][part]
            assert f.max() - f.min() < 0.15 * f.mean() + 0.1
    assert (w.values <= w.survivors).all()
    res = simulate(prep)
    assert res.to_json_dict()["attention"]["filter_ratio"] == ratio


def test_a_lower_filter_ratio_costs_the_device_more(projected):
    header, records = projected
    lat = []
    for ratio in (5, 20, 100):
        system = load(DREX, **{"workload.attention.filter_ratio": ratio, "workload.batch": 8})
        lat.append(simulate(prepare(system, header, records, max_steps=1)).latency_per_token_s)
    assert lat[0] > lat[1] > lat[2]


def test_filter_ratio_with_thresholds_is_refused():
    from cemsim.config.loader import ConfigError

    with pytest.raises(ConfigError, match="filter_ratio"):
        load(DREX, **{"workload.attention.filter_ratio": 20, "workload.attention.threshold": 36})


def test_a_projection_draw_is_reused_across_systems_and_batches(projected):
    """A sweep replays one trace at one context on many systems: the seeded draw is made once."""
    from cemsim.sim import survival

    header, records = projected
    a = prepare(load(DREX), header, records, context=16384)
    key = [k for k in survival._DRAWN if k[-1] == 16384]
    assert len(key) == 1 and len(survival._DRAWN[key[0]]) == len(records)
    b = prepare(load(DREX, **{"workload.batch": 4}), header, records, context=16384)
    for x, y in zip(a.works, b.works, strict=True):
        np.testing.assert_array_equal(x.survivors, y.survivors)


def test_the_replayed_filter_ratio_is_recorded(projected):
    header, records = projected
    prep = prepare(load(DREX, **{"workload.attention.filter_ratio": 40}), header, records, max_steps=1)
    assert prep.attention.record()["replayed_filter_ratio"] == pytest.approx(40, rel=0.01)


def test_a_point_that_does_not_fit_derives_only_its_first_step(projected):
    header, records = projected
    prep = prepare(load(DREX), header, records, batch=64)  # 64 users x 256K tokens: over DReX's 512 GB
    assert not prep.fit.fits and len(prep.works) == 1
    res = simulate(prep)
    assert not res.fits and "CEM device" in res.why_not[0]
    assert len(prepare(load(DREX), header, records, batch=1, max_steps=1).works) == 1
