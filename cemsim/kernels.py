"""Backend choice for cemsim's kernels and their Python face.

The sign-concordance filter (LongSight SCF) has three backends with bit-identical results:

- ``numpy``: the reference (``np.bitwise_count`` on XOR-ed words).
- ``numba``: parallel CPU, hand-written popcount (Numba lacks ``np.bitwise_count``; LLVM turns the bit
  trick into the ``popcnt`` instruction).
- ``cupy``: the CUDA C kernel in the repo's top-level ``kernels/scf_filter.cu``, compiled with
  ``cupy.RawModule``; used only when CuPy imports *and* ``cupy.cuda.is_available()`` (CuPy imports fine on
  machines without a GPU and fails at the first allocation).

``backend="auto"`` picks cupy, then numba, then numpy. Every result names the backend that ran.

Shapes: packed signs (see :mod:`cemsim.attention.signs`) of queries ``[R, G, W]`` or ``[G, W]`` and keys
``[N, W]`` (W = D / 64 words). ``matches = D - popcount(q ^ k)`` as uint8 (uint16 when D > 255); a key survives for
a row when any of the row's G queries (one KV group, G = 1..16) has ``matches >= threshold``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from cemsim.errors import CemsimError

Backend = Literal["auto", "numpy", "numba", "cupy"]
BACKENDS = ("numpy", "numba", "cupy")
KERNEL_DIR = Path(__file__).resolve().parent.parent / "kernels"
MAX_GROUP = 16


def kernel_sources() -> list[Path]:
    """Every CUDA source under the repo's ``kernels/`` folder."""
    return sorted(KERNEL_DIR.glob("*.cu"))


@functools.cache
def _cupy():
    """The cupy module when a CUDA device is usable, else None (cupy is an optional extra)."""
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception:
        return None
    try:
        return cupy if cupy.cuda.is_available() else None
    except Exception:
        return None


def cupy_available() -> bool:
    return _cupy() is not None


def resolve_backend(backend: Backend | str = "auto", device: str | None = None) -> str:
    """``auto``: CuPy when it sees a GPU, else Numba; given the ``device`` the keys live on, CuPy only for a
    CUDA device (for host tensors CuPy would copy them to the GPU and back on every call)."""
    if backend == "auto":
        on_gpu = device is None or str(device).startswith("cuda")
        return "cupy" if on_gpu and cupy_available() else "numba"
    if backend not in BACKENDS:
        raise CemsimError(f"unknown kernel backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")
    if backend == "cupy" and not cupy_available():
        raise CemsimError("backend 'cupy' asked for, but CuPy is not installed or sees no CUDA device")
    return backend


@dataclass(frozen=True)
class FilterResult:
    """Output of one SCF call. ``matches`` is None when the caller asked only for survivors."""

    survivors: np.ndarray  # bool [R, N] (or [N] for the single-row API)
    matches: np.ndarray | None  # uint8 [R, G, N] (or [G, N])
    backend: str


# --------------------------------------------------------------------------- numpy reference


def match_dtype(head_dim: int) -> type:
    """Matches run 0..D: uint8 up to D = 255, uint16 beyond (Gemma 3's D = 256)."""
    return np.uint8 if head_dim <= 255 else np.uint16


