"""In-memory records of a trace: what the simulator consumes, whatever file they came from.

A trace is a header plus one ``StepRecord`` per decode step. Arrays are indexed [layer, kv_head] (and a
trailing position-block axis for ``survivor_blocks``). Positions are absolute token positions; block b
covers positions [b * block_size, (b + 1) * block_size). The file format (Parquet) lives in format.py;
synthetic.py builds records without a model, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
# Versions this cemsim reads. 2 added the header's ``layer_types`` and ``local_window`` (Gemma-style
# sliding-window layers: their rows hold no sparse stage, and their ``window`` column is the local window);
# a version-1 trace reads as every layer full attention, which is what it was.
READABLE_VERSIONS = (1, 2)
FULL, SLIDING = "full", "sliding"


@dataclass(frozen=True)
class TraceHeader:
    schema_version: int
    model: str  # geometry name (llama3-8b, smollm2-135m, ...)
    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    policy: str  # dense | longsight | window | oracle-topk | quest
    window: int  # dense window W (tokens, including the current one)
    sinks: int  # sink tokens S
    k: int  # top-k per query head (or per KV group, see topk_scope)
    topk_scope: str  # query_head | kv_group
    block_size: int  # keys per position block of survivor_blocks
    itq: bool
    thresholds: list[list[int]] | None  # [layer][kv_head], None for policies without a filter
    text_source: str
    cemsim_version: str
    projected: bool = False
    projection: dict[str, Any] | None = None  # the statistical model, its fit and uncertainty
    extra: dict[str, Any] = field(default_factory=dict)
    layer_types: list[str] | None = None  # "full" | "sliding" per layer; None: every layer full (version 1)
    local_window: int | None = None  # keys a sliding layer attends (current one included); None without any

    @property
    def group_size(self) -> int:
        return self.q_heads // self.kv_heads

    def layer_type(self, layer: int) -> str:
        return FULL if self.layer_types is None else self.layer_types[layer]

    @property
    def full_layers(self) -> list[int]:
        """Layers with full (global) attention: the only ones with a sparse stage."""
        return [i for i in range(self.layers) if self.layer_type(i) == FULL]

    @property
    def sliding_layers(self) -> list[int]:
        return [i for i in range(self.layers) if self.layer_type(i) == SLIDING]

    def local_window_at(self, context_len: int) -> int:
        """Keys a sliding layer attends at a decode step with ``context_len`` keys in the cache."""
        return min(self.local_window or 0, context_len)

    def check_layer_types(self) -> None:
        """Raise ValueError when ``layer_types`` / ``local_window`` are inconsistent."""
        if self.layer_types is None:
            if self.local_window is not None:
                raise ValueError("local_window is set but layer_types is not")
            return
        if len(self.layer_types) != self.layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.layers} layers")
        bad = sorted(set(self.layer_types) - {FULL, SLIDING})
        if bad:
            raise ValueError(f"layer_types holds {bad}; each entry must be {FULL!r} or {SLIDING!r}")
        if self.sliding_layers and (self.local_window is None or self.local_window < 1):
            raise ValueError("a trace with sliding layers needs local_window >= 1")


@dataclass
class StepRecord:
    """One decode step of every (layer, KV head)."""

    step: int
    context_len: int  # tokens in the KV cache when this step's query attends (same for every layer and head)
    keys_considered: np.ndarray  # [L, H] int64: keys the sparse stage looked at (excludes window and sinks)
    survivors: np.ndarray  # [L, H] int64: keys passing the filter (LongSight) or selected (oracle, Quest)
    survivor_blocks: np.ndarray  # [L, H, ceil(context_len / block_size)] uint16: survivors per position block
    values_fetched: (
        np.ndarray
    )  # [L, H] int64: distinct value vectors the sparse top-k needs (union over the group)
    window: int  # dense-window tokens actually attended at this step
    sinks: int  # sink tokens actually attended at this step
    metadata_bytes: np.ndarray | None = None  # [L, H] extra bytes read (Quest page bounds), else None
    topk_positions: np.ndarray | None = (
        None  # [L, H, group, >= k] int32, -1 padded, sorted per query head; capture only
    )

    def check(self, header: TraceHeader) -> None:
        """Raise ValueError when shapes or counts are inconsistent with the header."""
        shape = (header.layers, header.kv_heads)
        for name in ("keys_considered", "survivors", "values_fetched"):
            arr = getattr(self, name)
            if arr.shape != shape:
                raise ValueError(f"step {self.step}: {name} has shape {arr.shape}, expected {shape}")
        if np.any(self.survivors > self.keys_considered):
            raise ValueError(f"step {self.step}: more survivors than keys considered")
        n_blocks = -(-self.context_len // header.block_size)
        if self.survivor_blocks.shape != (*shape, n_blocks):
            raise ValueError(
                f"step {self.step}: survivor_blocks has shape {self.survivor_blocks.shape}, expected {(*shape, n_blocks)}"
            )
        if not np.array_equal(self.survivor_blocks.sum(axis=-1, dtype=np.int64), self.survivors):
            raise ValueError(f"step {self.step}: survivor_blocks do not add up to survivors")
        local = header.sliding_layers
        if local and (self.keys_considered[local].any() or self.values_fetched[local].any()):
            raise ValueError(
                f"step {self.step}: sliding-window layers {local} have a sparse stage (keys considered or "
                "values fetched); they attend densely within their window only"
            )
