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
"""

from __future__ import annotations

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
