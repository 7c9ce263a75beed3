"""One dense pass for tuning, and the layers before the first full-attention layer replayed from it.

``cemsim tune`` needs, before its sparse evaluations, the dense NLL (perplexity budget), the post-RoPE queries
and keys of every layer (filter-ratio tables) and, here, the hidden states that enter the first
full-attention layer. All three come from one dense forward pass (:func:`dense_pass`): in capture mode every
layer computes exactly what the no-policy pass of ``token_nll`` computes (the same SDPA calls), it only keeps
copies of Q and K.

Why the prefix can be replayed: sparse policies act on full-attention layers only; a sliding-window layer
attends densely within its window under every policy, through the same function with or without one
(:mod:`cemsim.attention.hf_attention`). So in a local/global model (Gemma 3: layers 0-4 sliding, 5 full) the
layers before the first full one compute the same tensors in every sparse evaluation, whatever the
thresholds, and :func:`replaying_prefix` hands their output to the first full layer instead of recomputing
them (5 of Gemma 3 270M's 18 layers, about 14 % of an 8K evaluation on a CPU). The skipped layers add nothing
to the policy's statistics: sliding layers have no sparse stage, so ``considered`` and ``survivors``, the
filter ratio that tuning reports, are unchanged; their dense-key counts are not recorded (tuning does not
read them). For a model whose layer 0 is full (SmolLM2) there is nothing to replay.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cemsim.attention.model_loader import LoadedModel
from cemsim.attention.policies import PolicyConfig
from cemsim.attention.runner import new_state, nll_from_hidden


@dataclass(frozen=True)
class Prefix:
    """The hidden states entering the first full-attention layer of one token sequence."""

    first_full: int  # index of the first full-attention layer
    hidden: torch.Tensor | None  # [1, n, hidden]; None when the first full layer is layer 0


@dataclass
class DensePass:
    keys: np.ndarray  # post-RoPE keys [L, Hkv, n, D], fp32
    queries: np.ndarray  # post-RoPE queries [L, Hq, n, D], fp32
    nll: np.ndarray | None  # dense NLL of tokens 1..n-1 (None when not asked for)
    prefix: Prefix


def first_full_layer(lm: LoadedModel) -> int:
    return min(lm.full_layers) if lm.full_layers else lm.num_layers


@torch.inference_mode()
def dense_pass(lm: LoadedModel, ids: list[int], *, nll: bool) -> DensePass:
    """Q and K of every layer, the first full layer's input and (if ``nll``) the dense NLL, in one pass."""
    state = new_state(lm, PolicyConfig(kind="dense"))
    state.capture = {}
    first = first_full_layer(lm)
    grabbed: dict[str, torch.Tensor] = {}
    hook = None
    if 0 < first < lm.num_layers:

        def grab(_module, args, kwargs):
            grabbed["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        hook = lm.model.model.layers[first].register_forward_pre_hook(grab, with_kwargs=True)
    x = torch.tensor([ids], device=lm.device)
    try:
        hidden = lm.model.model(input_ids=x, use_cache=False, cemsim_state=state).last_hidden_state[0]
    finally:
        if hook is not None:
            hook.remove()
    keys = np.stack([state.capture[i][1].numpy() for i in range(lm.num_layers)])
    queries = np.stack([state.capture[i][0].numpy() for i in range(lm.num_layers)])
    return DensePass(
        keys=keys,
        queries=queries,
        nll=nll_from_hidden(lm, hidden, x) if nll else None,
        prefix=Prefix(first_full=first, hidden=grabbed.get("h")),
    )


class _Replay(torch.nn.Module):
    """Stands in for a decoder layer: passes its input on, or (the last one) returns the cached output."""

    def __init__(self, out: torch.Tensor | None) -> None:
        super().__init__()
        self.out = out

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.out is None:
            return hidden_states
        if self.out.shape != hidden_states.shape:
            raise ValueError(
                f"replayed prefix is {tuple(self.out.shape)}, input {tuple(hidden_states.shape)}"
            )
        return self.out


@contextlib.contextmanager
def replaying_prefix(lm: LoadedModel, prefix: Prefix) -> Iterator[None]:
    """Within the block, forward passes over ``prefix``'s tokens skip the layers before the first full one."""
    layers = lm.model.model.layers
    if prefix.hidden is None:
        yield
        return
    first = prefix.first_full
    saved = [layers[i] for i in range(first)]
    try:
        for i in range(first):
            layers[i] = _Replay(prefix.hidden if i == first - 1 else None)
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer
