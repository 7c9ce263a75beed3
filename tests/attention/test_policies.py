"""Hybrid attention against brute-force references, on random tensors (no model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cemsim.attention.eval import kv_load_reduction
from cemsim.attention.policies import (
    AttentionState,
    DecodeRecord,
    PolicyConfig,
    dense_reference,
    hybrid_attention,
)
from cemsim.attention.signs import matches_reference
from cemsim.errors import CemsimError

HQ, HKV, D = 6, 2, 64
G = HQ // HKV


def _qkv(n: int, tq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(HQ, tq, D, generator=g)
    k = torch.randn(HKV, n, D, generator=g) + 0.3  # an offset makes sign agreement informative
    v = torch.randn(HKV, n, D, generator=g)
    return q, k, v


def _state(cfg: PolicyConfig, chunk_elems: int = 60_000) -> AttentionState:
    return AttentionState(
        config=cfg, num_layers=1, num_kv_heads=HKV, chunk_elems=chunk_elems, recall_stride=3
    )


def _run(cfg, q, k, v, offset, **kw):
    st = _state(cfg, **kw)
    return hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=offset, state=st), st


@pytest.mark.parametrize("kind", ["longsight", "oracle-topk", "quest"])
@pytest.mark.parametrize(("n", "tq"), [(300, 300), (300, 1), (257, 40)])
def test_no_filter_and_large_k_equals_dense(kind, n, tq):
    q, k, v = _qkv(n, tq)
    rot = np.stack([np.linalg.qr(np.random.default_rng(h).standard_normal((D, D)))[0] for h in range(HKV)])[
        None
    ]
    cfg = PolicyConfig(kind=kind, window=32, sinks=4, k=n, thresholds=np.zeros((1, HKV), int), rotations=rot)
    out, st = _run(cfg, q, k, v, n - tq)
    ref = dense_reference(q, k, v, D**-0.5, n - tq)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if kind != "quest" and tq > 3:  # recall is sampled every 3rd position here
        assert st.stats[0].recall_total > 0
        assert st.stats[0].recall_hits == st.stats[0].recall_total  # everything chosen: recall 1


def _brute_force(q, k, v, offset, w, s, kk, thresholds):
    """Per query head and position: dense window + sinks, plus the exact top-k among SCF survivors."""
    hq, tq, d = q.shape
    out = torch.zeros(hq, tq, d)
    m = matches_reference(q.numpy(), k.numpy().repeat(G, axis=0))  # [hq, tq, n] (head h vs its KV head)
    for i in range(tq):
        p = offset + i
        for h in range(hq):
            kv = h // G
            grp = slice(kv * G, (kv + 1) * G)
            keep = [j for j in range(p + 1) if j > p - w or j < s]
            region = [j for j in range(s, p - w + 1) if m[grp, i, j].max() >= thresholds[kv]]
            scores = (k[kv] @ q[h, i]) * d**-0.5
            if region:
                rs = scores[region]
                top = torch.topk(rs, min(kk, len(region))).indices
                keep += [region[t] for t in top.tolist()]
            sel = torch.tensor(sorted(keep))
            pr = torch.softmax(scores[sel], 0)
            out[h, i] = pr @ v[kv][sel]
    return out


@pytest.mark.parametrize("topk_per", ["head"])
def test_longsight_matches_brute_force(topk_per):
    n, tq = 160, 48
    q, k, v = _qkv(n, tq, seed=3)
    th = [36, 40]
    cfg = PolicyConfig(
        kind="longsight", window=24, sinks=3, k=7, thresholds=np.array([th]), topk_per=topk_per
    )
    out, st = _run(cfg, q, k, v, n - tq, chunk_elems=HQ * n * 10)
    ref = _brute_force(q, k, v, n - tq, 24, 3, 7, th)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    s = st.stats[0]
    assert (s.survivors < s.considered).all() and (s.survivors > 0).all()  # the filter did something


def test_group_topk_shares_keys_and_window_policy():
    n = 200
    q, k, v = _qkv(n, 1, seed=5)
    recs: list[DecodeRecord] = []
    cfg = PolicyConfig(
        kind="longsight", window=16, sinks=2, k=5, topk_per="group", thresholds=np.array([[30, 30]])
    )
    st = _state(cfg)
    st.observer = recs.append
    hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=n - 1, state=st)
    assert len(recs) == HKV
    for r in recs:
        assert all(np.array_equal(t, r.topk[0]) for t in r.topk)  # one set per KV group
        assert len(r.topk[0]) == 5 and set(r.topk[0]) <= set(r.survivors)
        # n keys (the query's own included); sparse region [sinks, n - window) = [2, 184): 182 keys
        assert r.context == n and r.considered == n - 16 - 2 == 182
        assert r.window == 16 and r.sinks == 2
    # Window + sinks only: equals dense attention restricted to those keys.
    win, _ = _run(PolicyConfig(kind="window", window=16, sinks=2), q, k, v, n - 1)
    sel = torch.tensor(list(range(2)) + list(range(n - 16, n)))
    ref = dense_reference(q, k[:, sel], v[:, sel], D**-0.5, len(sel) - 1)
    torch.testing.assert_close(win, ref, atol=1e-5, rtol=1e-5)


def test_decode_records_match_the_kernel_definition():
    n = 400
    q, k, v = _qkv(n, 1, seed=9)
    recs: list[DecodeRecord] = []
    cfg = PolicyConfig(kind="longsight", window=64, sinks=4, k=10, thresholds=np.array([[38, 41]]))
    st = _state(cfg)
    st.observer = recs.append
    hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=n - 1, state=st)
    for r in recs:
        grp = slice(r.kv_head * G, (r.kv_head + 1) * G)
        mm = matches_reference(q.numpy()[grp, 0], k.numpy()[r.kv_head])  # [G, n]
        expect = np.nonzero(mm.max(0)[4 : n - 64] >= [38, 41][r.kv_head])[0] + 4
        np.testing.assert_array_equal(r.survivors, expect)
        assert r.considered == n - 64 - 4
        for t in r.topk:
            assert len(t) == min(10, len(expect)) and set(t) <= set(expect)
    assert len(recs) == HKV


def test_kv_load_reduction_formula():
    fr = np.array([[10.0, 20.0], [5.0, np.inf]])
    n, w, k = 2024, 1024, 50
    # layer 0: keys = 1000/10 = 100, values = 50; layer 1: keys = 200, values = 50
    assert kv_load_reduction(fr, n, w, k) == pytest.approx(4000 / (150 + 250))
    assert kv_load_reduction(fr, 1000, 1024, k) is None


def test_bad_policy_config():
    with pytest.raises(CemsimError, match="unknown policy"):
        PolicyConfig(kind="magic")  # type: ignore[arg-type]
    with pytest.raises(CemsimError, match="window"):
        PolicyConfig(window=0)


def test_auto_backend_follows_the_model_device(monkeypatch):
    """A CPU model filters with Numba even where CuPy sees a GPU; a CUDA model takes CuPy."""
    from types import SimpleNamespace

    from cemsim import kernels
    from cemsim.attention.runner import make_policy

    monkeypatch.setattr(kernels, "cupy_available", lambda: True)
    lm = SimpleNamespace(num_layers=2, num_kv_heads=2, head_dim=64, device="cpu")
    cfg, _ = make_policy(lm, None, kind="longsight", context=4096, threshold=30, itq=False)
    assert cfg.backend == "numba"
    cfg, _ = make_policy(
        SimpleNamespace(**{**vars(lm), "device": "cuda"}),
        None,
        kind="longsight",
        context=4096,
        threshold=30,
        itq=False,
    )
    assert cfg.backend == "cupy"


def test_a_given_itq_file_is_used_as_is():
    """`--itq-file` (eval, tune): the given rotations, neither the cached ones nor a fresh training."""
    from types import SimpleNamespace

    from cemsim.attention.itq import ItqRotations
    from cemsim.attention.runner import make_policy

    path = Path(__file__).parents[2] / "traces" / "itq" / "gemma3-270m-h200.npz"
    lm = SimpleNamespace(num_layers=18, num_kv_heads=1, head_dim=256, device="cpu")
    cfg, info = make_policy(lm, None, kind="longsight", context=4096, threshold=130, itq=True, itq_file=path)
    want = ItqRotations.load(path, layers=18, kv_heads=1, head_dim=256).rotations
    assert info["itq_file"] == str(path) and info["itq_trained_now"] is False
    np.testing.assert_array_equal(cfg.rotations, want)
