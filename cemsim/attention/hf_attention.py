"""cemsim's attention function for HuggingFace transformers, registered through ``AttentionInterface``.

A model loaded with ``attn_implementation="cemsim"`` (see :mod:`cemsim.attention.model_loader`) calls
:func:`cemsim_attention` in every layer with post-RoPE ``query [B, Hq, T, D]`` and ``key/value [B, Hkv, N, D]``
(before the GQA repeat). The policy comes in the forward call's keyword ``cemsim_state``
(an :class:`~cemsim.attention.policies.AttentionState`); without one the function is exact causal attention
(SDPA), so the model behaves as stock. No model class is patched. Since "cemsim" has no registered mask
function, transformers passes ``attention_mask=None``; causality is applied here from positions, so
batches must be one unpadded sequence.
"""

from __future__ import annotations

import torch

from cemsim.attention.policies import AttentionState, dense_reference, hybrid_attention
from cemsim.errors import CemsimError

ATTN_NAME = "cemsim"
_registered = False


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
    q, k, v = query[0].float(), key[0].float(), value[0].float()
    q_offset = k.shape[1] - q.shape[1]  # queries are the newest positions of the cache
    state = cemsim_state
    if state is not None and state.capture is not None:
        state.capture[layer] = (q.clone(), k.clone())
    if state is None or state.capture is not None:
        out = dense_reference(q, k, v, scale, q_offset)
    else:
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
