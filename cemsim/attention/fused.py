"""LongSight's sparse region fused into one Numba kernel per (KV head, query row), for prefill evaluation
on CPU.

For each row the kernel walks the row's sparse region once with the SCF test on packed signs, scores each
survivor against the group's G queries (pre-scaled, key rows prefetched), picks the exact top-k over the
survivors (the k-th score by quickselect, through a histogram for long rows; ties to the lower position),
and merges the picks' softmax with the dense band's log-sum-exp, reading each picked value row once for the
group. No score or mask matrix is built: cost follows keys considered (a popcount per query) and survivors
(G dot products each), where the torch paths pay a full region product for any head with one dense row, or
gather and pad survivor lists.

Top-k recall against the oracle on sampled rows takes their whole-region scores from the caller (one BLAS
product per chunk): a pick is a hit when its score there reaches that query head's k-th largest.

Results match :mod:`cemsim.attention.policies`' gather and full paths up to float rounding (the same
survivors, picks and stats wherever scores are not tied); ``tests/attention/test_fused.py`` pins that.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from cemsim.kernels import _popcount64

_FILTER_BLOCK = 512  # keys per filter block: the popcount buffer stays in L1
_AHEAD = 4  # survivor rows prefetched ahead of the dot products and the PV
_NEG = np.float32(-3.0e38)  # below any score: the kernel keeps away from inf (see _FAST)
# Float flags without nnan/ninf: the kernel never sees inf, but LLVM must not assume comparisons away.
_FAST = {"nsz", "arcp", "contract", "reassoc", "afn"}


@intrinsic
def _prefetch(typingctx, addr):
    """llvm.prefetch (read, keep in all cache levels) of the byte at ``addr``: survivor rows are scattered,
    so the hardware prefetcher cannot guess them and each row read would otherwise wait on memory."""
    sig = types.void(types.uintp)

    def codegen(context, builder, signature, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always")
def _prefetch_row(base, row, row_bytes):
    a = base + row * row_bytes
    for off in range(0, row_bytes, 64):
        _prefetch(a + off)


@numba.njit(cache=True)
def _kth_largest(x, n, kk, buf):
    """The kk-th largest of ``x[:n]`` (1 <= kk <= n): quickselect (Hoare, median of three) on ``buf``, which
    may be ``x`` itself (Numba's ``np.partition`` allocates a copy per call and was 10-60 % slower here)."""
    for i in range(n):
        buf[i] = x[i]
    lo, hi, want = 0, n - 1, kk - 1  # want: position in descending order
    while lo < hi:
        a, b, c = buf[lo], buf[(lo + hi) >> 1], buf[hi]
        p = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = lo, hi
        while i <= j:
            while buf[i] > p:
                i += 1
            while buf[j] < p:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if want <= j:
            hi = j
        elif want >= i:
            lo = i
        else:
            break
    return buf[want]


_BINS = 256  # histogram bins of the k-th-score search (rows of at least this many scores use it)


@numba.njit(cache=True)
def _kth_largest_hist(x, n, kk, buf, bins, hist):
    """The kk-th largest of ``x[:n]`` (1 <= kk <= n): a histogram over [min, max] finds its bin, quickselect
    finishes among that bin's few scores. Quickselect alone mispredicts about every other comparison on
    score rows (10 ns per score here); these passes have no data-dependent branch."""
    lo = x[0]
    hi = x[0]
    for i in range(n):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
    if hi == lo:
        return hi
    scale = (_BINS - 1) / (np.float64(hi) - np.float64(lo))
    for i in range(_BINS):
        hist[i] = 0
    for i in range(n):
        bins[i] = np.int32((np.float64(x[i]) - lo) * scale)  # computed once: both passes see one bin
        hist[bins[i]] += 1
    b = _BINS - 1
    above = 0
    while above + hist[b] < kk:
        above += hist[b]
        b -= 1
    c = 0
    for i in range(n):
        buf[c] = x[i]
        c += bins[i] == b
    return _kth_largest(buf, c, kk - above, buf)


@numba.njit(cache=True)
def _kth(x, n, kk, buf, bins, hist):
    return _kth_largest(x, n, kk, buf) if n < _BINS else _kth_largest_hist(x, n, kk, buf, bins, hist)


@numba.njit(cache=True)
def _select(scores, ns, kk, sel, buf, bins, hist):
    """Marks in ``sel[:ns]`` the ``min(kk, ns)`` largest of ``scores[:ns]``, ties to the lower index."""
    for s in range(ns):
        sel[s] = ns <= kk
    if ns <= kk or kk == 0:
        return
    thr = _kth(scores, ns, kk, buf, bins, hist)
    above = 0
    for s in range(ns):
        if scores[s] > thr:
            sel[s] = True
            above += 1
    need = kk - above
    for s in range(ns):
        if need == 0:
            break
        if scores[s] == thr:
            sel[s] = True
            need -= 1


@numba.njit(cache=True)
def _survivors(qs, ks, start, lim, maxpc, sidx, best):
    """SCF over keys ``start .. start + lim - 1``: positions whose smallest popcount over the group's
    queries ``qs [G, W]`` is at most ``maxpc`` go to ``sidx``; returns their count."""
    g_n, w_n = qs.shape
    ns = 0
    for lo in range(start, start + lim, _FILTER_BLOCK):
        nb = min(_FILTER_BLOCK, start + lim - lo)
        # Query-outer, key-inner: the key loop vectorises (LLVM widens popcount to AVX2 shuffles).
        if w_n == 1:
            kw = ks[lo : lo + nb, 0]
            for g in range(g_n):
                qg = qs[g, 0]
                if g == 0:
                    for j in range(nb):
                        best[j] = _popcount64(qg ^ kw[j])
                else:
                    for j in range(nb):
                        best[j] = min(best[j], _popcount64(qg ^ kw[j]))
        else:
            for g in range(g_n):
                for j in range(nb):
                    pc = 0
                    for w in range(w_n):
                        pc += _popcount64(qs[g, w] ^ ks[lo + j, w])
                    best[j] = pc if g == 0 else min(best[j], pc)
        for j in range(nb):
            if best[j] <= maxpc:
                sidx[ns] = lo + j
                ns += 1
    return ns


@numba.njit(cache=True, fastmath=_FAST)
def _scores(qr, kh, sidx, ns, sc):
    """``sc[g, s] = qr[g] . kh[sidx[s]]``, prefetching the key rows ahead."""
    g_n, d = qr.shape
    base = kh.ctypes.data
    row_bytes = kh.shape[1] * 4
    for s in range(ns):
        if s + _AHEAD < ns:
            _prefetch_row(base, sidx[s + _AHEAD], row_bytes)
        kr = kh[sidx[s]]
        for g in range(g_n):
            acc = np.float32(0.0)
            for t in range(d):
                acc += qr[g, t] * kr[t]
            sc[g, s] = acc


@numba.njit(cache=True)
def _pick(sc, ns, kk, per_group, sel, buf, bins, hist):
    """Exact top-k over the survivors: per query head, or one set for the group by its best score."""
    g_n = sc.shape[0]
    if per_group and ns > 0:
        best = np.empty(ns, dtype=np.float32)
        for s in range(ns):
            m = sc[0, s]
            for g in range(1, g_n):
                m = max(m, sc[g, s])
            best[s] = m
        _select(best, ns, kk, sel[0], buf, bins, hist)
        for g in range(1, g_n):
            for s in range(ns):
                sel[g, s] = sel[0, s]
    else:
        for g in range(g_n):
            _select(sc[g], ns, kk, sel[g], buf, bins, hist)


@numba.njit(cache=True, fastmath=_FAST)
def _merge(sc, sel, sidx, ns, vh, b_out, b_lse, out):
    """One softmax per query head over the band (its normalised output ``b_out [G, D]`` and log-sum-exp
    ``b_lse [G]``) and the picks; writes ``out [G, D]``. Value rows are read once for the group, for the
    survivors some head picked (the union); returns the union's size."""
    g_n, d = b_out.shape
    mx = np.empty(g_n, dtype=np.float32)
    z = np.empty(g_n, dtype=np.float32)
    acc = np.empty((g_n, d), dtype=np.float32)
    for g in range(g_n):
        m = b_lse[g]
        for s in range(ns):
            if sel[g, s]:
                m = max(m, sc[g, s])
        mx[g] = m
        wb = np.exp(b_lse[g] - m)
        z[g] = wb
        for t in range(d):
            acc[g, t] = b_out[g, t] * wb
    picked = np.empty(ns, dtype=np.int64)
    u = 0
    for s in range(ns):
        for g in range(g_n):
            if sel[g, s]:
                picked[u] = s
                u += 1
                break
    base = vh.ctypes.data
    row_bytes = d * 4
    for i in range(u):
        if i + _AHEAD < u:
            _prefetch_row(base, sidx[picked[i + _AHEAD]], row_bytes)
        s = picked[i]
        vr = vh[sidx[s]]
        for g in range(g_n):
            if sel[g, s]:
                p = np.exp(sc[g, s] - mx[g])
                z[g] += p
                for t in range(d):
                    acc[g, t] += p * vr[t]
    for g in range(g_n):
        for t in range(d):
            out[g, t] = acc[g, t] / z[g]
    return u


@numba.njit(cache=True)
def _recall(full, sel, sidx, ns, start, lim, kk, buf, bins, hist):
    """Recall of one row against the oracle: ``full [G, R]`` the row's region scores; returns (hits,
    oracle picks) summed over the group's query heads."""
    hits = 0
    total = 0
    for g in range(full.shape[0]):
        if lim <= kk:
            thr = _NEG
            total += lim
        else:
            thr = _kth(full[g], lim, kk, buf, bins, hist)
            total += kk
        hit = 0
        for s in range(ns):
            if sel[g, s] and full[g, sidx[s] - start] >= thr:
                hit += 1
        hits += min(hit, kk)
    return hits, total


@numba.njit(cache=True)
def _row(qs, ks, start, lim, maxpc, qr, kh, vh, kk, per_group, b_out, b_lse, out, sampled, full):
    """One (KV head, query row): returns (survivors, union, recall hits, recall total); ``full`` holds the
    row's region scores where it is ``sampled`` for recall."""
    g_n = qs.shape[0]
    sidx = np.empty(lim, dtype=np.int64)
    best = np.empty(_FILTER_BLOCK, dtype=np.int64)
    ns = _survivors(qs, ks, start, lim, maxpc, sidx, best)
    sc = np.empty((g_n, ns), dtype=np.float32)
    _scores(qr, kh, sidx, ns, sc)
    sel = np.empty((g_n, ns), dtype=np.bool_)
    buf = np.empty(lim, dtype=np.float32)  # k-th-score scratch (recall needs lim; ns <= lim)
    bins = np.empty(lim, dtype=np.int32)
    hist = np.empty(_BINS, dtype=np.int64)
    _pick(sc, ns, kk, per_group, sel, buf, bins, hist)
    u = _merge(sc, sel, sidx, ns, vh, b_out, b_lse, out)
    hits, total = 0, 0
    if sampled and kk > 0 and lim > 0:
        hits, total = _recall(full, sel, sidx, ns, start, lim, kk, buf, bins, hist)
    return ns, u, hits, total


@numba.njit(parallel=True, cache=True)
def _sparse_rows_kernel(
    qsig,
    ksig,
    d,
    thresholds,
    start,
    limits,
    q,
    k,
    v,
    kk,
    per_group,
    band_out,
    band_lse,
    recall_slot,
    recall_scores,
    out,
    counts,
    union,
    hits,
    totals,
):
    # Row-major layouts, so every per-task view is contiguous: qsig [H, C, G, W] uint64, ksig [H, N, W];
    # q [H, C, G, D] (pre-scaled), k/v [H, N, D]; band_out [H, C, G, D] (normalised), band_lse [H, C, G];
    # row r considers keys start .. start + limits[r] - 1. Writes out [H, C, G, D], and per (h, r): counts
    # (survivors), union (survivors some head picked), hits/totals (recall: on rows with recall_slot[r] >= 0,
    # whose region scores are recall_scores[h, slot] [G, R]).
    h_n, c_n = qsig.shape[0], qsig.shape[1]
    for task in numba.prange(h_n * c_n):
        r = task // h_n  # row-major: the static split gives each thread rows of every head
        h = task % h_n
        slot = recall_slot[r]
        ns, u, hit, tot = _row(
            qsig[h, r],
            ksig[h],
            start,
            limits[r],
            d - thresholds[h],
            q[h, r],
            k[h],
            v[h],
            kk,
            per_group,
            band_out[h, r],
            band_lse[h, r],
            out[h, r],
            slot >= 0,
            recall_scores[h, max(slot, 0)],
        )
        counts[h, r] = ns
        union[h, r] = u
        hits[h, r] = hit
        totals[h, r] = tot


def sparse_rows(
    qsig: np.ndarray,
    ksig: np.ndarray,
    head_dim: int,
    thresholds: np.ndarray,
    start: int,
    limits: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    kk: int,
    per_group: bool,
    band_out: np.ndarray,
    band_lse: np.ndarray,
    recall_rows: np.ndarray,
    recall_scores: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hybrid attention outputs of one query chunk with LongSight's sparse region (see the module doc).

    ``qsig [H, G, C, W]`` and ``ksig [H, N, W]`` packed signs; ``thresholds [H]``; ``limits [C]`` region
    lengths from ``start``; ``q [H, G, C, D]`` queries already multiplied by the softmax scale; ``k, v [H,
    N, D]`` fp32; ``kk`` keys per pick; ``band_out [H, G, C, D]``, ``band_lse [H, G, C]`` the window and
    sinks' attention; ``recall_rows [nr]`` the rows sampled for recall and ``recall_scores [H, nr, G, R]``
    their scores over the region (R >= their limits). Returns ``(out [H, G, C, D], survivors [H, C],
    union [H, C], recall hits [H, C], recall totals [H, C])``."""
    h_n, g_n, c_n, _ = qsig.shape
    d = q.shape[-1]
    out = np.empty((h_n, c_n, g_n, d), dtype=np.float32)
    counts = np.zeros((h_n, c_n), dtype=np.int64)
    union = np.zeros((h_n, c_n), dtype=np.int64)
    hits = np.zeros((h_n, c_n), dtype=np.int64)
    totals = np.zeros((h_n, c_n), dtype=np.int64)
    slot = np.full(c_n, -1, dtype=np.int64)
    slot[np.asarray(recall_rows, dtype=np.int64)] = np.arange(len(recall_rows))
    if recall_scores.shape[1] == 0:  # the kernel indexes slot 0 of rows it does not sample
        recall_scores = np.zeros((h_n, 1, g_n, 1), dtype=np.float32)
    c = np.ascontiguousarray

    def rows_first(x, dtype=np.float32):  # [H, G, C, ...] -> contiguous [H, C, G, ...]
        return c(np.swapaxes(x, 1, 2), dtype=dtype)

    _sparse_rows_kernel(
        rows_first(qsig, np.uint64),
        c(ksig),
        np.int64(head_dim),
        c(thresholds, dtype=np.int64),
        np.int64(start),
        c(np.minimum(limits, ksig.shape[1] - start), dtype=np.int64),
        rows_first(q),
        c(k, dtype=np.float32),
        c(v, dtype=np.float32),
        np.int64(kk),
        bool(per_group),
        rows_first(band_out),
        rows_first(band_lse),
        slot,
        c(recall_scores, dtype=np.float32),
        out,
        counts,
        union,
        hits,
        totals,
    )
    return np.swapaxes(out, 1, 2), counts, union, hits, totals


def warm() -> None:
    """Compile the kernel into Numba's cache (``__pycache__`` beside this file) with a tiny call: the
    Makefile does this at install, so a first ``cemsim eval`` does not spend ~15 s in the JIT."""
    h, g, c, d, n = 1, 2, 2, 64, 8
    rng = np.random.default_rng(0)
    sparse_rows(
        rng.integers(0, 2**63, (h, g, c, 1), dtype=np.uint64),
        rng.integers(0, 2**63, (h, n, 1), dtype=np.uint64),
        d,
        np.zeros(h, dtype=np.int64),
        1,
        np.array([3, 7]),
        rng.standard_normal((h, g, c, d)).astype(np.float32),
        rng.standard_normal((h, n, d)).astype(np.float32),
        rng.standard_normal((h, n, d)).astype(np.float32),
        2,
        False,
        np.zeros((h, g, c, d), dtype=np.float32),
        np.zeros((h, g, c), dtype=np.float32),
        np.array([1]),
        np.zeros((h, 1, g, 7), dtype=np.float32),
    )
