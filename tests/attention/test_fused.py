"""The fused Numba kernel of LongSight's sparse region: against a NumPy reference of the same rule, against
the torch paths (outputs and every stat) and against dense attention without a filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cemsim.attention import fused, policies
from cemsim.attention.policies import AttentionState, PolicyConfig, dense_reference, hybrid_attention
from cemsim.attention.signs import pack_signs
from cemsim.errors import CemsimError


def _reference(qsig, ksig, d, th, start, limits, q, k, v, kk, per_group, b_out, b_lse, rec_rows, rec_scores):
    """The rule of :func:`fused.sparse_rows`, one row at a time in float64: survivors where some query's
    matches reach T, the k largest scores (ties to the lower position), one softmax with the band."""
    h_n, g_n, c_n, _ = qsig.shape
    out = np.zeros((h_n, g_n, c_n, d))
    counts, union, hits, totals = (np.zeros((h_n, c_n), dtype=np.int64) for _ in range(4))
    slot = {int(r): i for i, r in enumerate(rec_rows)}
    for h in range(h_n):
        for r in range(c_n):
            keys = np.arange(start, start + limits[r])
            m = d - np.bitwise_count(qsig[h, :, r][:, None, :] ^ ksig[h, keys][None]).sum(-1)  # [G, n]
            surv = keys[(m >= th[h]).any(0)]
            counts[h, r] = len(surv)
            sc = q[h, :, r].astype(np.float64) @ k[h, surv].T.astype(np.float64)  # [G, ns]
            rank_by = [sc.max(0)] * g_n if per_group else list(sc)
            sel = np.zeros((g_n, len(surv)), dtype=bool)
            for g in range(g_n):
                sel[g, np.argsort(-rank_by[g], kind="stable")[:kk]] = True
            union[h, r] = sel.any(0).sum()
            for g in range(g_n):
                s = np.concatenate([[b_lse[h, g, r]], sc[g, sel[g]]])
                w = np.exp(s - s.max())
                out[h, g, r] = (w[0] * b_out[h, g, r] + w[1:] @ v[h, surv[sel[g]]]) / w.sum()
            if r in slot and kk and len(keys):
                for g in range(g_n):
                    full = rec_scores[h, slot[r], g, : len(keys)]
                    thr = np.sort(full)[::-1][min(kk, len(keys)) - 1]
                    hits[h, r] += min(kk, int((full[surv[sel[g]] - start] >= thr).sum()))
                    totals[h, r] += min(kk, len(keys))
    return out, counts, union, hits, totals


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    h_n=st.integers(1, 3),
    g_n=st.sampled_from([1, 2, 3, 8, 16]),
    d=st.sampled_from([64, 128]),
    c_n=st.integers(1, 12),
    n=st.integers(1, 400),
    kk=st.integers(0, 40),
    per_group=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_matches_reference(h_n, g_n, d, c_n, n, kk, per_group, seed):
    """Integer-valued vectors make every dot product exact in fp32 whatever the summation order, so picks
    are comparable exactly, and ties (frequent here) test the lower-position rule."""
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, n))
    limits = rng.integers(0, n - start + 1, size=c_n)
    q = rng.integers(-1, 2, size=(h_n, g_n, c_n, d)).astype(np.float32)
    k = rng.integers(-1, 2, size=(h_n, n, d)).astype(np.float32)
    v = rng.standard_normal((h_n, n, d)).astype(np.float32)
    qsig = pack_signs(torch.from_numpy(q + rng.standard_normal(q.shape).astype(np.float32)))
    ksig = pack_signs(torch.from_numpy(k + rng.standard_normal(k.shape).astype(np.float32)))
    th = rng.integers(d // 2 - 4, d // 2 + 8, size=h_n)
    b_out = rng.standard_normal((h_n, g_n, c_n, d)).astype(np.float32)
    b_lse = (rng.standard_normal((h_n, g_n, c_n)) * 3).astype(np.float32)
    rec_rows = np.nonzero(rng.random(c_n) < 0.5)[0]
    r_max = max(1, int(limits.max()))
    rec_scores = np.einsum("hgrd,hnd->hrgn", q[:, :, rec_rows], k[:, start : start + r_max]).astype(
        np.float32
    )
    args = (qsig, ksig, d, th, start, limits, q, k, v, kk, per_group, b_out, b_lse, rec_rows, rec_scores)
    got = fused.sparse_rows(*args)
    want = _reference(*args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("survivors", "union", "hits", "totals"), got[1:], want[1:], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**31 - 1),
    levels=st.sampled_from([2, 7, 1000, 0]),
    data=st.data(),
)
def test_kth_largest_both_paths(n, seed, levels, data):
    """Quickselect (short rows) and histogram + quickselect (rows of at least _BINS scores), with and
    without heavy ties, against a sort."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, levels, n) if levels else rng.standard_normal(n)).astype(np.float32)
    kk = data.draw(st.integers(1, n))
    want = np.sort(x)[::-1][kk - 1]
    buf = np.empty(n, dtype=np.float32)
    assert fused._kth_largest(x, n, kk, buf) == want
    bins, hist = np.empty(n, dtype=np.int32), np.empty(fused._BINS, dtype=np.int64)
    assert fused._kth_largest_hist(x, n, kk, buf, bins, hist) == want
    assert fused._kth(x, n, kk, buf, bins, hist) == want


