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
from cemsim.attention.signs import pack_signs
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
            raise CemsimError(f"need window >= 1, sinks >= 0, k >= 0; got W={self.window} S={self.sinks} k={self.k}")
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
    """Per-run state passed to the model as the ``cemsim_state`` keyword; no globals."""

    config: PolicyConfig
    num_layers: int
    num_kv_heads: int
    chunk_elems: int = 1 << 25  # score-matrix elements per query chunk (128 MB of fp32)
    recall_stride: int = 16  # every n-th query position also computes the oracle top-k for recall
    tail: int = 256
    total_positions: int | None = None  # prefill length; positions >= total - tail count as tail
    observer: object | None = None  # callable(DecodeRecord) during decode steps
    on_layer: object | None = None  # callable(layer) after each layer (progress displays)
    step: int = 0
    capture: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # layer -> (q, k) when capturing
    stats: list[LayerStats] = field(default_factory=list)
    _signs: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> packed key signs [Hkv, n, W]

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.stats = [LayerStats.zeros(self.num_kv_heads) for _ in range(self.num_layers)]
        self._signs = {}
        self.step = 0

    def key_signs(self, layer: int, k_rot: torch.Tensor) -> np.ndarray:
        """Packed signs of all N keys of a layer, extending the cached prefix (keys never change)."""
        n = k_rot.shape[1]
        have = self._signs.get(layer)
        if have is not None and have.shape[1] <= n:
            if have.shape[1] == n:
                return have
            new = pack_signs(k_rot[:, have.shape[1] :])
            out = np.concatenate([have, new], axis=1)
        else:
            out = pack_signs(k_rot)
        self._signs[layer] = out
        return out


def _rotate(x: torch.Tensor, rot: np.ndarray | None, hkv: int, group: int) -> torch.Tensor:
    """x [H, T, D] with H = hkv * group heads; each KV head's rotation applies to its group."""
    if rot is None:
        return x
    r = torch.from_numpy(rot).to(x.dtype)  # [Hkv, D, D]
    if group > 1:
        r = r.repeat_interleave(group, dim=0)
    return torch.bmm(x, r)


def dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, q_offset: int) -> torch.Tensor:
    """Exact causal attention for queries at ``q_offset..`` (SDPA); q [Hq, Tq, D], k/v [Hkv, N, D]."""
    tq, n = q.shape[1], k.shape[1]
    mask = None
    if tq > 1:
        pos = torch.arange(q_offset, q_offset + tq)[:, None]
        mask = torch.arange(n)[None, :] <= pos
    return torch.nn.functional.scaled_dot_product_attention(
        q[None], k[None], v[None], attn_mask=mask, scale=scaling, enable_gqa=True
    )[0]


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
    ``state.config``; returns ``[Hq, Tq, D]`` in fp32 and adds to ``state.stats[layer]``."""
    cfg = state.config
    if cfg.kind == "dense":
        _count_dense(q, k, q_offset, state, layer)
        return dense_reference(q, k, v, scaling, q_offset)
    hq, tq, d = q.shape
    hkv, n, _ = k.shape
    group = hq // hkv
    rot = None if cfg.rotations is None else cfg.rotations[layer]
    ksig = None
    if cfg.kind == "longsight":
        ksig = state.key_signs(layer, _rotate(k, rot, hkv, 1))
    qsig_all = pack_signs(_rotate(q, rot, hkv, group)) if cfg.kind == "longsight" else None
    chunk = max(1, min(tq, state.chunk_elems // max(1, hq * n)))
    out = torch.empty(hq, tq, d, dtype=torch.float32)
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
    qsig: np.ndarray | None,
    ksig: np.ndarray | None,
    layer: int,
    scaling: float,
    p0: int,
    state: AttentionState,
) -> torch.Tensor:
    cfg = state.config
    hq, c, d = q.shape
    hkv = k.shape[0]
    group = hq // hkv
    w, s_n = cfg.window, cfg.sinks
    p1 = p0 + c  # exclusive: the chunk's queries see keys [0, p1)
    pos = torch.arange(p0, p1)
    # Dense keys: sinks [0, S) and the band [max(S, p0 - W + 1), p1).
    band0 = max(min(s_n, p1), p0 - w + 1)
    dense_idx = torch.cat([torch.arange(min(s_n, p1)), torch.arange(max(band0, 0), p1)])
    jd = dense_idx[None, :]
    dense_mask = (jd <= pos[:, None]) & ((jd > pos[:, None] - w) | (jd < s_n))  # [c, nd]
    qg = q.reshape(hkv, group * c, d)
    s_dense = torch.bmm(qg, k[:, dense_idx].transpose(1, 2)).mul_(scaling).view(hkv, group, c, -1)
    s_dense.masked_fill_(~dense_mask, float("-inf"))
    # Sparse region [S, e) with e = p1 - W: row p may use keys S <= j <= p - W.
    e = p1 - w
    st = state.stats[layer]
    tail_mask = (pos >= _tail_start(state, k.shape[1], 0, p1)).numpy()
    n_dense = dense_mask.sum(1).numpy().astype(np.float64)  # per row
    st.rows += c
    st.dense += n_dense.sum()
    st.tail_rows += tail_mask.sum()
    st.tail_dense += n_dense[tail_mask].sum()
    if e <= s_n or cfg.kind == "window":
        if e > s_n:
            region_rows = np.clip(pos.numpy() - w + 1 - s_n, 0, None).astype(np.float64)
            st.considered += region_rows.sum()
        return _softmax_out(s_dense, v[:, dense_idx], None, None, hkv, group, c, d)
    jr = torch.arange(s_n, e)
    region = jr[None, :] <= (pos[:, None] - w)  # [c, r]
    region_np = region.numpy()
    region_count = np.count_nonzero(region_np, axis=1).astype(np.float64)
    s_sp = torch.bmm(qg, k[:, s_n:e].transpose(1, 2)).mul_(scaling).view(hkv, group, c, -1)
    # Rows sampled for top-k recall keep their raw scores: selection masks s_sp in place.
    recall_rows = torch.nonzero((pos % state.recall_stride == 0) & region.any(1)).flatten()
    recall_raw = s_sp[:, :, recall_rows].clone()
    kk = min(cfg.k, e - s_n)
    meta = np.zeros(hkv)
    if cfg.kind == "longsight":
        surv = np.empty((hkv, c, e - s_n), dtype=bool)
        for h in range(hkv):
            res = kernels.scf_filter_rows(
                np.ascontiguousarray(qsig[h * group : (h + 1) * group].transpose(1, 0, 2)),
                ksig[h, s_n:e],
                d,
                cfg.threshold(layer, h),
                backend=cfg.backend,
                return_matches=False,
            )
            np.logical_and(res.survivors, region_np, out=surv[h])
        eligible_np = surv
        meta[:] = region_count.sum() * d / 8  # the PFUs read every considered key's sign bits
    elif cfg.kind == "oracle-topk" or cfg.kind == "quest":
        eligible_np = np.broadcast_to(region_np, (hkv, c, e - s_n))
    else:  # pragma: no cover - dense and window return earlier
        raise AssertionError(cfg.kind)
    surv_count = np.count_nonzero(eligible_np, axis=2).astype(np.float64)  # [hkv, c]
    eligible = torch.from_numpy(np.ascontiguousarray(eligible_np))[:, None]  # [hkv, 1, c, r]
    if cfg.kind == "quest":
        idx, valid, pages_seen = _quest_select(q, k, region, s_n, e, kk, hkv, group)
        meta[:] = pages_seen * 2 * d * cfg.bytes_per_element
        # scatter_add, not scatter: a padded (invalid) slot clamped onto a real key must not clear it.
        sel = torch.zeros(hkv, group, c, e - s_n, dtype=torch.uint8).scatter_add_(-1, idx, valid.to(torch.uint8)) > 0
        sparse_scores = s_sp.masked_fill_(~sel, float("-inf"))
    else:
        sparse_scores, sel = _topk_mask(s_sp, eligible, surv_count, kk, cfg.topk_per == "group")
    # Reads: LongSight scores every survivor; the oracle reads every considered key; Quest reads its
    # pages. Values: the union of the group's picks.
    union = sel.any(1).sum(-1).double().numpy()  # [hkv, c]
    if cfg.kind == "longsight":
        keys = surv_count
    elif cfg.kind == "oracle-topk":
        keys = np.broadcast_to(region_count, surv_count.shape)
    else:
        keys = union
    st.considered += region_count.sum()
    st.survivors += surv_count.sum(1)
    st.keys_read += keys.sum(1)
    st.values_read += union.sum(1)
    st.meta_bytes += meta
    st.tail_keys_read += keys[:, tail_mask].sum(1)
    st.tail_values_read += union[:, tail_mask].sum(1)
    if tail_mask.any():
        st.tail_meta_bytes += meta * tail_mask.sum() / c
    _recall(st, recall_raw, recall_rows, region, sel, kk)
    if state.observer is not None:
        _observe(state, layer, eligible, sel, region_count, pos, s_n, w)
    return _softmax_out(s_dense, v[:, dense_idx], sparse_scores, v[:, s_n:e], hkv, group, c, d)


def _topk_mask(
    s_sp: torch.Tensor, eligible: torch.Tensor, surv_count: np.ndarray, kk: int, per_group: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k over eligible keys as a mask: (scores with unselected keys at -inf, selection mask).

    Rows whose eligible count is at most k keep everything, so ``topk`` runs only on rows that need it
    (after tuning, most rows). A key tied with the k-th score is kept too (exact float ties only)."""
    hkv, group, c, _ = s_sp.shape
    masked = s_sp.masked_fill_(~eligible, float("-inf"))  # s_sp is not needed unmasked afterwards
    need = np.nonzero(surv_count > kk)  # (kv head, row) pairs with more survivors than k
    if len(need[0]) == 0:
        return masked, eligible.expand(hkv, group, c, -1)
    hi, ri = torch.from_numpy(need[0]), torch.from_numpy(need[1])
    if per_group:
        gmax = masked.amax(1)  # [hkv, c, r]
        kth = gmax[hi, ri].topk(kk, dim=-1, sorted=False).values.amin(-1)  # [n]
        thr = torch.full((hkv, c), float("-inf"))
        thr[hi, ri] = kth
        sel = (eligible[:, 0] & (gmax >= thr[..., None]))[:, None].expand(hkv, group, c, -1)
    else:
        sub = masked[hi, :, ri]  # [n, group, r]
        kth = sub.topk(kk, dim=-1, sorted=False).values.amin(-1)  # [n, group]
        thr = torch.full((hkv, group, c), float("-inf"))
        thr[hi, :, ri] = kth
        sel = eligible & (masked >= thr[..., None])
    return masked.masked_fill_(~sel, float("-inf")), sel


def _quest_select(q, k, region, s_n, e, kk, hkv, group):
    """Quest: per page of 16 keys, bound q.k by sum_d max(q_d min_d, q_d max_d); keep the best pages."""
    r = e - s_n
    npages = math.ceil(r / PAGE)
    pad = npages * PAGE - r
    ks = k[:, s_n:e]
    kmin = torch.nn.functional.pad(ks, (0, 0, 0, pad), value=float("inf")).view(hkv, npages, PAGE, -1).amin(2)
    kmax = torch.nn.functional.pad(ks, (0, 0, 0, pad), value=float("-inf")).view(hkv, npages, PAGE, -1).amax(2)
    _hq, c, d = q.shape
    qg = q.reshape(hkv, group * c, d)
    bound = torch.bmm(qg.clamp(min=0), kmax.transpose(1, 2)) + torch.bmm(qg.clamp(max=0), kmin.transpose(1, 2))
    bound = bound.view(hkv, group, c, npages)
    first = torch.arange(npages) * PAGE  # page start, relative to S
    last_ok = region.sum(1) - 1  # [c] last region index per row (-1 when empty)
    page_ok = first[None, :] <= last_ok[:, None]  # [c, npages]
    npick = min(npages, max(1, math.ceil(kk / PAGE)))
    top_v, pages = bound.masked_fill(~page_ok, float("-inf")).topk(npick, dim=-1, sorted=False)
    idx = (pages[..., None] * PAGE + torch.arange(PAGE)).reshape(hkv, group, c, npick * PAGE)
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


def _observe(state, layer, eligible, sel, region_count, pos, s_n, w) -> None:
    hkv, group, c, _ = sel.shape
    for i in range(c):
        p = int(pos[i])
        for h in range(hkv):
            state.observer(
                DecodeRecord(
                    step=state.step,
                    layer=layer,
                    kv_head=h,
                    context=p + 1,
                    considered=int(region_count[i]),
                    survivors=(torch.nonzero(eligible[h, 0, i]).flatten() + s_n).to(torch.int32).numpy(),
                    topk=[(torch.nonzero(sel[h, g, i]).flatten() + s_n).to(torch.int32).numpy() for g in range(group)],
                    window=min(w, p + 1),
                    sinks=min(s_n, max(0, p + 1 - w)),
                )
            )


def _softmax_out(s_dense, v_dense, s_sparse, v_sparse, hkv, group, c, d) -> torch.Tensor:
    """One softmax over dense scores and the selected sparse scores (unselected at -inf), then the
    weighted sum of values: two batched matmuls (gathering k value vectors per query row costs far more
    memory traffic on a CPU)."""
    nd = s_dense.shape[-1]
    m = s_dense.amax(-1, keepdim=True)
    if s_sparse is not None:
        m = torch.maximum(m, s_sparse.amax(-1, keepdim=True))
    p_d = (s_dense - m).exp_()
    z = p_d.sum(-1, keepdim=True)
    out = torch.bmm(p_d.view(hkv, group * c, nd), v_dense)
    if s_sparse is not None:
        p_s = s_sparse.sub_(m).exp_()  # in place: the sparse scores are not used after this
        z = z + p_s.sum(-1, keepdim=True)
        out += torch.bmm(p_s.view(hkv, group * c, -1), v_sparse)
    out = out.view(hkv, group, c, d) / z
    return out.reshape(hkv * group, c, d)
