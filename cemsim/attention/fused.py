"""LongSight's sparse region fused into one Numba kernel per (KV head, query row), for prefill evaluation
on CPU.

For each row the kernel walks the row's sparse region once: the SCF test on packed signs, and for a survivor
its G scores (pre-scaled queries . key) while the key is in cache; then the exact top-k over the survivors
(quickselect for the k-th score, ties to the lower position), and the softmax over the picks merged
with the dense band's log-sum-exp, its value rows read for the picks only. No score or mask matrix is
built: cost follows keys considered (a popcount each) and survivors (G dot products each), where the
torch paths pay a full region product for any head with one dense row, or gather and pad survivor lists.

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


@numba.njit(inline="always", fastmath=_FAST)
def _dot(q, k, d):
    acc = np.float32(0.0)
    for t in range(d):
        acc += q[t] * k[t]
    return acc


@numba.njit(inline="always")
def _kth_largest(x, n, kk, buf):
    """The kk-th largest of ``x[:n]`` (1 <= kk <= n): quickselect (Hoare, median of three) on ``buf``,
    2-4x faster than Numba's ``np.partition`` on these score rows."""
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


@numba.njit
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
    hist[:] = 0
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


@numba.njit(inline="always")
def _kth(x, n, kk, buf, bins, hist):
    return _kth_largest(x, n, kk, buf) if n < _BINS else _kth_largest_hist(x, n, kk, buf, bins, hist)


@numba.njit(inline="always")
def _select(scores, ns, kk, sel, buf, bins, hist):
    """Marks in ``sel[:ns]`` the ``min(kk, ns)`` largest of ``scores[:ns]``, ties to the lower index."""
    if ns <= kk:
        sel[:ns] = True
        return
    sel[:ns] = False
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


