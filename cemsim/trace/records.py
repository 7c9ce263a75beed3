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

SCHEMA_VERSION = 1


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

    @property
    def group_size(self) -> int:
        return self.q_heads // self.kv_heads


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
