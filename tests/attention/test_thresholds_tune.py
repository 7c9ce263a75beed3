"""Threshold files and the tuning machinery that needs no model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cemsim.attention.signs import matches_reference, pack_signs
from cemsim.attention.thresholds import ThresholdFile, load_thresholds
from cemsim.attention.tune import _match_histogram, move_sequence, thresholds_after
from cemsim.errors import CemsimError


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_roundtrip(tmp_path, suffix):
    th = np.array([[1, 2, 3], [40, 50, 65]])
    ThresholdFile(model="m", head_dim=64, thresholds=th, provenance={"a": 1}).save(tmp_path / f"t{suffix}")
    back = load_thresholds(tmp_path / f"t{suffix}", layers=2, kv_heads=3, head_dim=64)
    np.testing.assert_array_equal(back.thresholds, th)
    assert back.model == "m" and back.provenance == {"a": 1}


def test_bad_files_name_file_and_field(tmp_path):
    good = ThresholdFile(model="m", head_dim=64, thresholds=np.zeros((2, 3), int)).to_dict()
    cases = {
        "missing.json": None,
        "syntax.json": "{not json",
        "format.json": {**good, "format": "other"},
        "shape.json": {**good, "thresholds": [[1, 2]]},
        "range.json": {**good, "thresholds": [[1, 2, 99], [0, 0, 0]]},
        "floats.json": {**good, "thresholds": [[1.5, 2, 3], [0, 0, 0]]},
        "convention.json": {**good, "convention": "keep key when matches > T"},
    }
    for name, body in cases.items():
        p = tmp_path / name
        if body is not None:
            p.write_text(body if isinstance(body, str) else json.dumps(body))
        with pytest.raises(CemsimError) as exc:
            load_thresholds(p, layers=2, kv_heads=3, head_dim=64)
        assert name in str(exc.value)


def test_match_histogram_counts_region_pairs():
    rng = np.random.default_rng(0)
    n, g, d, w, s = 90, 3, 64, 10, 4
    q, k = rng.standard_normal((g, n, d)), rng.standard_normal((n, d))
    hist = _match_histogram(np.ascontiguousarray(pack_signs(q).transpose(1, 0, 2)), pack_signs(k), d, w, s)
    m = matches_reference(q, k[None]).max(0)  # [n, n] best over the group
    expect = np.zeros(d + 1, int)
    for p in range(n):
        for j in range(s, p - w + 1):
            expect[m[p, j]] += 1
    np.testing.assert_array_equal(hist, expect)


def test_move_sequence_raises_lowest_filter_ratio_first():
    # survivors[layer, head, T] for T = 0..5 (D + 1 = 5)
    t = np.arange(6)
    surv = np.stack(
        [
            np.stack([100 - 5 * t, 100 - 30 * t.clip(max=3)]),
            np.stack([100 - 10 * t, 100 - 10 * t]),
        ]
    )
    moves = move_sequence(surv, start=0, step=1)
    assert moves[0] == (0, 0, 1)  # all FR equal at T=0: ties go to the lowest layer/head
    # Ties at T=0 (all FR 1) raise every head once; then (0,0) has the lowest FR (100/95) and goes first.
    assert thresholds_after(moves, 4, (2, 2), 0).tolist() == [[1, 1], [1, 1]]
    assert thresholds_after(moves, 5, (2, 2), 0).tolist() == [[2, 1], [1, 1]]
    assert thresholds_after(moves, 6, (2, 2), 0).tolist() == [[3, 1], [1, 1]]  # 100/90 still the lowest
    assert all(0 <= m[2] <= 5 for m in moves)
    # Every head ends at D + 1 (index 5) when the sequence runs out.
    assert thresholds_after(moves, len(moves), (2, 2), 0).tolist() == [[5, 5], [5, 5]]
