"""Packed key signs in MMA fragment order ("frag" layout) for the b1 tensor-core SCF filter
(kernels/scf_frag.cuh), and back.

The natural layout (cemsim.attention.signs) is ``[..., N, W]`` uint64: dimension d is bit d % 64 of word
d // 64. Viewed as little-endian 32-bit words that is ``[..., N, 2W]`` with dimension d at bit d % 32 of word
d // 32. The frag layout stores each group of 4 consecutive keys word-major: ``[..., N / 4, 2W, 4]`` 32-bit
words, so 32-bit word w of key n sits at index ``8W (n // 4) + 4 w + n % 4``. In a block of 32 keys, lane
``L = 4g + t`` of a warp then reads word t of keys 4g..4g+3 as one 16-byte load: the A fragments of the
MMAs. N is padded with zero keys to a multiple of 32 (the kernels mask keys past the real N).

Both functions take NumPy or CuPy arrays and return the same kind; the frag array keeps the natural array's
shape ``[..., ceil(N / 32) * 32, W]`` and dtype (only the order of its words changes), so byte counts and
the kernels' pointer arithmetic stay as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cemsim.errors import CemsimError

BLOCK_KEYS = 32  # keys per warp-wide block of the frag kernels


def _xp(a: Any) -> Any:
    try:
        import cupy  # type: ignore[import-not-found]
    except ImportError:
        return np
    return cupy.get_array_module(a)


def padded_keys(n: int) -> int:
    return -(-n // BLOCK_KEYS) * BLOCK_KEYS


def to_frag(ksig: Any) -> Any:
    """Natural ``[..., N, W]`` uint64 signs -> frag layout ``[..., ceil(N / 32) * 32, W]`` (zero-padded)."""
    xp = _xp(ksig)
    if ksig.dtype != np.uint64 or ksig.ndim < 2 or ksig.shape[-1] not in (1, 2):
        raise CemsimError(
            f"to_frag: expected uint64 signs [..., N, W] with W = 1 or 2, got {ksig.dtype} {ksig.shape}"
        )
    *lead, n, w = ksig.shape
    n_pad = padded_keys(n)
    src = ksig
    if n_pad != n:
        src = xp.zeros((*lead, n_pad, w), dtype=np.uint64)
        src[..., :n, :] = ksig
    words = xp.ascontiguousarray(src).view(np.uint32).reshape(*lead, n_pad // 4, 4, 2 * w)
    return xp.ascontiguousarray(words.swapaxes(-1, -2)).view(np.uint64).reshape(*lead, n_pad, w)


def from_frag(kfrag: Any, n: int | None = None) -> Any:
    """Frag layout ``[..., N_pad, W]`` -> natural ``[..., n, W]`` (the first ``n`` keys; all by default)."""
    xp = _xp(kfrag)
    *lead, n_pad, w = kfrag.shape
    if kfrag.dtype != np.uint64 or n_pad % BLOCK_KEYS or w not in (1, 2):
        raise CemsimError(
            f"from_frag: expected uint64 frag signs [..., 32m, W] with W = 1 or 2, got {kfrag.dtype} "
            f"{kfrag.shape}"
        )
    words = xp.ascontiguousarray(kfrag).view(np.uint32).reshape(*lead, n_pad // 4, 2 * w, 4)
    out = xp.ascontiguousarray(words.swapaxes(-1, -2)).view(np.uint64).reshape(*lead, n_pad, w)
    return out if n is None else out[..., :n, :]
