"""Capture: folding observer records into StepRecords, policy parsing, thresholds; the shipped real trace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cemsim.attention.policies import DecodeRecord
from cemsim.errors import CemsimError
from cemsim.trace.capture import (
    StepAssembler,
    calibrate_thresholds,
    load_thresholds,
    output_paths,
    parse_policies,
)
from cemsim.trace.format import TraceReader
from cemsim.trace.synthetic import synthetic_header

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "traces" / "smollm2-4k.parquet"


def header(policy="longsight", k=4):
    return synthetic_header("smollm2-135m", policy=policy, window=64, sinks=4, k=k, block_size=32)


def records(h, ctx, rng):
    out = []
    for layer in range(h.layers):
        for kv in range(h.kv_heads):
            region = np.arange(h.sinks, ctx - h.window)
            surv = np.sort(rng.choice(region, size=rng.integers(0, 20), replace=False)).astype(np.int32)
            tops = [
                np.sort(rng.choice(surv, size=min(h.k, surv.size), replace=False))
                for _ in range(h.group_size)
            ]
            out.append(DecodeRecord(0, layer, kv, ctx, region.size, surv, tops, h.window, h.sinks))
    return out


def test_assembler_longsight_counts_blocks_and_union():
    h = header()
    rng = np.random.default_rng(0)
    asm = StepAssembler(h, "longsight", dtype_bytes=2)
    recs = records(h, 300, rng)
    for r in recs:
        asm(r)
    step = asm.build(0, 300)
    step.check(h)
    r = recs[7]
    layer, kv = r.layer, r.kv_head
    assert step.survivors[layer, kv] == r.survivors.size
    np.testing.assert_array_equal(
        step.survivor_blocks[layer, kv], np.bincount(r.survivors // 32, minlength=10)
    )
    assert step.values_fetched[layer, kv] == np.unique(np.concatenate(r.topk)).size
    assert step.keys_considered[layer, kv] == 300 - 64 - 4
    got = step.topk_positions[layer, kv]
    for q, pos in enumerate(r.topk):
        np.testing.assert_array_equal(got[q, : pos.size], pos)
        assert np.all(got[q, pos.size :] == -1)
    assert asm.records == []  # consumed


def test_assembler_other_policies():
    h = header("quest")
    asm = StepAssembler(h, "quest", dtype_bytes=2)
    recs = records(h, 300, np.random.default_rng(1))
    for r in recs:
        asm(r)
    step = asm.build(0, 300)
    # Quest "survivors" are the chosen keys; metadata is the page bounds of the sparse region.
    assert step.survivors[0, 0] == np.unique(np.concatenate(recs[0].topk)).size
    assert step.metadata_bytes[0, 0] == -(-(300 - 68) // 16) * 2 * 64 * 2
    # Dense and window report nothing through the observer: the step is built from the geometry.
    dense = StepAssembler(header("dense"), "dense", 2).build(3, 500)
    assert (
        dense.window == 500
        and dense.sinks == 0
        and dense.survivors.sum() == 0
        and dense.topk_positions is None
    )
    win = StepAssembler(header("window"), "window", 2).build(3, 500)
    assert (win.window, win.sinks) == (64, 4) and win.keys_considered.sum() == 0


def test_parse_policies_and_paths(tmp_path):
    assert parse_policies("all")[0] == "longsight" and len(parse_policies("all")) == 5
    assert parse_policies("quest, dense,quest") == ("quest", "dense")
    with pytest.raises(CemsimError, match="unknown policy"):
        parse_policies("magic")
    p = output_paths(tmp_path / "t.parquet", ("longsight", "dense"))
    assert p == {"longsight": tmp_path / "t.parquet", "dense": tmp_path / "t.dense.parquet"}


def test_load_thresholds(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"format": "cemsim-scf-thresholds", "thresholds": [[40, 41, 42]] * 30}))
    assert load_thresholds(good, 30, 3, 64).shape == (30, 3)
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps([[40, 41]] * 30))
    with pytest.raises(CemsimError, match=r"shaped \[layers=30\]\[kv_heads=3\]"):
        load_thresholds(bad, 30, 3, 64)
    bad.write_text("{not json")
    with pytest.raises(CemsimError, match="cannot read thresholds"):
        load_thresholds(bad, 30, 3, 64)
    with pytest.raises(CemsimError, match="no such thresholds file"):
        load_thresholds(tmp_path / "missing.json", 30, 3, 64)


def test_calibrated_thresholds_hit_the_target_ratio():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((1, 1, 1024, 64)).astype(np.float32)
    queries = rng.standard_normal((1, 2, 1024, 64)).astype(np.float32)
    t = calibrate_thresholds(keys, queries, None, target_ratio=20.0)
    # Independent random signs: matches ~ Binomial(64, 1/2), the max of 2 query heads exceeds T w.p. ~ 1/20.
    q = queries[0, :, -256:] >= 0
    k = keys[0, 0] >= 0
    m = np.maximum(*(qq.astype(int) @ k.T.astype(int) + (~qq).astype(int) @ (~k).T.astype(int) for qq in q))
    frac = (m[:, :512] >= t[0, 0]).mean()
    assert 1 / 40 < frac <= 1 / 20 + 0.01


@pytest.mark.slow
def test_shipped_trace_is_a_real_capture():
    if not SHIPPED.is_file():
        pytest.skip("traces/smollm2-4k.parquet not present")
    assert SHIPPED.stat().st_size < 5e6
    r = TraceReader(SHIPPED)
    h = r.header
    assert (h.model, h.layers, h.q_heads, h.kv_heads, h.head_dim) == ("smollm2-135m", 30, 9, 3, 64)
    assert h.policy == "longsight" and h.itq and h.thresholds is not None and not h.projected
    steps = list(r.iter_steps())
    assert len(steps) == r.num_steps >= 8
    for s in steps:
        assert s.context_len == 4096 + s.step + 1
        assert s.topk_positions is not None
        fr = s.keys_considered.sum() / max(1, s.survivors.sum())
        assert 2 < fr < 500  # a real filter: neither everything nor nothing survives


@pytest.mark.slow
def test_shipped_policies_share_the_run():
    paths = {
        p: SHIPPED.with_name(f"smollm2-4k.{p}.parquet") for p in ("dense", "window", "oracle-topk", "quest")
    }
    if not SHIPPED.is_file() or not all(p.is_file() for p in paths.values()):
        pytest.skip("shipped policy traces not present")
    base = TraceReader(SHIPPED)
    ctx = [s.context_len for s in base.iter_steps(topk=False)]
    for policy, p in paths.items():
        r = TraceReader(p)
        assert r.header.policy == policy and r.header.text_source == base.header.text_source
        steps = list(r.iter_steps())
        assert [s.context_len for s in steps] == ctx
        if policy == "dense":
            assert all(s.window == s.context_len and s.survivors.sum() == 0 for s in steps)
        if policy == "oracle-topk":
            # Every query head picks exactly k keys (the sparse region holds more than k at 4K).
            assert all((s.topk_positions >= 0).sum(-1).min() == r.header.k for s in steps)
        if policy == "quest":
            assert all(s.metadata_bytes is not None and s.metadata_bytes.min() > 0 for s in steps)
