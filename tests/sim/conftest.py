"""Trace inputs for simulator tests, built in memory (no trace file needed): a header and StepRecords."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cemsim.config.loader import load_system
from cemsim.config.system import SystemConfig
from cemsim.config.workload import ModelGeometry
from cemsim.trace.records import SCHEMA_VERSION, StepRecord, TraceHeader

REPO = Path(__file__).resolve().parents[2]
HWCONFIGS = sorted((REPO / "hwconfigs").glob("*.yaml"))


def make_header(
    geo: ModelGeometry,
    *,
    k: int = 1024,
    window: int = 1024,
    sinks: int = 16,
    block_size: int = 128,
    policy: str = "longsight",
) -> TraceHeader:
    return TraceHeader(
        schema_version=SCHEMA_VERSION,
        model=geo.name,
        layers=geo.layers,
        q_heads=geo.q_heads,
        kv_heads=geo.kv_heads,
        head_dim=geo.head_dim,
        dtype="bf16",
        policy=policy,
        window=window,
        sinks=sinks,
        k=k,
        topk_scope="query_head",
        block_size=block_size,
        itq=True,
        thresholds=None,
        text_source="tests/sim",
        cemsim_version="test",
    )


def make_step(
    header: TraceHeader, context: int, *, survival: float = 0.05, step: int = 0, seed: int = 0
) -> StepRecord:
    """Survivors spread over the considered range [sinks, context - window) with a deterministic per-head
    rate around ``survival`` (heads differ by up to +-50%), binomial per block."""
    rng = np.random.default_rng(seed + step)
    L, H, bs = header.layers, header.kv_heads, header.block_size
    window, sinks = min(header.window, context), header.sinks
    considered = max(context - window - sinks, 0)
    n_blocks = -(-context // bs)
    starts = np.arange(n_blocks) * bs
    lo = np.clip(starts, sinks, sinks + considered)
    hi = np.clip(starts + bs, sinks, sinks + considered)
    keys = (hi - lo).astype(np.int64)
    rate = survival * (0.5 + rng.random((L, H)))
    blocks = rng.binomial(np.broadcast_to(keys, (L, H, n_blocks)), np.minimum(rate, 1.0)[..., None])
    survivors = blocks.sum(axis=-1).astype(np.int64)
    values = np.minimum(survivors, header.k * header.group_size).astype(np.int64)
    return StepRecord(
        step=step,
        context_len=context,
        keys_considered=np.full((L, H), considered, np.int64),
        survivors=survivors,
        survivor_blocks=blocks.astype(np.uint16),
        values_fetched=values,
        window=window,
        sinks=min(sinks, context - window),
    )


def load(path: Path | str, **overrides: object) -> SystemConfig:
    return load_system(path, overrides or None).system


@pytest.fixture
def drex_system() -> SystemConfig:
    return load(REPO / "hwconfigs" / "h100-drex.yaml")