def _filter_numpy(
    q: np.ndarray, k: np.ndarray, d: int, t: int, want: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    x = q[:, :, None, :] ^ k[None, None, :, :]  # [R, G, N, W]
    m = (d - np.bitwise_count(x).sum(-1, dtype=np.int32)).astype(match_dtype(d))
    surv = (m >= t).any(axis=1)
    return surv, (m if want else None)


# --------------------------------------------------------------------------- numba


@intrinsic
def _popcount64(typingctx, x):
    """llvm.ctpop on a uint64: one popcnt instruction (Numba has no np.bitwise_count)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, [args[0]])

    return sig, codegen


_BLOCK = 4096  # keys per parallel task: amortises scheduling, stays in L1/L2


@numba.njit(parallel=True, cache=True, fastmath=True)
def _filter_numba_kernel(q, k, d, t, matches, surv, want):
    # Survival needs only the smallest popcount over the group: one compare per key, not G.
    r_n, g_n, w_n = q.shape
    n_keys = k.shape[0]
    n_blocks = (n_keys + _BLOCK - 1) // _BLOCK
    limit = d - t
    for task in numba.prange(r_n * n_blocks):
        r = task // n_blocks
        lo = (task % n_blocks) * _BLOCK
        hi = min(lo + _BLOCK, n_keys)
        if w_n == 1:
            if want:
                for n in range(lo, hi):
                    k0 = k[n, 0]
                    best = 1 << 30
                    for g in range(g_n):
                        pc = _popcount64(q[r, g, 0] ^ k0)
                        matches[r, g, n] = d - pc
                        best = min(best, pc)
                    surv[r, n] = best <= limit
            else:
                for n in range(lo, hi):
                    k0 = k[n, 0]
                    ok = False
                    for g in range(g_n):
                        if _popcount64(q[r, g, 0] ^ k0) <= limit:
                            ok = True
                            break
                    surv[r, n] = ok
        elif w_n == 2:
            if want:
                for n in range(lo, hi):
                    k0 = k[n, 0]
                    k1 = k[n, 1]
                    best = 1 << 30
                    for g in range(g_n):
                        pc = _popcount64(q[r, g, 0] ^ k0) + _popcount64(q[r, g, 1] ^ k1)
                        matches[r, g, n] = d - pc
                        best = min(best, pc)
                    surv[r, n] = best <= limit
            else:
                # Survivors only: the first query that passes decides (the hardware ORs the bitmaps).
                for n in range(lo, hi):
                    k0 = k[n, 0]
                    k1 = k[n, 1]
                    ok = False
                    for g in range(g_n):
                        if _popcount64(q[r, g, 0] ^ k0) + _popcount64(q[r, g, 1] ^ k1) <= limit:
                            ok = True
                            break
                    surv[r, n] = ok
        else:
            for n in range(lo, hi):
                best = 1 << 30
                for g in range(g_n):
                    pc = 0
                    for w in range(w_n):
                        pc += _popcount64(q[r, g, w] ^ k[n, w])
                    if want:
                        matches[r, g, n] = d - pc
                    best = min(best, pc)
                surv[r, n] = best <= limit


def _filter_numba(
    q: np.ndarray, k: np.ndarray, d: int, t: int, want: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    r, g, _ = q.shape
    n = k.shape[0]
    surv = np.empty((r, n), dtype=np.bool_)
    matches = np.empty((r, g, n) if want else (1, 1, 1), dtype=match_dtype(d))
    _filter_numba_kernel(q, k, np.int64(d), np.int64(t), matches, surv, want)
    return surv, (matches if want else None)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _survivor_lists_kernel(q, k, d, thresholds, start, limits, counts, idx):
    # q [H, R, G, W], k [H, N, W]; row r of head h considers keys start .. start + limits[r] - 1 and writes
    # the first cap survivors (relative to start, ascending) into idx[h, r]; counts[h, r] counts them all.
    h_n, r_n, g_n, w_n = q.shape
    cap = idx.shape[2]
    for task in numba.prange(h_n * r_n):
        h = task // r_n
        r = task % r_n
        lim = d - thresholds[h]
        hi = min(limits[r], k.shape[1] - start)
        cnt = 0
        for j in range(hi):
            ok = False
            if w_n == 1:
                k0 = k[h, start + j, 0]
                for g in range(g_n):
                    if _popcount64(q[h, r, g, 0] ^ k0) <= lim:
                        ok = True
                        break
            else:
                for g in range(g_n):
                    pc = 0
                    for w in range(w_n):
                        pc += _popcount64(q[h, r, g, w] ^ k[h, start + j, w])
                    if pc <= lim:
                        ok = True
                        break
            if ok:
                if cnt < cap:
                    idx[h, r, cnt] = j
                cnt += 1
        counts[h, r] = cnt


# --------------------------------------------------------------------------- cupy


@functools.cache
def _cupy_kernel():
    cp = _cupy()
    src = (KERNEL_DIR / "scf_filter.cu").read_text()
    return cp.RawModule(code=src, options=("-std=c++17",)).get_function("scf_filter")


def _filter_cupy(
    q: np.ndarray, k: np.ndarray, d: int, t: int, want: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    cp = _cupy()
    r, g, w = q.shape
    n = k.shape[0]
    if want and d > 255:
        raise CemsimError(f"the CUDA kernel stores matches as uint8; head dim {d} needs return_matches=False")
    q_d = cp.asarray(q)
    k_d = cp.asarray(k)
    surv_d = cp.empty((r, n), dtype=cp.uint8)
    m_d = cp.empty((r, g, n), dtype=cp.uint8) if want else None
    total = r * n
    threads = 256
    blocks = (total + threads - 1) // threads
    m_ptr = m_d if want else np.uint64(0)  # a null pointer when matches are not wanted
    _cupy_kernel()(
        (blocks,),
        (threads,),
        (
            q_d,
            k_d,
            np.int32(r),
            np.int32(g),
            np.int64(n),
            np.int32(w),
            np.int32(d),
            np.int32(t),
            m_ptr,
            surv_d,
        ),
    )
    surv = cp.asnumpy(surv_d).astype(bool)
    return surv, (cp.asnumpy(m_d) if want else None)


def scf_filter_device(q_signs, k_signs, head_dim: int, threshold: int):
    """SCF on tensors that already live on a CUDA device (no host copy): ``q_signs [R, G, W]`` and
    ``k_signs [N, W]`` packed signs as torch int64 (same bits as uint64, see
    :func:`cemsim.attention.signs.pack_signs_torch`); returns the survivor mask as a torch bool ``[R, N]`` on
    the same device. Runs the CuPy kernel on torch's current stream; torch <-> CuPy through DLPack."""
    import torch

    cp = _cupy()
    if cp is None:
        raise CemsimError("scf_filter_device needs CuPy and a CUDA device")
    q = q_signs.contiguous()
    k = k_signs.contiguous()
    r, g, w = q.shape
    n = k.shape[0]
    if not 1 <= g <= MAX_GROUP or k.shape[1] != w or head_dim != 64 * w:
        raise CemsimError(
            f"bad packed-sign shapes: queries {tuple(q.shape)}, keys {tuple(k.shape)}, D {head_dim}"
        )
    surv = torch.empty((r, n), dtype=torch.uint8, device=q.device)
    if r * n == 0:
        return surv.bool()
    threads = 256
    blocks = (r * n + threads - 1) // threads
    with cp.cuda.ExternalStream(torch.cuda.current_stream(q.device).cuda_stream):
        _cupy_kernel()(
            (blocks,),
            (threads,),
            (
                cp.from_dlpack(q).view(cp.uint64),
                cp.from_dlpack(k).view(cp.uint64),
                np.int32(r),
                np.int32(g),
                np.int64(n),
                np.int32(w),
                np.int32(head_dim),
                np.int32(threshold),
                np.uint64(0),
                cp.from_dlpack(surv),
            ),
        )
    return surv.bool()


_IMPLS = {"numpy": _filter_numpy, "numba": _filter_numba, "cupy": _filter_cupy}


# --------------------------------------------------------------------------- public API


def _check(q: np.ndarray, k: np.ndarray, head_dim: int, threshold: int) -> None:
    if q.dtype != np.uint64 or k.dtype != np.uint64:
        raise CemsimError(f"packed signs must be uint64, got queries {q.dtype} and keys {k.dtype}")
    if q.ndim != 3 or k.ndim != 2:
        raise CemsimError(f"queries must be [R, G, W] and keys [N, W]; got {q.shape} and {k.shape}")
    if q.shape[2] != k.shape[1] or head_dim != 64 * k.shape[1]:
        raise CemsimError(f"word counts disagree: queries {q.shape}, keys {k.shape}, head dim {head_dim}")
    if not 1 <= q.shape[1] <= MAX_GROUP:
        raise CemsimError(f"a KV group holds 1..{MAX_GROUP} queries, got {q.shape[1]}")
    if not 0 <= threshold <= head_dim + 1:
        raise CemsimError(f"threshold {threshold} outside 0..{head_dim + 1} for head dim {head_dim}")


def scf_filter_rows(
    q_signs: np.ndarray,
    k_signs: np.ndarray,
    head_dim: int,
    threshold: int,
    *,
    backend: Backend | str = "auto",
    return_matches: bool = True,
) -> FilterResult:
    """SCF for R independent rows of G queries each against the same N keys (``[R, G, W]`` x ``[N, W]``)."""
    q = np.ascontiguousarray(q_signs)
    k = np.ascontiguousarray(k_signs)
    _check(q, k, head_dim, int(threshold))
    name = resolve_backend(backend)
    surv, m = _IMPLS[name](q, k, int(head_dim), int(threshold), return_matches)
    return FilterResult(survivors=surv, matches=m, backend=name)


def scf_filter(
    q_signs: np.ndarray,
    k_signs: np.ndarray,
    head_dim: int,
    threshold: int,
    *,
    backend: Backend | str = "auto",
    return_matches: bool = True,
) -> FilterResult:
    """SCF for one decode step: G queries of one KV group ``[G, W]`` against N keys ``[N, W]``.

    Returns matches ``uint8[G, N]`` and survivors ``bool[N]`` (any query with ``matches >= threshold``).
    """
    q = np.asarray(q_signs)
    if q.ndim != 2:
        raise CemsimError(f"queries must be [G, W] packed signs, got shape {q.shape}")
    res = scf_filter_rows(
        q[None], k_signs, head_dim, threshold, backend=backend, return_matches=return_matches
    )
    return FilterResult(
        survivors=res.survivors[0],
        matches=None if res.matches is None else res.matches[0],
        backend=res.backend,
    )


@dataclass(frozen=True)
class SurvivorLists:
    """Survivors per (KV head, row) as padded index lists: ``idx[h, r, :min(counts[h, r], cap)]`` are the
    surviving key indices relative to ``start``, ascending; the rest of each row is undefined.
    ``overflow`` is True when some row has more than ``cap`` survivors (its list is then cut short)."""

    counts: np.ndarray  # int64 [H, R]
    idx: np.ndarray  # int32 [H, R, cap]
    overflow: bool
    backend: str


def scf_survivor_lists(
    q_signs: np.ndarray,
    k_signs: np.ndarray,
    head_dim: int,
    thresholds: np.ndarray,
    limits: np.ndarray,
    *,
    start: int = 0,
    cap: int,
    backend: Backend | str = "numba",
) -> SurvivorLists:
    """SCF for H KV heads at once, returning survivor *lists* instead of an ``[R, N]`` mask.

    ``q_signs [H, R, G, W]``, ``k_signs [H, N, W]``, ``thresholds [H]`` (keep when matches >= T),
    ``limits [R]``: row r considers keys ``start .. start + limits[r] - 1`` (a causal region per row). Cost
    and output scale with the keys considered and the survivors, not with R x N. Backends: ``numba`` (CPU)
    and ``numpy`` (the reference: the mask of :func:`scf_filter_rows`, then ``np.nonzero``)."""
    q = np.ascontiguousarray(q_signs)
    k = np.ascontiguousarray(k_signs)
    th = np.asarray(thresholds, dtype=np.int64).reshape(-1)
    lim = np.ascontiguousarray(np.minimum(np.asarray(limits, dtype=np.int64), k.shape[1] - start))
    if q.ndim != 4 or k.ndim != 3 or q.shape[0] != k.shape[0] or th.shape[0] != q.shape[0]:
        raise CemsimError(
            f"need queries [H, R, G, W], keys [H, N, W], thresholds [H]; got {q.shape}, {k.shape}, {th.shape}"
        )
    if lim.shape != (q.shape[1],) or not 0 <= start <= k.shape[1] or cap < 1:
        raise CemsimError(
            f"bad limits {lim.shape} / start {start} / cap {cap} for queries {q.shape} and keys {k.shape}"
        )
    for h in range(q.shape[0]):
        _check(q[h], k[h], head_dim, int(th[h]))
    hn, rn = q.shape[:2]
    counts = np.zeros((hn, rn), dtype=np.int64)
    idx = np.empty((hn, rn, cap), dtype=np.int32)
    if backend == "numba":
        _survivor_lists_kernel(q, k, np.int64(head_dim), th, np.int64(start), lim, counts, idx)
    elif backend == "numpy":
        hi = int(lim.max(initial=0))
        for h in range(hn):
            surv, _ = _filter_numpy(q[h], k[h, start : start + hi], int(head_dim), int(th[h]), False)
            surv &= np.arange(hi)[None, :] < lim[:, None]
            counts[h] = surv.sum(1)
            for r in range(rn):
                j = np.nonzero(surv[r])[0][:cap]
                idx[h, r, : len(j)] = j
    else:
        raise CemsimError(f"survivor lists run on backends numba and numpy, not {backend!r}")
    return SurvivorLists(counts=counts, idx=idx, overflow=bool(counts.max(initial=0) > cap), backend=backend)
