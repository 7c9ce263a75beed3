"""ITQ: the Procrustes step uses the right transpose, and the quantization loss goes down."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cemsim.attention.itq import (
    ItqRotations,
    normalize_rows,
    procrustes,
    quantization_loss,
    train_all,
    train_itq,
)
from cemsim.errors import CemsimError


def _anisotropic(n: int = 1500, d: int = 64, seed: int = 0) -> np.ndarray:
    # Real keys are far from isotropic (a few large channels, a mean offset): give ITQ something to fix.
    rng = np.random.default_rng(seed)
    scales = np.geomspace(8.0, 0.2, d)
    x = rng.standard_normal((n, d)) * scales + 0.5
    mix, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return normalize_rows(x @ mix)


def test_procrustes_is_the_minimiser():
    # For any B, the Procrustes R must beat every other orthogonal matrix tried, the transpose included.
    rng = np.random.default_rng(3)
    v = _anisotropic(400, 16)
    b = np.where(rng.standard_normal((400, 16)) >= 0, 1.0, -1.0)
    r = procrustes(b, v)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)
    best = np.sum((b - v @ r) ** 2)
    assert best < np.sum((b - v @ r.T) ** 2)
    for _ in range(50):
        other, _ = np.linalg.qr(rng.standard_normal((16, 16)))
        assert best <= np.sum((b - v @ other) ** 2) + 1e-9


def test_loss_decreases_and_transposed_update_does_no_better():
    v = _anisotropic()
    _, good = train_itq(v, iters=20, seed=1)
    _, bad = train_itq(v, iters=20, seed=1)  # same start
    _, artifact = train_itq(v, iters=20, seed=1, transposed=True)
    assert good == bad  # deterministic
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(good)), "ITQ loss must not increase"
    assert good[-1] < 0.97 * good[0]
    assert artifact[-1] > good[-1]


def test_train_all_shapes_roundtrip_and_shape_check(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((2, 3, 64, 64))
    queries = rng.standard_normal((2, 9, 64, 64))
    rot = train_all(keys, queries, iters=3)
    assert rot.rotations.shape == (2, 3, 64, 64) and rot.losses.shape == (2, 3, 4)
    r = rot.rotations[1, 2].astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(64), atol=1e-5)
    path = tmp_path / "itq.npz"
    rot.save(path)
    back = ItqRotations.load(path, layers=2, kv_heads=3, head_dim=64)
    np.testing.assert_array_equal(back.rotations, rot.rotations)
    with pytest.raises(CemsimError, match="shape"):
        ItqRotations.load(path, layers=30, kv_heads=3, head_dim=64)
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(CemsimError, match=r"junk\.npz"):
        ItqRotations.load(tmp_path / "junk.npz")
    assert quantization_loss(normalize_rows(keys[0, 0]), np.eye(64)) > 0
