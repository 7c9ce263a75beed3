"""The survivor-gather path of LongSight (scores for SCF survivors only) against the full-product path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cemsim import kernels
from cemsim.attention.policies import (
    AttentionState,
    DecodeRecord,
    PolicyConfig,
    dense_reference,
    hybrid_attention,
    survivor_lists_from_mask,
)
from cemsim.attention.signs import pack_signs, pack_signs_torch
from cemsim.errors import CemsimError

HQ, HKV, D = 6, 2, 64


def _qkv(n: int, tq: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(HQ, tq, D, generator=g)
    k = torch.randn(HKV, n, D, generator=g) + 0.3
    v = torch.randn(HKV, n, D, generator=g)
    return q, k, v


def _run(path: str, cfg: PolicyConfig, q, k, v, offset: int, chunk_rows: int):
    recs: list[DecodeRecord] = []
    st = AttentionState(
        config=cfg,
        num_layers=1,
        num_kv_heads=HKV,
        chunk_elems=HQ * k.shape[1] * chunk_rows,
        recall_stride=4,
        total_positions=offset + q.shape[1],
        tail=40,
        sparse_path=path,
    )
    st.observer = recs.append
    out = hybrid_attention(q, k, v, layer=0, scaling=D**-0.5, q_offset=offset, state=st)
    return out, st, recs


@pytest.mark.parametrize("topk_per", ["head", "group"])
@pytest.mark.parametrize(
    ("n", "tq", "th", "kk"),
    [(400, 400, (36, 38), 9), (700, 1, (35, 37), 5), (600, 150, (33, 40), 40), (500, 120, (0, 38), 16)],
)
def test_gather_equals_full_product(topk_per, n, tq, th, kk):
    q, k, v = _qkv(n, tq, seed=n + tq + kk)
    rot = np.stack(
        [np.linalg.qr(np.random.default_rng(h + 7).standard_normal((D, D)))[0] for h in range(HKV)]
    )[None]
    cfg = PolicyConfig(
        kind="longsight",
        window=40,
        sinks=5,
        k=kk,
        topk_per=topk_per,
        thresholds=np.array([th]),
        rotations=rot,
    )
    out_g, st_g, rec_g = _run("gather", cfg, q, k, v, n - tq, chunk_rows=53)
    out_f, st_f, rec_f = _run("full", cfg, q, k, v, n - tq, chunk_rows=53)
    torch.testing.assert_close(out_g, out_f, atol=1e-5, rtol=1e-5)
    sg, sf = st_g.stats[0], st_f.stats[0]
    for f in sg.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(sg, f), getattr(sf, f), err_msg=f)
    assert (tq == 1 or sg.recall_total > 0) and (sg.survivors < sg.considered).any()
    assert len(rec_g) == len(rec_f) == tq * HKV
    for a, b in zip(rec_g, rec_f, strict=True):
        assert (a.context, a.considered, a.window, a.sinks) == (b.context, b.considered, b.window, b.sinks)
        np.testing.assert_array_equal(a.survivors, b.survivors)
        assert a.survivors.dtype == np.int32 and all(t.dtype == np.int32 for t in a.topk)
        for ta, tb in zip(a.topk, b.topk, strict=True):
            np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("path", ["gather", "full", "auto"])
def test_every_path_equals_dense_without_filter(path):
    n = 300
    q, k, v = _qkv(n, n, seed=1)
    cfg = PolicyConfig(kind="longsight", window=32, sinks=4, k=n, thresholds=np.zeros((1, HKV), int))
    out, _, _ = _run(path, cfg, q, k, v, 0, chunk_rows=70)
    torch.testing.assert_close(out, dense_reference(q, k, v, D**-0.5, 0), atol=1e-5, rtol=1e-5)


def test_auto_falls_back_when_survivors_are_dense():
    n = 300
    q, k, v = _qkv(n, n, seed=4)
    cfg = PolicyConfig(kind="longsight", window=32, sinks=4, k=5, thresholds=np.zeros((1, HKV), int))
    st = AttentionState(config=cfg, num_layers=1, num_kv_heads=HKV)
    assert st.gather_cap(n - 36) < n - 36  # T = 0: every key survives, more than the gather path takes
    auto, _, _ = _run("auto", cfg, q, k, v, 0, chunk_rows=70)
    full, _, _ = _run("full", cfg, q, k, v, 0, chunk_rows=70)
    assert torch.equal(auto, full)  # the same computation, not merely close
    with pytest.raises(CemsimError, match="sparse_path"):
        AttentionState(config=cfg, num_layers=1, num_kv_heads=HKV, sparse_path="fast")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_auto_splits_kv_heads_between_gather_and_full(backend, monkeypatch):
    """T = 0 on KV head 0 (every key survives: full product), T = 44 on head 1 (few: gather)."""
    from cemsim.attention import policies

    n, tq = 420, 150
    q, k, v = _qkv(n, tq, seed=11)
    cfg = PolicyConfig(
        kind="longsight", window=40, sinks=5, k=12, thresholds=np.array([[0, 44]]), backend=backend
    )
    calls: list[tuple[str, list[int]]] = []
    for name in ("_chunk_gather", "_chunk_full"):
        fn = getattr(policies, name)

        def spy(*a, _fn=fn, _name=name, **kw):
            calls.append((_name, kw["heads"].tolist()))
            return _fn(*a, **kw)

        monkeypatch.setattr(policies, name, spy)
    out_a, st_a, rec_a = _run("auto", cfg, q, k, v, n - tq, chunk_rows=50)
    assert ("_chunk_gather", [1]) in calls and ("_chunk_full", [0]) in calls
    out_f, st_f, rec_f = _run("full", cfg, q, k, v, n - tq, chunk_rows=50)
    torch.testing.assert_close(out_a, out_f, atol=1e-5, rtol=1e-5)
    for f in st_a.stats[0].__dataclass_fields__:
        np.testing.assert_array_equal(getattr(st_a.stats[0], f), getattr(st_f.stats[0], f), err_msg=f)
    key = lambda r: (r.context, r.kv_head)  # noqa: E731 - records of split heads arrive in another order
    for a, b in zip(sorted(rec_a, key=key), sorted(rec_f, key=key), strict=True):
        assert (a.kv_head, a.context, a.considered) == (b.kv_head, b.context, b.considered)
        np.testing.assert_array_equal(a.survivors, b.survivors)
        for ta, tb in zip(a.topk, b.topk, strict=True):
            np.testing.assert_array_equal(ta, tb)


@pytest.mark.parametrize("w", [1, 2])
def test_survivor_lists_backends_agree(w):
    rng = np.random.default_rng(w)
    h, r, g, n = 3, 17, 3, 301
    q = rng.integers(0, 2**63, size=(h, r, g, w), dtype=np.uint64)
    k = rng.integers(0, 2**63, size=(h, n, w), dtype=np.uint64)
    d = 64 * w
    th = np.array([d // 2 + 3, d // 2 + 5, 0])
    limits = rng.integers(0, n - 6, size=r)
    got = {
        b: kernels.scf_survivor_lists(q, k, d, th, limits, start=6, cap=n, backend=b)
        for b in ("numba", "numpy")
    }
    for h_i in range(h):
        mask = kernels.scf_filter_rows(q[h_i], k[h_i, 6:], d, int(th[h_i]), backend="numpy").survivors
        mask &= np.arange(n - 6)[None, :] < limits[:, None]
        counts, idx = survivor_lists_from_mask(torch.from_numpy(mask)[None])
        for res in got.values():
            np.testing.assert_array_equal(res.counts[h_i], counts[0].numpy())
            for r_i in range(r):
                c = int(counts[0, r_i])
                np.testing.assert_array_equal(res.idx[h_i, r_i, :c], idx[0, r_i, :c].numpy())
                np.testing.assert_array_equal(res.idx[h_i, r_i, :c], np.nonzero(mask[r_i])[0])
    small = kernels.scf_survivor_lists(q, k, d, th, limits, start=6, cap=4, backend="numba")
    assert small.overflow and (small.counts == got["numba"].counts).all()


def test_sign_packing_on_torch_and_incremental_key_signs():
    x = torch.randn(3, 45, 128)
    x[0, 0, :7] = 0.0  # zero counts as positive
    np.testing.assert_array_equal(pack_signs_torch(x).numpy().view(np.uint64), pack_signs(x))
    rot = np.stack([np.linalg.qr(np.random.default_rng(h).standard_normal((64, 64)))[0] for h in range(2)])
    k = torch.randn(2, 50, 64)
    st = AttentionState(config=PolicyConfig(), num_layers=1, num_kv_heads=2)
    st.key_signs(0, k[:, :30], rot)
    grown = st.key_signs(0, k, rot)  # packs only keys 30..49
    full = pack_signs(torch.bmm(k, torch.from_numpy(rot).float()))
    np.testing.assert_array_equal(grown, full)


def test_dense_reference_causal_fast_path_equals_mask():
    q, k, v = _qkv(70, 70, seed=2)
    fast = dense_reference(q, k, v, 0.1, 0)
    pos = torch.arange(70)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=pos[None, :] <= pos[:, None], scale=0.1, enable_gqa=True
    )[0]
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
def test_device_resident_path_equals_cpu_path():
    """Tensors on the GPU, SCF by the CuPy kernel on device signs, one head gathered and one full: the same
    attention, stats and decode records as the Numba/CPU path."""
    if not kernels.cupy_available() or not torch.cuda.is_available():
        pytest.skip("no CUDA device / CuPy")
    n, tq = 420, 150
    q, k, v = _qkv(n, tq, seed=11)
    runs = {}
    for backend, dev in (("numba", "cpu"), ("cupy", "cuda")):
        cfg = PolicyConfig(
            kind="longsight", window=40, sinks=5, k=12, thresholds=np.array([[0, 44]]), backend=backend
        )
        runs[dev] = _run("auto", cfg, q.to(dev), k.to(dev), v.to(dev), n - tq, chunk_rows=50)
    (out_c, st_c, rec_c), (out_g, st_g, rec_g) = runs["cpu"], runs["cuda"]
    assert out_g.device.type == "cuda"
    torch.testing.assert_close(out_g.cpu(), out_c, atol=1e-4, rtol=1e-4)
    for f in ("rows", "considered", "survivors", "dense", "meta_bytes"):
        np.testing.assert_array_equal(getattr(st_g.stats[0], f), getattr(st_c.stats[0], f), err_msg=f)
    key = lambda r: (r.context, r.kv_head)  # noqa: E731
    for a, b in zip(sorted(rec_g, key=key), sorted(rec_c, key=key), strict=True):
        np.testing.assert_array_equal(a.survivors, b.survivors)