@numba.njit(parallel=True, cache=True, fastmath=_FAST)
def _sparse_rows_kernel(
    qsig, ksig, d, thresholds, start, limits, q, k, v, kk, per_group, band_out, band_lse, recall_slot,
    recall_scores, out, counts, union, hits, totals,
):
    # qsig [H, G, C, W] uint64, ksig [H, N, W]; q [H, G, C, D] (pre-scaled), k/v [H, N, D]; band_out
    # [H, G, C, D] (normalised), band_lse [H, G, C]; row r considers keys start .. start + limits[r] - 1.
    # Writes out [H, G, C, D], and per (h, r): counts (survivors), union (survivors some head picked),
    # hits/totals (recall: on rows with recall_slot[r] >= 0, whose region scores are recall_scores[:, :,
    # slot]).
    h_n, g_n, c_n, w_n = qsig.shape
    n_keys = k.shape[1]
    row_bytes = d * 4
    k_base, v_base = k.ctypes.data, v.ctypes.data
    for task in numba.prange(h_n * c_n):
        r = task // h_n  # row-major: the static split gives each thread rows of every head
        h = task % h_n
        lim = limits[r]
        maxpc = d - thresholds[h]
        sidx = np.empty(lim, dtype=np.int64)
        best = np.empty(_FILTER_BLOCK, dtype=np.int64)
        ns = 0
        for lo in range(start, start + lim, _FILTER_BLOCK):
            nb = min(_FILTER_BLOCK, start + lim - lo)
            # Smallest popcount over the group per key, query-outer so the key loop vectorises.
            if w_n == 1:
                kw = ksig[h, lo : lo + nb, 0]
                qg = qsig[h, 0, r, 0]
                for j in range(nb):
                    best[j] = _popcount64(qg ^ kw[j])
                for g in range(1, g_n):
                    qg = qsig[h, g, r, 0]
                    for j in range(nb):
                        best[j] = min(best[j], _popcount64(qg ^ kw[j]))
            else:
                for g in range(g_n):
                    for j in range(nb):
                        pc = 0
                        for w in range(w_n):
                            pc += _popcount64(qsig[h, g, r, w] ^ ksig[h, lo + j, w])
                        best[j] = pc if g == 0 else min(best[j], pc)
            for j in range(nb):
                if best[j] <= maxpc:
                    sidx[ns] = lo + j
                    ns += 1
        sc = np.empty((g_n, ns), dtype=np.float32)
        for s in range(ns):
            if s + _AHEAD < ns:
                _prefetch_row(k_base, h * n_keys + sidx[s + _AHEAD], row_bytes)
            for g in range(g_n):
                sc[g, s] = _dot(q[h, g, r], k[h, sidx[s]], d)
        counts[h, r] = ns
        # Exact top-k over the survivors, per query head or one set for the group (by its best score).
        sel = np.empty((g_n, ns), dtype=np.bool_)
        buf = np.empty(lim, dtype=np.float32)  # k-th-score scratch (recall needs lim, ns <= lim)
        bins = np.empty(lim, dtype=np.int32)
        hist = np.empty(_BINS, dtype=np.int64)
        if per_group and ns > 0:
            best = np.empty(ns, dtype=np.float32)
            for s in range(ns):
                m = sc[0, s]
                for g in range(1, g_n):
                    m = max(m, sc[g, s])
                best[s] = m
            _select(best, ns, kk, sel[0], buf, bins, hist)
            for g in range(1, g_n):
                sel[g] = sel[0]
        else:
            for g in range(g_n):
                _select(sc[g], ns, kk, sel[g], buf, bins, hist)
        # One softmax over band and picks per query head; the band enters as its normalised output and
        # log-sum-exp. Value rows are read once for the group, for survivors some head picked (the union).
        mx = np.empty(g_n, dtype=np.float32)
        z = np.empty(g_n, dtype=np.float32)
        acc = np.empty((g_n, d), dtype=np.float32)
        for g in range(g_n):
            m = band_lse[h, g, r]
            for s in range(ns):
                if sel[g, s]:
                    m = max(m, sc[g, s])
            mx[g] = m
            wb = np.exp(band_lse[h, g, r] - m)
            z[g] = wb
            for t in range(d):
                acc[g, t] = band_out[h, g, r, t] * wb
        picked = np.empty(ns, dtype=np.int64)
        u = 0
        for s in range(ns):
            for g in range(g_n):
                if sel[g, s]:
                    picked[u] = s
                    u += 1
                    break
        union[h, r] = u
        for i in range(u):
            if i + _AHEAD < u:
                _prefetch_row(v_base, h * n_keys + sidx[picked[i + _AHEAD]], row_bytes)
            s = picked[i]
            vr = v[h, sidx[s]]
            for g in range(g_n):
                if sel[g, s]:
                    p = np.exp(sc[g, s] - mx[g])
                    z[g] += p
                    for t in range(d):
                        acc[g, t] += p * vr[t]
        for g in range(g_n):
            for t in range(d):
                out[h, g, r, t] = acc[g, t] / z[g]
        slot = recall_slot[r]
        if slot >= 0 and kk > 0 and lim > 0:
            for g in range(g_n):
                full = recall_scores[h, g, slot, :lim]
                if lim <= kk:
                    thr = np.float32(-3.0e38)
                    totals[h, r] += lim
                else:
                    thr = _kth(full, lim, kk, buf, bins, hist)
                    totals[h, r] += kk
                hit = 0
                for s in range(ns):
                    if sel[g, s] and full[sidx[s] - start] >= thr:
                        hit += 1
                hits[h, r] += min(hit, kk)


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
    sinks' attention; ``recall_rows [nr]`` the rows sampled for recall and ``recall_scores [H, G, nr, R]``
    their scores over the region (R >= their limits). Returns ``(out [H, G, C, D], survivors [H, C], union [H, C],
    recall hits [H, C], recall totals [H, C])``."""
    h_n, g_n, c_n, _ = qsig.shape
    d = q.shape[-1]
    out = np.empty((h_n, g_n, c_n, d), dtype=np.float32)
    counts = np.zeros((h_n, c_n), dtype=np.int64)
    union = np.zeros((h_n, c_n), dtype=np.int64)
    hits = np.zeros((h_n, c_n), dtype=np.int64)
    totals = np.zeros((h_n, c_n), dtype=np.int64)
    slot = np.full(c_n, -1, dtype=np.int64)
    slot[np.asarray(recall_rows, dtype=np.int64)] = np.arange(len(recall_rows))
    c = np.ascontiguousarray
    _sparse_rows_kernel(
        c(qsig), c(ksig), np.int64(head_dim), c(thresholds, dtype=np.int64), np.int64(start),
        c(np.minimum(limits, ksig.shape[1] - start), dtype=np.int64), c(q, dtype=np.float32),
        c(k, dtype=np.float32), c(v, dtype=np.float32), np.int64(kk), bool(per_group),
        c(band_out, dtype=np.float32), c(band_lse, dtype=np.float32), slot,
        c(recall_scores, dtype=np.float32), out, counts, union, hits, totals,
    )
    return out, counts, union, hits, totals
