"""Sparse-attention policies over one layer's post-RoPE queries, keys and values.

Every policy shares the hybrid shape of LongSight: a *dense* part (the last W positions up to and including
the query, plus the first S sink positions) and a *sparse* part over the rest of the causal context
(positions S .. p - W for a query at position p). Policies differ only in what they pick from the sparse part:

- ``dense``        everything (W and S are ignored);
- ``window``       nothing: sliding window + sinks (StreamingLLM);
- ``oracle-topk``  the exact top-k scores, no filter;
- ``quest``        pages of 16 keys ranked by the Quest bound sum_d max(q_d min_d, q_d max_d); top ceil(k/16)
                   pages, every key of a chosen page;
- ``longsight``    SCF: keys whose sign agreement with any query of the KV group reaches the (layer, KV head)
                   threshold survive (signs after the ITQ rotation); exact top-k over survivors.

One softmax covers the dense scores and the selected sparse scores. ``k`` is per query head as published;
``topk_per="group"`` instead picks one set of k keys per KV group (by the group's largest score).

:func:`hybrid_attention` works for any block of queries at absolute positions ``q_offset .. q_offset + Tq``
against keys ``0 .. N``, so the same code serves prefill evaluation (every position applies the rule
causally, in chunks of queries so 8K tokens fit in memory) and decode over a KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from cemsim import kernels
from cemsim.attention import fused
from cemsim.attention.signs import pack_signs, pack_signs_torch
from cemsim.errors import CemsimError

PolicyKind = Literal["dense", "longsight", "window", "oracle-topk", "quest"]
POLICIES: tuple[str, ...] = ("dense", "longsight", "window", "oracle-topk", "quest")
PAGE = 16  # Quest page size in tokens


def published_k(context: int) -> int:
    """LongSight's top-k schedule: 256 up to 32K tokens, 512 to 64K, 1024 beyond (hardware maximum)."""
    if context <= 32 * 1024:
        return 256
    if context <= 64 * 1024:
        return 512
    return 1024


@dataclass
class PolicyConfig:
    """What a policy does; thresholds ``[layers][kv_heads]`` (keep when matches >= T) and rotations
    ``[layers, kv_heads, D, D]`` apply to ``longsight`` only."""

    kind: PolicyKind = "longsight"
    window: int = 1024
    sinks: int = 16
    k: int = 256
    topk_per: Literal["head", "group"] = "head"
    thresholds: np.ndarray | None = None
    rotations: np.ndarray | None = None
    backend: str = "auto"
    bytes_per_element: int = 2  # KV-cache element size used for byte accounting (BF16, as in the paper)

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise CemsimError(f"unknown policy {self.kind!r}; valid: {', '.join(POLICIES)}", where="--policy")
        if self.window < 1 or self.sinks < 0 or self.k < 0:
            raise CemsimError(
                f"need window >= 1, sinks >= 0, k >= 0; got W={self.window} S={self.sinks} k={self.k}"
            )
        if self.topk_per not in ("head", "group"):
            raise CemsimError(f"topk_per must be 'head' or 'group', got {self.topk_per!r}")
        self.backend = kernels.resolve_backend(self.backend)

    def threshold(self, layer: int, kv_head: int) -> int:
        return 0 if self.thresholds is None else int(self.thresholds[layer][kv_head])


@dataclass
class LayerStats:
    """Running sums for one layer, per KV head (arrays of length Hkv). ``considered`` counts sparse-region
    keys per (query position, KV head); ``survivors`` those left by the filter (LongSight) or eligible
    (others); ``keys_read``/``values_read`` full vectors fetched for the sparse part; ``dense`` keys in
    window + sinks; ``meta_bytes`` sign bits (LongSight) or page bounds (Quest). ``tail_*`` are the same
    over the last ``tail`` query positions only (what one decode step at the full context costs)."""

    rows: np.ndarray
    considered: np.ndarray
    survivors: np.ndarray
    keys_read: np.ndarray
    values_read: np.ndarray
    dense: np.ndarray
    meta_bytes: np.ndarray
    tail_rows: np.ndarray
    tail_keys_read: np.ndarray
    tail_values_read: np.ndarray
    tail_dense: np.ndarray
    tail_meta_bytes: np.ndarray
    recall_hits: float = 0.0
    recall_total: float = 0.0

    @classmethod
    def zeros(cls, hkv: int) -> LayerStats:
        z = {f: np.zeros(hkv) for f in cls.__dataclass_fields__ if f not in ("recall_hits", "recall_total")}
        return cls(**z)


@dataclass
class DecodeRecord:
    """What one decode step did in one (layer, KV head); positions are absolute key indices (int32)."""

    step: int
    layer: int
    kv_head: int
    context: int  # keys in the cache, the current token included
    considered: int  # keys in the sparse region the filter looked at
    survivors: np.ndarray  # positions that passed SCF (LongSight) or were eligible (other policies)
    topk: list[np.ndarray]  # per query head of the group: positions chosen for exact attention
    window: int  # dense window keys (current token included)
    sinks: int  # sink keys attended densely


