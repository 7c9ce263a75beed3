"""ITQ: the Procrustes step is the minimiser, the loss goes down, and the published artifact's rule (emulated
exactly: ``torch.svd`` of the same matrix, ``V.t() @ U.t()``) is shown for what it is."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

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
    # For any B, the Procrustes R must beat every other orthogonal matrix tried, its transpose and the
    # artifact's rule included.
    rng = np.random.default_rng(3)
    v = _anisotropic(400, 16)
    b = np.where(rng.standard_normal((400, 16)) >= 0, 1.0, -1.0)
    r = procrustes(b, v)
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)
    best = np.sum((b - v @ r) ** 2)
    assert best < np.sum((b - v @ r.T) ** 2)
    assert best < np.sum((b - v @ procrustes(b, v, update="artifact")) ** 2)
    for _ in range(50):
        other, _ = np.linalg.qr(rng.standard_normal((16, 16)))
        assert best <= np.sum((b - v @ other) ** 2) + 1e-9


def test_artifact_update_is_the_artifacts_rule():
    # ae-micro-scf-attn src/llama_3_attn.py: M = B.t() @ X; U, _, Vt = torch.svd(M); R = Vt.t() @ U.t()
    rng = np.random.default_rng(4)
    v = _anisotropic(300, 16, seed=4)
    b = np.where(rng.standard_normal((300, 16)) >= 0, 1.0, -1.0)
    m = torch.as_tensor(b).T @ torch.as_tensor(v)
    u, _, w = torch.svd(m)
    want = (w.t() @ u.t()).numpy()
    got = procrustes(b, v, update="artifact")
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got @ got.T, np.eye(16), atol=1e-10)  # orthogonal, so training "runs"
    right = procrustes(b, v)
    assert np.abs(got - right).max() > 0.1 and np.abs(got - right.T).max() > 0.1  # neither W U^T nor U W^T
    with pytest.raises(CemsimError, match="correct' or 'artifact"):
        procrustes(b, v, update="transposed")  # type: ignore[arg-type]


def test_artifact_rule_is_not_a_function_of_m():
    # Flip the signs of one singular pair: the same M, the same correct R, a different artifact R.
    rng = np.random.default_rng(5)
    m = torch.as_tensor(rng.standard_normal((16, 16)))
    u, s, w = torch.svd(m)
    flip = torch.ones(16, dtype=m.dtype)
    flip[3] = -1
    u2, w2 = u * flip, w * flip
    torch.testing.assert_close(u2 @ torch.diag(s) @ w2.t(), m)
    torch.testing.assert_close(w2 @ u2.t(), w @ u.t())  # correct: W U^T depends on M only
    assert (w2.t() @ u2.t() - w.t() @ u.t()).abs().max() > 0.1  # artifact: W^T U^T does not


def test_loss_decreases_and_the_artifact_rule_does_not():
    v = _anisotropic()
    _, good = train_itq(v, iters=20, seed=1)
    _, again = train_itq(v, iters=20, seed=1)  # same start
    _, artifact = train_itq(v, iters=20, seed=1, update="artifact")
    assert good == again  # deterministic
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(good)), "ITQ loss must not increase"
    # Against random orthogonal rotations (the level of no training at all): the correct update ends far
    # below all 50 of them, the artifact's rule never leaves their range (measured: correct 38,445 -> 30,666;
    # artifact 37,850..38,521; random 37,609..38,773).
    rng = np.random.default_rng(9)
    rand = [quantization_loss(v, np.linalg.qr(rng.standard_normal((64, 64)))[0]) for _ in range(50)]
    assert good[-1] < 0.9 * min(rand)
    assert min(artifact) > 0.98 * min(rand)


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


def test_cached_rotations_are_keyed_on_what_trained_them(tmp_path, monkeypatch):
    """load_or_train_itq reuses a cached file only for the same weights, token ids (text, token count,
    tokenizer, BOS), iterations and training code: another text trains (and keeps) its own file, and a file without a recipe (written before
    recipes were recorded) or with another recipe under the same name is retrained, not reused."""
    from types import SimpleNamespace

    from cemsim.attention import runner
    from cemsim.attention.itq import ItqRotations
    from cemsim.attention.text import EvalText

    monkeypatch.setenv("CEMSIM_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "toy"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    lm = SimpleNamespace(
        folder=folder, name="toy", num_layers=2, num_kv_heads=1, head_dim=8, tokenizer=None, bos_id=1
    )
    rng = np.random.default_rng(0)
    calls: list[int] = []

    def fake_capture(lm_, ids):  # keys [L, Hkv, n, D], queries [L, Hq, n, D]
        calls.append(len(ids))
        return rng.standard_normal((2, 1, 64, 8)), rng.standard_normal((2, 2, 64, 8))

    monkeypatch.setattr(runner, "capture_qk", fake_capture)
    monkeypatch.setattr(
        runner, "token_ids", lambda tok, text, n, from_end, bos: [ord(text.text[-1]), *range(n - 1)]
    )
    a, b = EvalText("text a", "a"), EvalText("text b", "b")

    rot_a, path_a, trained = runner.load_or_train_itq(lm, a, tokens=64, iters=3)
    assert trained and path_a.parent == folder and rot_a.recipe in path_a.name
    again, path, trained = runner.load_or_train_itq(lm, a, tokens=64, iters=3)
    assert not trained and path == path_a and len(calls) == 1
    np.testing.assert_array_equal(again.rotations, rot_a.rotations)

    _, path_b, trained = runner.load_or_train_itq(lm, b, tokens=64, iters=3)
    assert trained and path_b != path_a and len(calls) == 2
    for tokens, iters in ((32, 3), (64, 4)):  # another token count or iteration count is another recipe
        assert runner.load_or_train_itq(lm, a, tokens=tokens, iters=iters)[2]
    assert not runner.load_or_train_itq(lm, b, tokens=64, iters=3)[2]  # b's file was kept beside a's

    # the same file name holding rotations without a recipe, or another one, is retrained
    for stale in ("", "another recipe"):
        ItqRotations(rotations=rot_a.rotations, losses=rot_a.losses, tokens=64, recipe=stale).save(path_a)
        assert ItqRotations.load(path_a).recipe == stale
        n = len(calls)
        rot, _, trained = runner.load_or_train_itq(lm, a, tokens=64, iters=3)
        assert trained and len(calls) == n + 1 and rot.recipe == rot_a.recipe
