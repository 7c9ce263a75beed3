"""Iterative quantization (ITQ, Gong & Lazebnik 2011): one orthogonal rotation per (layer, KV head).

Rotating queries and keys by the same orthogonal R leaves every dot product unchanged but moves them so
that their sign bits keep more of the angle between them, which is what the SCF filter compares.

Training data for one KV head: post-RoPE keys of about 1K tokens plus the post-RoPE queries of the query
heads in its group, each row scaled to norm sqrt(D) so keys and queries weigh alike and the rows sit on the
same scale as the sign vectors B in {-1, +1}^D. ITQ alternates

    B = sign(V R)                      (fix R, best codes)
    R = argmin_{R orthogonal} ||B - V R||_F    (fix B: orthogonal Procrustes)

Procrustes: ||B - V R||^2 = const - 2 tr(M R) with M = B^T V = U S W^T, maximised by R = W U^T. With numpy's
or torch.linalg's SVD ``U, S, Wt = svd(M)`` (which return W^T), ``R = Wt.T @ U.T``. This R depends on M alone:
flipping the signs of one singular pair (u_i, w_i), which SVD routines may do freely, leaves W U^T unchanged.

The published LongSight artifact (ae-micro-scf-attn ``src/llama_3_attn.py``, ``itq_no_pca``) computes
``U, _, Vt = torch.svd(M); R = Vt.t() @ U.t()``. ``torch.svd`` returns W itself (not W^T), so its R is
W^T U^T: not the minimiser W U^T, not its transpose U W^T either, and not even a function of M (flipping one
singular pair's signs changes W^T U^T). It is orthogonal, so training "runs", but it does not minimise the
quantization loss. :func:`procrustes` and :func:`train_itq` emulate that rule exactly behind
``update="artifact"`` (``torch.svd`` of the same M, ``V.t() @ U.t()``) only so tests can show what it does;
cemsim trains with ``update="correct"``.

Rotations are saved beside the model (``<model folder>/cemsim-itq-<recipe>.npz``, runner.itq_recipe): array
``rotations`` of shape [layers, kv_heads, D, D] (x_rotated = x @ R), plus ``losses``, ``tokens`` and
``recipe`` (what trained them) for provenance.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cemsim.atomic import atomic_path
from cemsim.errors import CemsimError

ITQ_FILE = "cemsim-itq.npz"


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # 64x64 problems: BLAS threads only add synchronisation (10x slower on a busy 2-core machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Update = Literal["correct", "artifact"]


def procrustes(
    b: np.ndarray | torch.Tensor, v: np.ndarray | torch.Tensor, *, update: Update = "correct"
) -> np.ndarray:
    """Orthogonal R minimising ||B - V R||_F; ``update="artifact"`` gives the published artifact's rule instead."""
    return _procrustes(
        torch.as_tensor(b, dtype=torch.float64), torch.as_tensor(v, dtype=torch.float64), update
    ).numpy()


def _procrustes(b: torch.Tensor, v: torch.Tensor, update: Update) -> torch.Tensor:
    m = b.T @ v
    if update == "artifact":
        u, _, w = torch.svd(m)  # returns W, not W^T (the artifact names it Vt)
        return w.t() @ u.t()
    if update != "correct":
        raise CemsimError(f"ITQ update must be 'correct' or 'artifact', got {update!r}")
    u, _, wt = torch.linalg.svd(m)  # like numpy: returns W^T
    return wt.T @ u.T


def quantization_loss(v: np.ndarray, r: np.ndarray) -> float:
    vr = np.asarray(v) @ np.asarray(r)
    return float(np.sum((np.where(vr >= 0, 1.0, -1.0) - vr) ** 2))


def normalize_rows(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v * (np.sqrt(v.shape[1]) / np.maximum(norms, 1e-12))


def train_itq(
    v: np.ndarray, *, iters: int = 50, seed: int = 0, update: Update = "correct"
) -> tuple[np.ndarray, list[float]]:
    """Train one rotation on rows ``v [n, D]`` (already scaled); returns (R, loss after init and each step)."""
    if v.ndim != 2 or v.shape[0] < 2:
        raise CemsimError(f"ITQ needs a [n, D] matrix with n >= 2, got shape {v.shape}")
    d = v.shape[1]
    rng = np.random.default_rng(seed)
    r0, _ = np.linalg.qr(rng.standard_normal((d, d)))  # random orthogonal start, as in the paper
    with _one_thread(), torch.no_grad():
        vt = torch.as_tensor(v, dtype=torch.float64)
        r = torch.as_tensor(r0)
        losses = []
        for _ in range(iters):
            vr = vt @ r
            b = torch.where(vr >= 0, 1.0, -1.0).to(torch.float64)
            losses.append(float(((b - vr) ** 2).sum()))
            r = _procrustes(b, vt, update)
        vr = vt @ r
        losses.append(float(((torch.where(vr >= 0, 1.0, -1.0) - vr) ** 2).sum()))
    return r.numpy(), losses


@dataclass(frozen=True)
class ItqRotations:
    rotations: np.ndarray  # float32 [layers, kv_heads, D, D]
    losses: np.ndarray  # float64 [layers, kv_heads, iters + 1]
    tokens: int
    recipe: str = ""  # what trained them (runner.itq_recipe); "" for files written before it was recorded

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                rotations=self.rotations,
                losses=self.losses,
                tokens=np.int64(self.tokens),
                recipe=np.str_(self.recipe),
            )

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        layers: int | None = None,
        kv_heads: int | None = None,
        head_dim: int | None = None,
    ) -> ItqRotations:
        try:
            with np.load(path) as z:
                rot, losses, tokens = z["rotations"], z["losses"], int(z["tokens"])
                recipe = str(z["recipe"]) if "recipe" in z.files else ""
        except Exception as exc:
            raise CemsimError(f"cannot read ITQ rotations: {exc}", where=str(path)) from exc
        want = (layers, kv_heads, head_dim, head_dim)
        if rot.ndim != 4 or any(w is not None and w != s for w, s in zip(want, rot.shape, strict=True)):
            raise CemsimError(f"rotations have shape {rot.shape}, the model needs {want}", where=str(path))
        return cls(rotations=rot.astype(np.float32), losses=losses, tokens=tokens, recipe=recipe)


def train_all(keys: np.ndarray, queries: np.ndarray, *, iters: int = 50, seed: int = 0) -> ItqRotations:
    """Rotations for every (layer, KV head) from post-RoPE ``keys [L, Hkv, n, D]`` and
    ``queries [L, Hq, n, D]`` (query head h belongs to KV head h // (Hq // Hkv))."""
    layers, hkv, n, d = keys.shape
    group = queries.shape[1] // hkv
    rots = np.empty((layers, hkv, d, d), dtype=np.float32)
    losses = np.empty((layers, hkv, iters + 1))

    def one(job: tuple[int, int]) -> None:
        layer, h = job
        q = queries[layer, h * group : (h + 1) * group].reshape(-1, d)
        v = normalize_rows(np.concatenate([keys[layer, h], q]))
        r, loss = train_itq(v, iters=iters, seed=seed + 1000 * layer + h)
        rots[layer, h] = r
        losses[layer, h] = loss

    # Independent heads, each single-threaded: two at a time keeps both cores busy (torch drops the GIL).
    # The outer _one_thread makes every worker's nested one a no-op, so the global setting is restored once.
    with _one_thread(), ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(one, [(i, h) for i in range(layers) for h in range(hkv)]))
    return ItqRotations(rotations=rots, losses=losses, tokens=n)