HQ, HKV, D = 6, 2, 64


def _qkv(hq: int, hkv: int, d: int, n: int, tq: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(hq, tq, d, generator=g),
        torch.randn(hkv, n, d, generator=g) + 0.3,
        torch.randn(hkv, n, d, generator=g),
    )


def _run(path: str, cfg: PolicyConfig, q, k, v, offset: int, chunk_rows: int, hkv: int):
    st_ = AttentionState(
        config=cfg,
        num_layers=1,
        num_kv_heads=hkv,
        chunk_elems=q.shape[0] * k.shape[1] * chunk_rows,
        recall_stride=4,
        total_positions=offset + q.shape[1],
        tail=40,
        sparse_path=path,
    )
    out = hybrid_attention(q, k, v, layer=0, scaling=q.shape[-1] ** -0.5, q_offset=offset, state=st_)
    return out, st_.stats[0]


@pytest.mark.parametrize("topk_per", ["head", "group"])
@pytest.mark.parametrize(
    ("hq", "hkv", "d", "n", "tq", "th", "kk"),
    [
        (6, 2, 64, 400, 400, (36, 38), 9),
        (6, 2, 64, 700, 1, (35, 37), 5),
        (6, 2, 64, 500, 120, (0, 38), 16),
        (8, 1, 128, 600, 150, (66,), 40),
        (4, 4, 64, 450, 200, (30, 34, 36, 64), 12),
        (16, 1, 64, 380, 100, (37,), 7),
    ],
)
def test_fused_equals_full_product(topk_per, hq, hkv, d, n, tq, th, kk):
    q, k, v = _qkv(hq, hkv, d, n, tq, seed=n + tq + kk)
    rot = np.stack([np.linalg.qr(np.random.default_rng(h).standard_normal((d, d)))[0] for h in range(hkv)])
    cfg = PolicyConfig(
        kind="longsight",
        window=40,
        sinks=5,
        k=kk,
        topk_per=topk_per,
        thresholds=np.array([th]),
        rotations=rot[None],
    )
    out_f, sf = _run("fused", cfg, q, k, v, n - tq, 53, hkv)
    out_t, stt = _run("full", cfg, q, k, v, n - tq, 53, hkv)
    torch.testing.assert_close(out_f, out_t, atol=1e-5, rtol=1e-5)
    for f in sf.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(sf, f), getattr(stt, f), err_msg=f)
    assert (tq == 1 or sf.recall_total > 0) and (sf.survivors < sf.considered).any()


def test_fused_equals_dense_without_filter():
    n = 300
    q, k, v = _qkv(HQ, HKV, D, n, n, seed=1)
    cfg = PolicyConfig(kind="longsight", window=32, sinks=4, k=n, thresholds=np.zeros((1, HKV), int))
    out, _ = _run("fused", cfg, q, k, v, 0, 70, HKV)
    torch.testing.assert_close(out, dense_reference(q, k, v, D**-0.5, 0), atol=1e-5, rtol=1e-5)


def test_auto_takes_fused_for_cpu_prefill_only(monkeypatch):
    """auto: the fused kernel without an observer; with one (decode records) the torch paths."""
    calls: list[str] = []
    orig = policies._chunk_fused

    def spy(*a, **kw):
        calls.append("fused")
        return orig(*a, **kw)

    monkeypatch.setattr(policies, "_chunk_fused", spy)
    q, k, v = _qkv(HQ, HKV, D, 300, 100, seed=3)
    cfg = PolicyConfig(kind="longsight", window=32, sinks=4, k=8, thresholds=np.full((1, HKV), 36))
    _run("auto", cfg, q, k, v, 200, 50, HKV)
    assert calls == ["fused", "fused"]
    st_ = AttentionState(config=cfg, num_layers=1, num_kv_heads=HKV, observer=lambda rec: None)
    hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=200, state=st_)
    assert calls == ["fused", "fused"]


@pytest.mark.parametrize("why", ["observer", "numpy backend", "no flash band"])
def test_fused_refuses_where_it_does_not_apply(why):
    q, k, v = _qkv(HQ, HKV, D, 200, 50, seed=5)
    cfg = PolicyConfig(
        kind="longsight",
        window=32,
        sinks=4,
        k=8,
        thresholds=np.full((1, HKV), 36),
        backend="numpy" if why == "numpy backend" else "numba",
    )
    st_ = AttentionState(
        config=cfg,
        num_layers=1,
        num_kv_heads=HKV,
        sparse_path="fused",
        observer=(lambda rec: None) if why == "observer" else None,
        flash_band=why != "no flash band",
    )
    with pytest.raises(CemsimError, match="fused"):
        hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=150, state=st_)


def test_fused_is_ignored_by_other_policies():
    """sparse_path concerns LongSight only: oracle top-k under "fused" is the oracle top-k of "auto"."""
    q, k, v = _qkv(HQ, HKV, D, 200, 50, seed=6)
    cfg = PolicyConfig(kind="oracle-topk", window=32, sinks=4, k=8)
    out_f, st_f = _run("fused", cfg, q, k, v, 150, 50, HKV)
    out_a, st_a = _run("auto", cfg, q, k, v, 150, 50, HKV)
    assert torch.equal(out_f, out_a) and np.array_equal(st_f.keys_read, st_a.keys_read)