@dataclass
class AttentionState:
    """Per-run state passed to the model as the ``cemsim_state`` keyword; no globals.

    ``sparse_path`` picks how LongSight scores its sparse region: ``"fused"`` runs filter, survivor scores,
    top-k and softmax in one Numba kernel per (KV head, row) (:mod:`cemsim.attention.fused`; CPU prefill
    without a decode observer), ``"gather"`` computes dot products for SCF survivors only (padded survivor
    lists), ``"full"`` the whole region's QK^T then masks; ``"auto"`` takes fused where it applies, else
    decides per KV head and query chunk: gather unless some row of the head has more than
    ``gather_cap(region)`` survivors (low thresholds), else the full product. All give the same outputs (up
    to float rounding) and stats."""

    config: PolicyConfig
    num_layers: int
    num_kv_heads: int
    chunk_elems: int = 1 << 25  # score-matrix elements per query chunk (128 MB of fp32)
    max_chunk_rows: int = 256  # the dense band costs (rows + W) keys per row: small chunks waste less
    recall_stride: int = 16  # every n-th query position also computes the oracle top-k for recall
    tail: int = 256
    total_positions: int | None = None  # prefill length; positions >= total - tail count as tail
    observer: object | None = None  # callable(DecodeRecord) during decode steps
    on_layer: object | None = None  # callable(layer) after each layer (progress displays)
    step: int = 0
    capture: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # layer -> (q, k) when capturing
    sparse_path: Literal["auto", "fused", "gather", "full"] = "auto"
    flash_band: bool = True  # window + sinks through torch's fused CPU attention kernel where it exists
    gather_fraction: float = 0.2  # auto: gather while every row's survivors <= this share of the region
    stats: list[LayerStats] = field(default_factory=list)
    # layer -> packed key signs [Hkv, n, W]: numpy uint64 on the host, or torch int64 on k's CUDA device
    _signs: dict[int, np.ndarray | torch.Tensor] = field(default_factory=dict)
    _scratch: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sparse_path not in ("auto", "fused", "gather", "full"):
            raise CemsimError(f"sparse_path must be auto, fused, gather or full, got {self.sparse_path!r}")
        self.reset()

    def reset(self) -> None:
        self.stats = [LayerStats.zeros(self.num_kv_heads) for _ in range(self.num_layers)]
        self._signs = {}
        self.step = 0

    def scratch(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A reused fp32 buffer viewed as ``shape`` (contents undefined). The full path's score-sized
        matrices (64 MB per chunk at 8K) would otherwise fault in fresh pages every chunk, which on CPU costs
        as much as the matmul that fills them."""
        n = math.prod(shape)
        buf = self._scratch.get(name)
        if buf is None or buf.numel() < n or buf.device != torch.device(device):
            grown = 0 if buf is None or buf.device != torch.device(device) else buf.numel() * 3 // 2
            buf = self._scratch[name] = torch.empty(max(n, grown), dtype=torch.float32, device=device)
        return buf[:n].view(shape)

    def gather_cap(self, region: int) -> int:
        """Most survivors per row the gather path takes before ``auto`` gives a head the full product."""
        if self.sparse_path == "gather":
            return max(1, region)
        return max(1, self.config.k, int(region * self.gather_fraction))

    def key_signs(self, layer: int, k: torch.Tensor, rot: np.ndarray | None, on_device: bool = False):
        """Packed signs of all N keys ``k [Hkv, N, D]`` of a layer after rotation, extending the cached
        prefix (keys never change): only new keys are rotated and packed, so a decode step costs O(1) keys,
        not O(context). ``on_device``: torch int64 signs on k's device (CUDA), else numpy uint64."""
        n = k.shape[1]
        have = self._signs.get(layer)
        hkv = k.shape[0]
        if have is not None and have.shape[1] <= n:
            if have.shape[1] == n:
                return have
            new = _pack(_rotate(k[:, have.shape[1] :], rot, hkv, 1), on_device)
            out = torch.cat([have, new], dim=1) if on_device else np.concatenate([have, new], axis=1)
        else:
            out = _pack(_rotate(k, rot, hkv, 1), on_device)
        self._signs[layer] = out
        return out


def _pack(x: torch.Tensor, on_device: bool):
    return pack_signs_torch(x) if on_device else pack_signs(x)


def _rotate(x: torch.Tensor, rot: np.ndarray | None, hkv: int, group: int) -> torch.Tensor:
    """x [H, T, D] with H = hkv * group heads; each KV head's rotation applies to its group."""
    if rot is None:
        return x
    r = torch.from_numpy(rot).to(device=x.device, dtype=x.dtype)  # [Hkv, D, D]
    if group > 1:
        r = r.repeat_interleave(group, dim=0)
    return torch.bmm(x, r)


def dense_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, q_offset: int
) -> torch.Tensor:
    """Exact causal attention for queries at ``q_offset..`` (SDPA); q [Hq, Tq, D], k/v [Hkv, N, D]."""
    tq, n = q.shape[1], k.shape[1]
    mask = None
    causal = (
        tq > 1 and tq == n
    )  # the whole sequence: SDPA's own causal mode (skips blocks above the diagonal)
    if tq > 1 and not causal:
        pos = torch.arange(q_offset, q_offset + tq, device=q.device)[:, None]
        mask = torch.arange(n, device=q.device)[None, :] <= pos
    return torch.nn.functional.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=mask, is_causal=causal, scale=scaling, enable_gqa=True
    )[0]


def _on_device(q: torch.Tensor, cfg: PolicyConfig) -> bool:
    """SCF runs on the GPU (CuPy kernel, signs as torch tensors) when the tensors are on CUDA and the
    backend is cupy; otherwise signs and filter stay on the host (Numba / NumPy), as on CPU."""
    return q.device.type == "cuda" and cfg.backend == "cupy"


