"""Sign bits of post-RoPE, post-rotation vectors, packed into uint64 words.

Layout (the one cemsim uses everywhere, kernels included): dimension ``d`` of a D-dimensional vector is bit
``d % 64`` (least significant bit first) of word ``d // 64``; a bit is 1 when the component is >= 0 (zero
counts as positive, as in LongSight). D must be a multiple of 64: head dim 64 -> 1 word, 128 -> 2 words.
``matches(q, k) = D - popcount(q_signs XOR k_signs)`` over the words.
"""

from __future__ import annotations

import numpy as np
import torch

from cemsim.errors import CemsimError


def words_for(head_dim: int) -> int:
    if head_dim <= 0 or head_dim % 64:
        raise CemsimError(f"sign packing needs a head dim that is a multiple of 64, got {head_dim}")
    return head_dim // 64


def pack_signs(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Pack the signs of ``x[..., D]`` into ``uint64[..., D // 64]`` (layout in the module docstring)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float32).cpu().numpy()
    x = np.asarray(x)
    d = x.shape[-1]
    nw = words_for(d)
    bits = np.ascontiguousarray(x >= 0)
    # packbits little-endian puts dim 8b+i at bit i of byte b; 8 bytes read as a little-endian uint64
    # then put dim d at bit d % 64 of word d // 64.
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False).reshape(*x.shape[:-1], nw)


def unpack_signs(words: np.ndarray, head_dim: int) -> np.ndarray:
    """Inverse of :func:`pack_signs`: bool[..., head_dim], True where the component was >= 0."""
    w = np.ascontiguousarray(words.astype("<u8", copy=False))
    as_bytes = w.view(np.uint8).reshape(*w.shape[:-1], w.shape[-1] * 8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :head_dim].astype(bool)


def matches_reference(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Sign agreements counted directly from float vectors (no packing): the oracle the kernels must equal."""
    qs = np.asarray(q) >= 0
    ks = np.asarray(k) >= 0
    return (qs[..., :, None, :] == ks[..., None, :, :]).sum(-1).astype(np.int32)


def pack_signs_torch(x: torch.Tensor) -> torch.Tensor:
    """:func:`pack_signs` on ``x``'s own device (for CUDA tensors: no host copy). Returns int64 words with
    the same bits as pack_signs's uint64 (bit 63 is the int64 sign bit); view them as uint64 where needed."""
    d = x.shape[-1]
    nw = words_for(d)
    bits = (x >= 0).reshape(*x.shape[:-1], nw, 64).to(torch.int64)
    shifts = torch.arange(64, device=x.device, dtype=torch.int64)
    # Distinct bits never carry, so the sum is the bitwise OR (bit 63 wraps to the sign bit, as intended).
    return (bits << shifts).sum(-1)
