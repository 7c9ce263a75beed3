"""The workload: model geometry, dtype, batch, context and the attention policy."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from cemsim.config.fields import Count, Frozen

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
POLICIES = ("dense", "longsight", "window", "oracle-topk", "quest")


def parse_tokens(value: object) -> int:
    """Token counts: an integer, or "128K" / "1M" with binary multiples (128K = 131,072), as in the papers."""
    if isinstance(value, bool):
        raise ValueError(f"expected a token count, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KkMm]?)\s*(?:tokens?)?\s*", value)
        if m:
            mult = {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()]
            tokens = float(m.group(1)) * mult
            if tokens.is_integer():
                return int(tokens)
    raise ValueError(f"cannot read {value!r} as a token count; write 131072, '128K' or '1M'")


Tokens = Annotated[int, BeforeValidator(parse_tokens), Field(gt=0)]


LayerType = Literal["full", "sliding"]


def expand_layer_types(value: object, layers: object) -> object:
    """``pattern-N`` (every N-th layer global, as HF's ``sliding_window_pattern``: layer i is full when
    (i + 1) % N == 0) -> a list; HF names (``full_attention`` / ``sliding_attention``) -> full / sliding."""
    if isinstance(value, str):
        m = re.fullmatch(r"pattern-(\d+)", value.strip())
        if not m or int(m.group(1)) < 1 or not isinstance(layers, int):
            raise ValueError(f"layer_types must be a list of full/sliding or 'pattern-N', got {value!r}")
        n = int(m.group(1))
        return ["full" if (i + 1) % n == 0 else "sliding" for i in range(layers)]
    if isinstance(value, list | tuple):
        names = {"full_attention": "full", "sliding_attention": "sliding"}
        return [names.get(v, v) if isinstance(v, str) else v for v in value]
    return value


class ModelGeometry(Frozen):
    """What the simulator needs of a transformer: shapes only, no weights.

    ``layer_types`` (local/global hybrids such as Gemma 3): ``full`` layers attend to the whole context
    (sparse policies and a CEM device serve them); ``sliding`` layers attend to their last ``local_window``
    keys only, so their KV cache stops growing there. None: every layer is full (Llama)."""

    name: str
    layers: Count
    hidden: Count
    q_heads: Count
    kv_heads: Count
    head_dim: Count
    intermediate: Count
    vocab: Count
    max_positions: Count | None = None
    tied_embeddings: bool = False
    layer_types: tuple[LayerType, ...] | None = None
    local_window: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _pattern(cls, data: object) -> object:
        if isinstance(data, dict) and "layer_types" in data:
            data = {**data, "layer_types": expand_layer_types(data["layer_types"], data.get("layers"))}
        return data

    @model_validator(mode="after")
    def _gqa(self) -> ModelGeometry:
        if self.q_heads % self.kv_heads:
            raise ValueError(f"q_heads ({self.q_heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.layer_types is not None:
            if len(self.layer_types) != self.layers:
                raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.layers} layers")
            if "sliding" in self.layer_types and self.local_window is None:
                raise ValueError("sliding layers need local_window (keys each one attends)")
            if "full" not in self.layer_types:
                raise ValueError("layer_types has no full-attention layer")
        return self

    @property
    def global_layers(self) -> int:
        """Full-attention layers: their KV cache grows with the context."""
        return self.layers if self.layer_types is None else self.layer_types.count("full")

    @property
    def local_layers(self) -> int:
        """Sliding-window layers: their KV cache holds at most ``local_window`` tokens."""
        return self.layers - self.global_layers

    def kv_bytes_split(self, context: int, dtype_bytes: int) -> tuple[int, int]:
        """(global layers', local layers') KV-cache bytes of one sequence at ``context`` tokens."""
        per_layer_token = 2 * self.kv_heads * self.head_dim * dtype_bytes
        local_tokens = min(context, self.local_window or 0)
        return (
            self.global_layers * per_layer_token * context,
            self.local_layers * per_layer_token * local_tokens,
        )

    def kv_bytes(self, context: int, dtype_bytes: int) -> int:
        """KV-cache bytes of one sequence at ``context`` tokens, local layers capped at their window."""
        return sum(self.kv_bytes_split(context, dtype_bytes))

    @property
    def group_size(self) -> int:
        return self.q_heads // self.kv_heads

    def weight_params(self) -> int:
        """Parameters of one full model (attention, MLP, norms, embeddings, LM head)."""
        attn = (
            self.hidden * (self.q_heads * self.head_dim) * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        )
        mlp = 3 * self.hidden * self.intermediate
        norms = 2 * self.hidden
        per_layer = attn + mlp + norms
        emb = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + emb + self.hidden

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Bytes per token of every layer's KV cache (all layers treated as full; see :meth:`kv_bytes` for
        local/global hybrids, whose local layers stop growing at their window)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _k_schedule(value: object) -> object:
    """k as one integer, or a schedule ``{context up to: k}`` ("32K: 256"); contexts past the last bound
    take the last k. Keys are token counts ("32K", 32768)."""
    if isinstance(value, dict):
        try:
            pairs = sorted((parse_tokens(c), k) for c, k in value.items())
        except ValueError as exc:
            raise ValueError(f"k schedule: {exc}") from None
        if not pairs:
            raise ValueError("a k schedule needs at least one 'context: k' entry")
        return tuple(pairs)
    return value


KSchedule = tuple[tuple[int, Annotated[int, Field(gt=0)]], ...]
# LongSight (MICRO 2025, evaluation setup): 256 / 512 / 1,024 at 32K / 64K / 128K, and 1,024 beyond (the
# top-k unit's maximum); cemsim.attention.policies.published_k is the same schedule for the model side.
LONGSIGHT_K: KSchedule = ((32 * 1024, 256), (64 * 1024, 512), (128 * 1024, 1024))


class AttentionConfig(Frozen):
    """Decode attention policy: the single source of the settings the simulator replays.

    Where the trace was captured with other settings, the simulator rescales by a stated rule or refuses
    (cemsim/sim/settings.py); the result's ``attention`` record says which (LongSight defaults: W = 1024,
    S = 16, k by context as published)."""

    policy: Literal["dense", "longsight", "window", "oracle-topk", "quest"] = "dense"
    window: Annotated[int, Field(ge=0)] = 1024
    sinks: Annotated[int, Field(ge=0)] = 16
    # one k, or a schedule {context up to: k}; None: LongSight's (LONGSIGHT_K)
    k: Annotated[int | KSchedule | None, BeforeValidator(_k_schedule)] = None
    threshold: Annotated[int, Field(ge=0)] | None = (
        None  # one SCF threshold for every head; None: the trace's
    )
    thresholds_file: str | None = None  # per-(layer, KV head) thresholds written by `cemsim tune`
    itq: bool = True
    topk_scope: Literal["query_head", "kv_group"] = (
        "query_head"  # one top-k per query head (the artifact) or per KV group
    )
    page_size: Count = 16  # Quest pages
    # a scenario: synthesize survival at this mean filter ratio (keys considered / survivors), keeping the
    # trace's per-head and per-block dispersion; None: the trace's (or its threshold-rescaled) survival
    filter_ratio: Annotated[float, Field(ge=1.0)] | None = None

    @model_validator(mode="after")
    def _one_threshold_source(self) -> AttentionConfig:
        if self.threshold is not None and self.thresholds_file is not None:
            raise ValueError("give either threshold or thresholds_file, not both")
        if self.filter_ratio is not None and (self.threshold is not None or self.thresholds_file is not None):
            raise ValueError(
                "give either filter_ratio (a survival scenario) or threshold / thresholds_file, not both"
            )
        if isinstance(self.k, int) and self.k < 1:
            raise ValueError("k must be at least 1")
        return self

    def k_for(self, context: int) -> int:
        """Top-k at a context length: one k, or the first schedule entry whose bound covers the context
        (the last entry beyond every bound)."""
        if isinstance(self.k, int):
            return self.k
        schedule = self.k if self.k is not None else LONGSIGHT_K
        for bound, k in schedule:
            if context <= bound:
                return k
        return schedule[-1][1]


class WorkloadConfig(Frozen):
    model: str  # a geometry preset (llama3-1b, llama3-8b, smollm2-135m) or a HuggingFace config.json path
    dtype: Literal["fp32", "bf16", "fp16", "fp8"] = "bf16"
    batch: Count = 1
    context: Tokens = 131072
    attention: AttentionConfig = Field(default_factory=AttentionConfig)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]
