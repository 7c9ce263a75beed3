"""cemsim's attention function for HuggingFace transformers, registered through ``AttentionInterface``.

A model loaded with ``attn_implementation="cemsim"`` (see :mod:`cemsim.attention.model_loader`) calls
:func:`cemsim_attention` in every layer with post-RoPE ``query [B, Hq, T, D]`` and ``key/value [B, Hkv, N, D]``
(before the GQA repeat). The policy comes in the forward call's keyword ``cemsim_state``
(an :class:`~cemsim.attention.policies.AttentionState`); without one the function is exact causal attention
(SDPA, :func:`causal_attention`), so the model behaves as stock. No model class is patched. Since "cemsim" has no registered mask
function, transformers passes ``attention_mask=None``; causality is applied here from positions, so
batches must be one unpadded sequence.

Chunked prefill: a forward call whose ``Tq`` queries are the newest of ``N = past + Tq`` cached keys (the
queries of a prompt chunk fed with a ``DynamicCache``) gets bottom-right-aligned causal attention through
``torch.nn.attention.bias.causal_lower_right``, which SDPA dispatches to its flash / memory-efficient kernels
on CUDA without building a ``Tq x N`` mask (at 1M keys a boolean mask would take 16 GB per 16K-query chunk).
``CausalBias`` passes no ``enable_gqa`` to those kernels, so the KV heads are repeated to the query heads
first (at 1M keys, 9 heads x 64 x 2 B = 1.2 GB per tensor in bf16). On a CPU the bias is materialised
(fine at the sizes a CPU runs).

Layer types (Gemma 3): a layer whose module has a ``sliding_window`` (transformers passes it as a keyword
too) attends densely to its last ``sliding_window`` keys, the current one included, under every policy:
sparse policies apply to full-attention layers only. The window is applied here from positions, in
query chunks (:func:`sliding_attention`), because transformers passes no mask to "cemsim"; it counts
relative positions, so it is right both over a full cache and over transformers' sliding cache (which keeps
the last ``sliding_window - 1`` keys). Decode observers get no records from sliding layers: the trace
fills those rows from the header's layer types (:mod:`cemsim.trace.capture`).
"""

from __future__ import annotations

import numpy as np
import torch

from cemsim.attention.policies import AttentionState, hybrid_attention
from cemsim.errors import CemsimError

ATTN_NAME = "cemsim"
_registered = False


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Exact causal attention of ``q [Hq, Tq, D]`` (the newest ``Tq`` positions) over ``k, v [Hkv, N, D]``,
    in the inputs' dtype; returns ``[Hq, Tq, D]``. Never materialises a mask on CUDA."""
    hq, tq, _ = q.shape
    hkv, n, _ = k.shape
    if hq != hkv:
        k = k.repeat_interleave(hq // hkv, dim=0)
        v = v.repeat_interleave(hq // hkv, dim=0)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if tq == 1:
        return sdpa(q[None], k[None], v[None], scale=scale)[0]
    if tq == n:
        return sdpa(q[None], k[None], v[None], is_causal=True, scale=scale)[0]
    from torch.nn.attention.bias import causal_lower_right

    return sdpa(q[None], k[None], v[None], attn_mask=causal_lower_right(tq, n), scale=scale)[0]


SLIDING_CHUNK = 256  # queries per block of the banded sliding-window attention


def sliding_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, window: int
) -> torch.Tensor:
    """Exact sliding-window causal attention of ``q [Hq, Tq, D]`` (the newest ``Tq`` of ``N`` positions)
    over ``k, v [Hkv, N, D]``: query p sees keys p - window < j <= p (transformers'
    ``sliding_window_overlay``). Query blocks see only their band of keys: O(Tq (chunk + window)) work."""
    hq, tq, _ = q.shape
    hkv, n, _ = k.shape
    if hq != hkv:
        k = k.repeat_interleave(hq // hkv, dim=0)
        v = v.repeat_interleave(hq // hkv, dim=0)
    off = n - tq
    out = torch.empty_like(q)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for a in range(0, tq, SLIDING_CHUNK):
        b = min(tq, a + SLIDING_CHUNK)
        p0, p1 = off + a, off + b  # absolute positions of this block's queries
        k0 = max(0, p0 - window + 1)
        pos = torch.arange(p0, p1, device=q.device)[:, None]
        j = torch.arange(k0, p1, device=q.device)[None, :]
        mask = (j <= pos) & (j > pos - window)
        out[:, a:b] = sdpa(
            q[None, :, a:b], k[None, :, k0:p1], v[None, :, k0:p1], attn_mask=mask, scale=scale
        )[0]
    return out


def _count_sliding(state: AttentionState, layer: int, tq: int, n: int, window: int) -> None:
    """Dense keys of a sliding layer in the policy's stats: min(window, p + 1) per query, nothing sparse."""
    st = state.stats[layer]
    pos = np.arange(n - tq, n)
    if state.total_positions is None:
        tail = pos >= n - state.tail
    else:
        tail = pos >= state.total_positions - state.tail
    keys = np.minimum(window, pos + 1).astype(np.float64)
    st.rows += tq
    st.dense += keys.sum()
    st.tail_rows += tail.sum()
    st.tail_dense += keys[tail].sum()


def cemsim_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cemsim_state: AttentionState | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if query.shape[0] != 1:
        raise CemsimError(f"cemsim attention evaluates one sequence at a time; got batch {query.shape[0]}")
    d = query.shape[-1]
    scale = scaling if scaling is not None else d**-0.5
    layer = int(module.layer_idx)
    dtype = query.dtype
    state = cemsim_state
    window = getattr(module, "sliding_window", None)
    if window is not None:  # a local layer: dense within its window whatever the policy
        if state is not None and state.capture is not None:
            state.capture[layer] = tuple(
                t[0].detach().to("cpu", torch.float32, copy=True) for t in (query, key)
            )
        out = sliding_attention(query[0], key[0], value[0], scale, int(window))
        if state is not None and state.capture is None:
            _count_sliding(state, layer, query.shape[2], key.shape[2], int(window))
            if state.on_layer is not None:
                state.on_layer(layer)
        return out.transpose(0, 1)[None].contiguous(), None
    if state is None or state.capture is not None:
        if state is not None:  # ITQ / calibration capture: fp32 copies on the host
            state.capture[layer] = tuple(
                t[0].detach().to("cpu", torch.float32, copy=True) for t in (query, key)
            )
        out = causal_attention(query[0], key[0], value[0], scale)
    else:
        q, k, v = query[0].float(), key[0].float(), value[0].float()
        q_offset = k.shape[1] - q.shape[1]  # queries are the newest positions of the cache
        out = hybrid_attention(q, k, v, layer=layer, scaling=scale, q_offset=q_offset, state=state)
        if state.on_layer is not None:
            state.on_layer(layer)
    return out.to(dtype).transpose(0, 1)[None].contiguous(), None


def register() -> None:
    """Make ``attn_implementation="cemsim"`` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, cemsim_attention)
    _registered = True