def hybrid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    layer: int,
    scaling: float,
    q_offset: int,
    state: AttentionState,
) -> torch.Tensor:
    """Attention of queries ``q [Hq, Tq, D]`` at positions ``q_offset + i`` over ``k, v [Hkv, N, D]`` under
    ``state.config``; returns ``[Hq, Tq, D]`` in fp32 on q's device and adds to ``state.stats[layer]``."""
    cfg = state.config
    if cfg.kind == "dense":
        _count_dense(q, k, q_offset, state, layer)
        return dense_reference(q, k, v, scaling, q_offset)
    hq, tq, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    rot = None if cfg.rotations is None else cfg.rotations[layer]
    ksig = qsig_all = None
    if cfg.kind == "longsight":
        dev = _on_device(q, cfg)
        ksig = state.key_signs(layer, k, rot, dev)
        qsig_all = _pack(_rotate(q, rot, hkv, group), dev)
        if not dev:  # the fused kernel reads K and V rows in place: one copy per layer, not one per chunk
            k, v = k.contiguous(), v.contiguous()
    chunk = max(1, min(tq, state.chunk_elems // max(1, hq * n), state.max_chunk_rows))
    out = torch.empty(hq, tq, d, dtype=torch.float32, device=q.device)
    for a in range(0, tq, chunk):
        b = min(tq, a + chunk)
        qs = None if qsig_all is None else qsig_all[:, a:b]
        out[:, a:b] = _chunk(q[:, a:b], k, v, qs, ksig, layer, scaling, q_offset + a, state)
    return out


def _count_dense(q: torch.Tensor, k: torch.Tensor, q_offset: int, state: AttentionState, layer: int) -> None:
    tq, n = q.shape[1], k.shape[1]
    pos = np.arange(q_offset, q_offset + tq)
    st = state.stats[layer]
    total = float((pos + 1).sum())
    st.rows += tq
    st.dense += total
    tail = pos >= _tail_start(state, n, tq, q_offset)
    st.tail_rows += tail.sum()
    st.tail_dense += float((pos[tail] + 1).sum())


def _tail_start(state: AttentionState, n: int, tq: int, q_offset: int) -> int:
    total = state.total_positions or (q_offset + tq)
    return total - state.tail


def _chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qsig,
    ksig,
    layer: int,
    scaling: float,
    p0: int,
    state: AttentionState,
) -> torch.Tensor:
    cfg = state.config
    dev = q.device
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    w, s_n = cfg.window, cfg.sinks
    p1 = p0 + c  # exclusive: the chunk's queries see keys [0, p1)
    pos_np = np.arange(p0, p1)
    pos = torch.arange(p0, p1, device=dev)
    # Dense keys: sinks [0, S) and the band [max(S, p0 - W + 1), p1).
    band0 = max(min(s_n, p1), p0 - w + 1)
    dense_idx = torch.cat(
        [torch.arange(min(s_n, p1), device=dev), torch.arange(max(band0, 0), p1, device=dev)]
    )
    jd = dense_idx[None, :]
    dense_mask = (jd <= pos[:, None]) & ((jd > pos[:, None] - w) | (jd < s_n))  # [c, nd]
    # Sparse region [S, e) with e = p1 - W: row p may use keys S <= j <= p - W.
    e = p1 - w
    st = state.stats[layer]
    tail_mask = pos_np >= _tail_start(state, k.shape[1], 0, p1)
    # Keys per row in window + sinks (what dense_mask holds), and in the sparse region.
    n_dense = (np.minimum(w, pos_np + 1) + np.clip(np.minimum(s_n, pos_np - w + 1), 0, None)).astype(
        np.float64
    )
    region_count = np.clip(pos_np - w + 1 - s_n, 0, None).astype(np.float64)
    st.rows += c
    st.dense += n_dense.sum()
    st.tail_rows += tail_mask.sum()
    st.tail_dense += n_dense[tail_mask].sum()
    band = _band_flash(q, k, v, dense_idx, dense_mask, scaling) if state.flash_band else None
    if band is None:
        band = _band_scores(q, k, dense_idx, dense_mask, scaling)
    if e <= s_n or cfg.kind == "window":
        if e > s_n:
            st.considered += region_count.sum()
        if isinstance(band, tuple):
            return band[0].reshape(hq, c, d)
        _, out, z = _merge_band(band, v, dense_idx, torch.full(band.shape[:3], float("-inf"), device=dev))
        return (out / z[..., None]).reshape(hq, c, d)
    r = e - s_n
    kk = min(cfg.k, r)
    recall_np = np.nonzero((pos_np % state.recall_stride == 0) & (region_count > 0))[0]
    qs_sc = q * scaling  # sparse scores from pre-scaled queries: one pass over [Hq, c, D], not over scores
    args = (q, qs_sc, k, v, band, dense_idx, region_count, recall_np, tail_mask, pos_np, layer, kk, state)
    every = np.arange(hkv)
    if cfg.kind == "quest":
        return _chunk_quest(*args)
    if _fused_applies(state, q, band, ksig):
        return _chunk_fused(*args, qsig, ksig)
    if cfg.kind != "longsight" or state.sparse_path == "full":
        return _chunk_full(*args, qsig, ksig, heads=every)
    split = _survivor_lists(qsig, ksig, region_count, layer, s_n, d, group, state.gather_cap(r), cfg, dev)
    # Per KV head: heads whose survivors are sparse take the gather path, the others the full product. A
    # path that takes every head gets the tensors whole (no copies of K and V).
    out = torch.empty(hq, c, d, dtype=torch.float32, device=dev)
    for heads, gather in ((split.gather, True), (split.full, False)):
        if not len(heads):
            continue
        if len(heads) == hkv:
            sub, qs_h, ks_h, rs = args, qsig, ksig, None
        else:
            rows = (heads[:, None] * group + np.arange(group)).ravel()
            rs, hs = torch.from_numpy(rows).to(dev), torch.from_numpy(heads).to(dev)
            sub_band = (band[0][hs], band[1][hs]) if isinstance(band, tuple) else band[hs]
            sub = (q[rs], qs_sc[rs], k[hs], v[hs], sub_band, *args[5:])
            qs_h, ks_h = (qsig[rows], ksig[heads]) if isinstance(ksig, np.ndarray) else (qsig[rs], ksig[hs])
        if gather:
            res = _chunk_gather(*sub, (split.counts, split.idx), heads=heads)
        else:
            res = _chunk_full(*sub, qs_h, ks_h, heads=heads, mask=split.full_mask)
        if rs is None:
            return res
        out[rs] = res
    return out


def _fused_applies(state: AttentionState, q: torch.Tensor, band, ksig) -> bool:
    """The fused Numba kernel serves LongSight prefill on CPU (fp32, Numba filter, flash band, no per-step
    records); ``sparse_path="fused"`` demands it, ``auto`` takes it wherever it applies."""
    cfg = state.config
    if cfg.kind != "longsight" or state.sparse_path not in ("auto", "fused"):
        return False  # sparse_path concerns LongSight only, as for gather and full
    ok = (
        cfg.backend == "numba"
        and isinstance(ksig, np.ndarray)
        and isinstance(band, tuple)
        and q.dtype == torch.float32
        and state.observer is None
    )
    if state.sparse_path == "fused" and not ok:
        raise CemsimError(
            "sparse_path='fused' needs LongSight on CPU in fp32 with the numba backend, the flash band and no "
            "decode observer; use 'auto' to fall back to the torch paths elsewhere"
        )
    return ok


def _chunk_fused(
    q, qs_sc, k, v, band, dense_idx, region_count, recall_np, tail_mask, pos_np, layer, kk, state, qsig, ksig
):
    """The sparse region by :func:`cemsim.attention.fused.sparse_rows`: filter, survivor scores, top-k and
    the merged softmax in one pass per (KV head, row), with the same stats as the torch paths."""
    cfg = state.config
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    th = np.array([cfg.threshold(layer, h) for h in range(hkv)], dtype=np.int64)
    s_n, r = cfg.sinks, int(region_count.max())
    rows = torch.from_numpy(recall_np)
    nr = len(recall_np)
    q_rec = qs_sc[:, rows].view(hkv, group, nr, d).transpose(1, 2).reshape(hkv, nr * group, d)
    recall_scores = torch.bmm(q_rec, k[:, s_n : s_n + r].transpose(1, 2)).view(
        hkv, nr, group, r
    )  # recall only
    o_band, lse = band
    out, counts, union, hits, totals = fused.sparse_rows(
        qsig.reshape(hkv, group, c, -1),
        ksig,
        d,
        th,
        s_n,
        region_count.astype(np.int64),
        qs_sc.view(hkv, group, c, d).numpy(),
        k.numpy(),
        v.numpy(),
        kk,
        cfg.topk_per == "group",
        o_band.numpy(),
        lse.numpy(),
        recall_np,
        recall_scores.numpy(),
    )
    surv = counts.astype(np.float64)
    meta = np.full(hkv, region_count.sum() * d / 8)  # the PFUs read every considered key's sign bits
    st = state.stats[layer]
    _account(st, np.arange(hkv), tail_mask, region_count, surv, surv, union.astype(np.float64), meta, c)
    st.recall_hits += float(hits.sum())
    st.recall_total += float(totals.sum())
    return torch.from_numpy(out).reshape(hq, c, d)


@dataclass
class SurvivorSplit:
    """SCF survivors of one query chunk, split by KV head: ``gather`` heads (every row within the gather
    cap) as padded lists ``counts [ng, c]`` and ``idx [ng, c, M]`` (relative to S, 0 past a row's count);
    ``full`` heads (some row over the cap), with their mask ``[nf, c, r]`` where the backend made one."""

    gather: np.ndarray
    counts: np.ndarray
    idx: torch.Tensor
    full: np.ndarray
    full_mask: torch.Tensor | None


def _survivor_lists(qsig, ksig, region_count, layer, s_n, d, group, cap, cfg, dev) -> SurvivorSplit:
    """SCF survivors of one query chunk for every KV head, as lists for heads whose rows all have at most
    ``cap`` survivors and as a mask (where the backend made one) for the rest."""
    hkv = ksig.shape[0]
    c = qsig.shape[1]
    th = np.array([cfg.threshold(layer, h) for h in range(hkv)], dtype=np.int64)
    limits = region_count.astype(np.int64)
    if cfg.backend == "numba" and not isinstance(ksig, torch.Tensor):
        qs = np.ascontiguousarray(qsig.reshape(hkv, group, c, -1).transpose(0, 2, 1, 3))
        res = kernels.scf_survivor_lists(qs, ksig, d, th, limits, start=s_n, cap=cap, backend="numba")
        over = res.counts.max(axis=1, initial=0) > cap  # counts are complete even where lists were cut
        g = np.nonzero(~over)[0]
        counts = res.counts[g]
        m = max(1, int(counts.max(initial=0)))
        idx = res.idx[g, :, :m].astype(np.int64)
        idx[np.arange(m)[None, None, :] >= counts[..., None]] = 0  # slots past a row's count: 0
        return SurvivorSplit(g, counts, torch.from_numpy(idx).to(dev), np.nonzero(over)[0], None)
    # Other backends (NumPy reference, CuPy on the host or on the GPU): the survivor mask, then lists.
    mask = _survivor_mask(qsig, ksig, region_count, layer, s_n, d, group, cfg, dev, np.arange(hkv))
    counts = _count(mask)
    over = counts.amax(-1).cpu().numpy() > cap
    g, f = np.nonzero(~over)[0], np.nonzero(over)[0]
    gt, ft = torch.from_numpy(g).to(dev), torch.from_numpy(f).to(dev)
    return SurvivorSplit(
        g, counts[gt].cpu().numpy(), survivor_lists_from_mask(mask[gt], counts[gt])[1], f, mask[ft]
    )


def _count(mask: torch.Tensor) -> torch.Tensor:
    """True entries along the last axis of a bool tensor, as int32: summed as bytes, 7x faster on CPU than
    torch's bool sum (which widens every element to int64)."""
    return mask.contiguous().view(torch.uint8).sum(-1, dtype=torch.int32)


def survivor_lists_from_mask(
    mask: torch.Tensor, counts: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded survivor lists from a mask ``[H, R, N]`` (on any device): counts ``[H, R]`` and ascending
    indices ``[H, R, M]`` (M = max(1, max count); slots past a row's count hold 0)."""
    h_n, r_n, _ = mask.shape
    if counts is None:
        counts = _count(mask)
    m = max(1, int(counts.max())) if counts.numel() else 1
    hh, rr, jj = torch.nonzero(mask, as_tuple=True)  # row-major: ascending j within each (h, r)
    flat = counts.reshape(-1)
    first = flat.cumsum(0) - flat  # where each (h, r)'s survivors start in the nonzero list
    slot = torch.arange(jj.numel(), device=mask.device) - first[hh * r_n + rr]
    idx = torch.zeros(h_n, r_n, m, dtype=torch.long, device=mask.device)
    idx[hh, rr, slot] = jj
    return counts, idx


def _survivor_mask(qsig, ksig, region_count, layer, s_n, d, group, cfg, dev, heads) -> torch.Tensor:
    """SCF survivors of one chunk inside each row's region: bool ``[hkv, c, r]`` on dev, for the KV heads
    ``heads`` (global indices, for their thresholds) whose signs ``ksig``/``qsig`` hold."""
    hkv = ksig.shape[0]
    e_rel = int(region_count.max(initial=0))  # the chunk's region width: its last row sees all of it
    rows = []
    for h in range(hkv):
        t = cfg.threshold(layer, int(heads[h]))
        if isinstance(ksig, torch.Tensor):
            qs = qsig[h * group : (h + 1) * group].transpose(0, 1)
            rows.append(kernels.scf_filter_device(qs, ksig[h, s_n : s_n + e_rel], d, t))
        else:
            res = kernels.scf_filter_rows(
                np.ascontiguousarray(qsig[h * group : (h + 1) * group].transpose(1, 0, 2)),
                ksig[h, s_n : s_n + e_rel],
                d,
                t,
                backend=cfg.backend,
                return_matches=False,
            )
            rows.append(torch.from_numpy(res.survivors).to(dev))
    region = torch.arange(e_rel, device=dev)[None, :] < torch.from_numpy(region_count).to(dev)[:, None]
    return torch.stack(rows) & region


def _account(st, heads, tail_mask, region_count, surv_count, keys, union, meta, c) -> None:
    """Adds one chunk's reads to the layer's per-KV-head sums at ``heads`` (the chunk's heads, global)."""
    st.considered[heads] += region_count.sum()
    st.survivors[heads] += surv_count.sum(1)
    st.keys_read[heads] += keys.sum(1)
    st.values_read[heads] += union.sum(1)
    st.meta_bytes[heads] += meta
    st.tail_keys_read[heads] += keys[:, tail_mask].sum(1)
    st.tail_values_read[heads] += union[:, tail_mask].sum(1)
    if tail_mask.any():
        st.tail_meta_bytes[heads] += meta * tail_mask.sum() / c


def _merge_band(band, v, dense_idx, mx_sparse):
    """The dense part of one softmax over dense and sparse scores: ``(mx, out, z)`` with ``mx [hkv, G, c]``
    the running max (band and ``mx_sparse``), ``out [hkv, G, c, D]`` the band's weighted values and ``z`` its
    weights' sum, both relative to ``mx``. ``band`` is either its scores ``[hkv, G, c, nd]`` or (flash
    kernel) its normalised output and log-sum-exp."""
    if isinstance(band, tuple):
        o_d, lse = band  # [hkv, G, c, D], [hkv, G, c]
        mx = torch.maximum(lse, mx_sparse)
        w_d = (lse - mx).exp_()
        return mx, o_d * w_d[..., None], w_d.clone()
    hkv, group, c, nd = band.shape
    mx = torch.maximum(band.amax(-1), mx_sparse)
    p_d = (band - mx[..., None]).exp_()
    out = torch.bmm(p_d.view(hkv, group * c, nd), v[:, dense_idx]).view(hkv, group, c, -1)
    return mx, out, p_d.sum(-1)


def _region_scores(qs_sc, k, region_count, recall_np, pos_np, state):
    """Scores of a chunk's queries against its whole sparse region [S, e): ``(e, region [c, r], scores
    [hkv, G, c, r] in the reused "scores" buffer, sampled recall rows, their raw scores copied)``."""
    dev = qs_sc.device
    hq, c, d = qs_sc.shape
    hkv = k.shape[0]
    s_n = state.config.sinks
    e = pos_np[-1] + 1 - state.config.window
    r = e - s_n
    region = torch.arange(r, device=dev)[None, :] < torch.from_numpy(region_count).to(dev)[:, None]
    s_sp = state.scratch("scores", (hkv, hq // hkv * c, r), dev)
    torch.bmm(qs_sc.reshape(hkv, hq // hkv * c, d), k[:, s_n:e].transpose(1, 2), out=s_sp)
    s_sp = s_sp.view(hkv, hq // hkv, c, r)
    # Rows sampled for top-k recall keep their raw scores: selection masks the scores in place.
    recall_rows = torch.from_numpy(recall_np).to(dev)
    return e, region, s_sp, recall_rows, s_sp[:, :, recall_rows].clone()


def _chunk_full(
    q,
    qs_sc,
    k,
    v,
    band,
    dense_idx,
    region_count,
    recall_np,
    tail_mask,
    pos_np,
    layer,
    kk,
    state,
    qsig,
    ksig,
    *,
    heads,
    mask=None,
):
    """The sparse region by full products (LongSight at low thresholds, oracle top-k): QK^T over [S, e) for
    every row, eligible keys masked, exact top-k by index; the softmax and PV touch the k picks only (their
    weights scattered into one zeroed score-sized matrix for a single PV product)."""
    cfg = state.config
    dev = q.device
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    w, s_n = cfg.window, cfg.sinks
    e, region, s_sp, recall_rows, recall_raw = _region_scores(
        qs_sc, k, region_count, recall_np, pos_np, state
    )
    r = e - s_n
    meta = np.zeros(hkv)
    if cfg.kind == "longsight":
        if mask is None:
            mask = _survivor_mask(qsig, ksig, region_count, layer, s_n, d, group, cfg, dev, heads)
        eligible = mask  # [hkv, c, r]
        meta[:] = region_count.sum() * d / 8  # the PFUs read every considered key's sign bits
        surv_count = _count(eligible).cpu().numpy().astype(np.float64)  # [hkv, c]
        s_sp.masked_fill_(~eligible[:, None], float("-inf"))
    else:  # oracle top-k: the whole region is eligible
        eligible = region.expand(hkv, c, r)
        surv_count = np.broadcast_to(region_count, (hkv, c)).astype(np.float64)
        s_sp.masked_fill_(~region, float("-inf"))
    keys = surv_count  # LongSight scores every survivor; the oracle every considered key
    # Exact top-k by index; rows with fewer eligible keys than k get -inf picks, which weigh nothing.
    if cfg.topk_per == "group":
        top = s_sp.amax(1).topk(kk, dim=-1, sorted=False).indices[:, None].expand(hkv, group, c, kk)
        vals = s_sp.gather(-1, top)
    else:
        vals, top = s_sp.topk(kk, dim=-1, sorted=False)  # [hkv, G, c, kk]
    picked = vals > float("-inf")
    # Values read: the union of the group's picks. A key is picked for every query head that lists it or
    # for none (eligibility is per KV group), so a plain scatter of 0/1 marks the union exactly.
    union = torch.zeros(hkv, c, r, dtype=torch.bool, device=dev).scatter_(
        -1,
        top.transpose(1, 2).reshape(hkv, c, group * kk),
        picked.transpose(1, 2).reshape(hkv, c, group * kk),
    )
    union_np = _count(union).double().cpu().numpy()  # [hkv, c]
    st = state.stats[layer]
    _account(st, heads, tail_mask, region_count, surv_count, keys, union_np, meta, c)
    if len(recall_np) and kk:
        chosen = torch.zeros(hkv, group, len(recall_np), r, dtype=torch.bool, device=dev).scatter_(
            -1, top[:, :, recall_rows], picked[:, :, recall_rows]
        )
        _recall(st, recall_raw, torch.arange(len(recall_np), device=dev), region[recall_rows], chosen, kk)
    if state.observer is not None:
        sel = torch.zeros(hkv, group, c, r, dtype=torch.bool, device=dev).scatter_(-1, top, picked)
        _observe(state, layer, heads, eligible[:, None], sel, region_count, pos_np, s_n, w)
    if not kk:
        mx, out, z = _merge_band(band, v, dense_idx, torch.full((hkv, group, c), float("-inf"), device=dev))
    else:
        mx, out, z = _merge_band(band, v, dense_idx, vals.amax(-1))
        p_top = (vals - mx[..., None]).exp_()  # unpicked (-inf) -> 0
        z += p_top.sum(-1)
        p_s = state.scratch("weights", (hkv, group, c, r), dev).zero_().scatter_(-1, top, p_top)
        out += torch.bmm(p_s.view(hkv, group * c, r), v[:, s_n:e]).view(hkv, group, c, d)
    out /= z[..., None]
    return out.reshape(hq, c, d)


def _chunk_quest(
    q, qs_sc, k, v, band, dense_idx, region_count, recall_np, tail_mask, pos_np, layer, kk, state
):
    """Quest: page top-k by the min/max bound, every key of a chosen page read and attended."""
    cfg = state.config
    dev = q.device
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    s_n = cfg.sinks
    e, region, s_sp, recall_rows, recall_raw = _region_scores(
        qs_sc, k, region_count, recall_np, pos_np, state
    )
    r = e - s_n
    idx, valid, pages_seen = _quest_select(q, k, region, s_n, e, kk, hkv, group)
    meta = np.full(hkv, pages_seen * 2 * d * cfg.bytes_per_element)
    # scatter_add, not scatter: a padded (invalid) slot clamped onto a real key must not clear it.
    sel = (
        torch.zeros(hkv, group, c, r, dtype=torch.uint8, device=dev).scatter_add_(
            -1, idx, valid.to(torch.uint8)
        )
        > 0
    )
    s_sp.masked_fill_(~sel, float("-inf"))
    surv_count = np.broadcast_to(region_count, (hkv, c)).astype(np.float64)
    union = _count(sel.any(1)).double().cpu().numpy()  # [hkv, c]
    st = state.stats[layer]
    _account(st, np.arange(hkv), tail_mask, region_count, surv_count, union, union, meta, c)
    _recall(st, recall_raw, recall_rows, region, sel, kk)
    if state.observer is not None:
        _observe(
            state,
            layer,
            np.arange(hkv),
            region.expand(hkv, c, r)[:, None],
            sel,
            region_count,
            pos_np,
            s_n,
            cfg.window,
        )
    mx, out, z = _merge_band(band, v, dense_idx, s_sp.amax(-1))
    p_s = s_sp.sub_(mx[..., None]).exp_()
    z += p_s.sum(-1)
    out += torch.bmm(p_s.view(hkv, group * c, r), v[:, s_n:e]).view(hkv, group, c, d)
    out /= z[..., None]
    return out.reshape(hq, c, d)


GATHER_BLOCK = 1 << 20  # survivor x query-head x D elements per block of the compact products (4 MB)


def _chunk_gather(
    q,
    qs_sc,
    k,
    v,
    band,
    dense_idx,
    region_count,
    recall_np,
    tail_mask,
    pos_np,
    layer,
    kk,
    state,
    found,
    *,
    heads,
):
    """The sparse region from SCF survivor lists: dot products, top-k and PV for survivors only.

    Key vectors are gathered for the T actual survivors of the chunk (a compact list, so cost follows T,
    not rows x the longest list); scores are then laid out padded ``[hkv, c, m, G]`` (cheap: no D axis) for
    the top-k and the softmax; value vectors are gathered for the group's picks only."""
    cfg = state.config
    dev = q.device
    hq, c, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    w, s_n = cfg.window, cfg.sinks
    counts_np, idx = found
    m = idx.shape[2]
    counts = torch.from_numpy(counts_np).to(dev)
    valid = torch.arange(m, device=dev)[None, None, :] < counts[..., None]  # [hkv, c, m]
    hh, rr, ss = torch.nonzero(valid, as_tuple=True)  # the T survivors, ordered by (head, row, slot)
    kf, vf = k.reshape(hkv * n, d), v.reshape(hkv * n, d)
    qh = qs_sc.reshape(hkv, group, c, d).transpose(1, 2).reshape(hkv * c, group, d)
    key_rows, seg = hh * n + s_n + idx[hh, rr, ss], hh * c + rr  # cache row and (head, row) of each survivor
    t_n = key_rows.numel()
    blk = max(1, GATHER_BLOCK // (group * d))
    flat_scores = torch.empty(t_n, group, dtype=torch.float32, device=dev)
    for a in range(0, t_n, blk):
        b = min(t_n, a + blk)
        kg = kf.index_select(0, key_rows[a:b])  # [B, D]
        flat_scores[a:b] = torch.bmm(qh.index_select(0, seg[a:b]), kg[:, :, None])[..., 0]
    padded = torch.full((hkv, c, m, group), float("-inf"), device=dev)
    padded[valid] = flat_scores
    # Exact top-k by index over survivors; rows with at most k survivors keep all.
    if m > kk:
        scores = padded.transpose(2, 3)  # [hkv, c, G, m] view
        if cfg.topk_per == "group":
            top = scores.amax(2).topk(kk, dim=-1, sorted=False).indices  # [hkv, c, kk]
            pick = torch.zeros(hkv, c, m, dtype=torch.bool, device=dev).scatter_(-1, top, True) & valid
            sel = pick[:, :, None, :].expand(hkv, c, group, m)
        else:
            vals, top = scores.topk(kk, dim=-1, sorted=False)  # [hkv, c, G, kk]
            sel = torch.zeros(hkv, c, group, m, dtype=torch.bool, device=dev).scatter_(
                -1, top, vals > float("-inf")
            )
        scores.masked_fill_(~sel, float("-inf"))
    else:
        sel = valid[:, :, None, :].expand(hkv, c, group, m)
    surv_count = counts_np.astype(np.float64)
    any_sel = sel.any(2)  # [hkv, c, m]: survivors some query head of the group picked
    union = _count(any_sel).double().cpu().numpy()  # [hkv, c]
    meta = np.full(hkv, region_count.sum() * d / 8)  # the PFUs read every considered key's sign bits
    st = state.stats[layer]
    _account(st, heads, tail_mask, region_count, surv_count, surv_count, union, meta, c)
    if len(recall_np) and kk:
        _recall_gather(st, qs_sc, k, recall_np, region_count, idx, sel, s_n, kk)
    if state.observer is not None:
        _observe_lists(state, layer, heads, counts_np, idx, sel, region_count, pos_np, s_n, w)
    mx, out, z = _merge_band(band, v, dense_idx, padded.amax(2).transpose(1, 2))
    p_s = padded.sub_(mx.transpose(1, 2)[:, :, None, :]).exp_()  # [hkv, c, m, G]; unselected -> 0
    z += p_s.sum(2).transpose(1, 2)
    # PV over the picks only: past the top-k cut most survivors weigh nothing.
    ph, pr, ps = torch.nonzero(any_sel, as_tuple=True)
    val_rows, pseg = ph * n + s_n + idx[ph, pr, ps], ph * c + pr
    flat_p = p_s[ph, pr, ps]  # [P, G]
    out_s = torch.zeros(hkv * c, group, d, dtype=torch.float32, device=dev)
    for a in range(0, val_rows.numel(), blk):
        b = min(val_rows.numel(), a + blk)
        vg = vf.index_select(0, val_rows[a:b])  # [B, D]
        out_s.index_add_(0, pseg[a:b], flat_p[a:b, :, None] * vg[:, None, :])
    out += out_s.view(hkv, c, group, d).transpose(1, 2)
    out /= z[..., None]
    return out.reshape(hq, c, d)


def _recall_gather(st, q, k, recall_np, region_count, idx, sel, s_n, kk) -> None:
    """Top-k recall on the sampled rows: their full region scores (those rows only) against the picks."""
    dev = q.device
    hq, _, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    rows = torch.from_numpy(recall_np).to(dev)
    nr = len(recall_np)
    r = int(region_count.max())  # the chunk's region width (>= k), as in the full path
    raw = torch.bmm(
        q[:, rows].reshape(hkv, group * nr, d), k[:, s_n : s_n + r].transpose(1, 2)
    )  # q pre-scaled
    raw = raw.view(hkv, group, nr, r)
    region = torch.arange(r, device=dev)[None, :] < torch.from_numpy(region_count[recall_np]).to(dev)[:, None]
    picks = sel[:, rows].transpose(1, 2)  # [hkv, G, nr, m]
    ids = idx[:, rows][:, None].expand(-1, group, -1, -1)  # [hkv, G, nr, m]
    chosen = (
        torch.zeros(hkv, group, nr, r, dtype=torch.uint8, device=dev).scatter_add_(
            -1, ids, picks.to(torch.uint8)
        )
        > 0
    )
    _recall(st, raw, torch.arange(nr, device=dev), region, chosen, kk)


def _observe_lists(state, layer, heads, counts, idx, sel, region_count, pos_np, s_n, w) -> None:
    hkv, c, group, _ = sel.shape
    idx_np = idx.cpu().numpy()
    sel_np = sel.cpu().numpy()
    for i in range(c):
        p = int(pos_np[i])
        for h in range(hkv):
            cnt = int(counts[h, i])
            ids = idx_np[h, i, :cnt]
            state.observer(
                DecodeRecord(
                    step=state.step,
                    layer=layer,
                    kv_head=int(heads[h]),
                    context=p + 1,
                    considered=int(region_count[i]),
                    survivors=(ids + s_n).astype(np.int32),
                    topk=[(ids[sel_np[h, i, g, :cnt]] + s_n).astype(np.int32) for g in range(group)],
                    window=min(w, p + 1),
                    sinks=min(s_n, max(0, p + 1 - w)),
                )
            )


def _quest_select(q, k, region, s_n, e, kk, hkv, group):
    """Quest: per page of 16 keys, bound q.k by sum_d max(q_d min_d, q_d max_d); keep the best pages."""
    r = e - s_n
    npages = math.ceil(r / PAGE)
    pad = npages * PAGE - r
    ks = k[:, s_n:e]
    kmin = torch.nn.functional.pad(ks, (0, 0, 0, pad), value=float("inf")).view(hkv, npages, PAGE, -1).amin(2)
    kmax = (
        torch.nn.functional.pad(ks, (0, 0, 0, pad), value=float("-inf")).view(hkv, npages, PAGE, -1).amax(2)
    )
    _hq, c, d = q.shape
    qg = q.reshape(hkv, group * c, d)
    bound = torch.bmm(qg.clamp(min=0), kmax.transpose(1, 2)) + torch.bmm(
        qg.clamp(max=0), kmin.transpose(1, 2)
    )
    bound = bound.view(hkv, group, c, npages)
    first = torch.arange(npages, device=q.device) * PAGE  # page start, relative to S
    last_ok = region.sum(1) - 1  # [c] last region index per row (-1 when empty)
    page_ok = first[None, :] <= last_ok[:, None]  # [c, npages]
    npick = min(npages, max(1, math.ceil(kk / PAGE)))
    top_v, pages = bound.masked_fill(~page_ok, float("-inf")).topk(npick, dim=-1, sorted=False)
    idx = (pages[..., None] * PAGE + torch.arange(PAGE, device=q.device)).reshape(hkv, group, c, npick * PAGE)
    valid = (top_v[..., None] > float("-inf")).expand(-1, -1, -1, -1, PAGE).reshape(idx.shape)
    valid = valid & (idx <= last_ok[None, None, :, None])
    idx = idx.clamp(max=r - 1)
    pages_seen = float(page_ok.sum())
    return idx, valid, pages_seen


def _recall(st, raw, rows, region, sel, kk) -> None:
    """Top-k recall against the oracle (exact top-k over the whole sparse region) on sampled rows."""
    if rows.numel() == 0 or kk == 0:
        return
    top_v, oidx = raw.masked_fill(~region[rows], float("-inf")).topk(kk, dim=-1, sorted=False)
    ovalid = top_v > float("-inf")
    hit = torch.gather(sel[:, :, rows], -1, oidx) & ovalid
    st.recall_hits += float(hit.sum())
    st.recall_total += float(ovalid.sum())


def _observe(state, layer, heads, eligible, sel, region_count, pos, s_n, w) -> None:
    hkv, group, c, _ = sel.shape
    for i in range(c):
        p = int(pos[i])
        for h in range(hkv):
            state.observer(
                DecodeRecord(
                    step=state.step,
                    layer=layer,
                    kv_head=int(heads[h]),
                    context=p + 1,
                    considered=int(region_count[i]),
                    survivors=(torch.nonzero(eligible[h, 0, i]).flatten() + s_n)
                    .to(torch.int32)
                    .cpu()
                    .numpy(),
                    topk=[
                        (torch.nonzero(sel[h, g, i]).flatten() + s_n).to(torch.int32).cpu().numpy()
                        for g in range(group)
                    ],
                    window=min(w, p + 1),
                    sinks=min(s_n, max(0, p + 1 - w)),
                )
            )


def _band_scores(q, k, dense_idx, dense_mask, scaling) -> torch.Tensor:
    """Scores of the dense keys (window + sinks) ``[hkv, G, c, nd]``, -inf outside each row's window."""
    hq, c, d = q.shape
    hkv = k.shape[0]
    qg = q.reshape(hkv, hq // hkv * c, d)
    s_dense = torch.bmm(qg, k[:, dense_idx].transpose(1, 2)).mul_(scaling).view(hkv, hq // hkv, c, -1)
    return s_dense.masked_fill_(~dense_mask, float("-inf"))


def _flash_op():
    try:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    except (AttributeError, RuntimeError):  # pragma: no cover - older or newer torch
        return None


_FLASH_CPU = _flash_op()


def _band_flash(q, k, v, dense_idx, dense_mask, scaling):
    """Window + sinks attention by torch's fused CPU flash kernel (about 2x the bmm path on 2 cores):
    ``(out [hkv, G, c, D], logsumexp [hkv, G, c])``, or None where it does not apply (not on CPU, or a
    torch without the kernel); the caller then uses :func:`_band_scores`."""
    if _FLASH_CPU is None or q.device.type != "cpu" or q.dtype != torch.float32:
        return None
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    kb = k[:, dense_idx].repeat_interleave(group, dim=0)[None]
    vb = v[:, dense_idx].repeat_interleave(group, dim=0)[None]
    bias = torch.zeros(dense_mask.shape, dtype=q.dtype).masked_fill_(~dense_mask, float("-inf"))
    try:
        out, lse = _FLASH_CPU(q[None], kb, vb, 0.0, False, attn_mask=bias[None, None], scale=scaling)
    except RuntimeError:  # pragma: no cover - a kernel that refuses these arguments
        return None
    return out[0].view(hkv, group, c, d), lse[0].view(hkv, group, c)
