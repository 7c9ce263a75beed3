"""Synthetic traces: StepRecords for any geometry and context from a few survival parameters, no model needed.

The law (the same one projection.py fits, so tests can check that a projection recovers it):

    keys in the sparse region: positions [sinks, context_len - window)
    survival probability of a key at distance d = (context_len - 1 - position) from the query, head (l, h):
        p(d) = min(1, a[l, h] * (d / window) ** -decay)
    a[l, h] = survival * exp(spread * z[l, h] - spread**2 / 2), z standard normal (heads differ; mean kept)

Counts per position block are binomial, or beta-binomial with intra-block correlation ``clustering`` (0..1)
so that survivors bunch up in some blocks as they do in real traces. Everything is seeded and deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cemsim import __version__
from cemsim.config.workload import ModelGeometry
from cemsim.errors import CemsimError
from cemsim.trace.records import SCHEMA_VERSION, StepRecord, TraceHeader


def geometry(name_or_geometry: str | ModelGeometry) -> ModelGeometry:
    if isinstance(name_or_geometry, ModelGeometry):
        return name_or_geometry
    from cemsim.config.loader import resolve_geometry

    return resolve_geometry(name_or_geometry)


def synthetic_header(
    model: str | ModelGeometry = "smollm2-135m",
    *,
    policy: str = "longsight",
    window: int = 1024,
    sinks: int = 16,
    k: int = 256,
    block_size: int = 128,
    topk_scope: str = "query_head",
    thresholds: list[list[int]] | None = None,
    dtype: str = "bf16",
    text_source: str = "synthetic",
    extra: dict | None = None,
) -> TraceHeader:
    g = geometry(model)
    return TraceHeader(
        schema_version=SCHEMA_VERSION,
        model=g.name,
        layers=g.layers,
        q_heads=g.q_heads,
        kv_heads=g.kv_heads,
        head_dim=g.head_dim,
        dtype=dtype,
        policy=policy,
        window=window,
        sinks=sinks,
        k=k,
        topk_scope=topk_scope,
        block_size=block_size,
        itq=False,
        thresholds=thresholds,
        text_source=text_source,
        cemsim_version=__version__,
        extra=dict(extra or {}),
    )


@dataclass(frozen=True)
class SurvivalLaw:
    """Parameters of the synthetic survival law (see the module docstring)."""

    survival: float = 0.05  # a: survival probability at distance = window
    decay: float = 0.0  # power-law exponent in distance from the query
    spread: float = 0.5  # log-normal sigma of a across (layer, head)
    clustering: float = 0.0  # beta-binomial intra-block correlation, 0 = binomial
    overlap: float = 0.5  # unused when with_topk (values_fetched is then exact)

    def __post_init__(self) -> None:
        if not 0 <= self.survival <= 1:
            raise CemsimError(f"survival must be in [0, 1], got {self.survival}")
        if not 0 <= self.clustering < 1:
            raise CemsimError(f"clustering must be in [0, 1), got {self.clustering}")
        if self.decay < 0 or self.spread < 0:
            raise CemsimError("decay and spread must be >= 0")


def head_scales(header: TraceHeader, law: SurvivalLaw, seed: int) -> np.ndarray:
    """a[l, h]: the per-head survival at distance = window."""
    rng = np.random.default_rng([seed, 1])
    z = rng.standard_normal((header.layers, header.kv_heads))
    return np.clip(law.survival * np.exp(law.spread * z - law.spread**2 / 2), 0.0, 1.0)


def sparse_keys_per_block(context_len: int, header: TraceHeader, window: int, sinks: int) -> np.ndarray:
    """Keys of each position block that lie in the sparse region [sinks, context_len - window)."""
    nb = -(-context_len // header.block_size)
    starts = np.arange(nb, dtype=np.int64) * header.block_size
    lo = np.maximum(starts, sinks)
    hi = np.minimum(starts + header.block_size, max(context_len - window, sinks))
    return np.maximum(hi - lo, 0)


def block_distance(
    context_len: int, header: TraceHeader, keys: np.ndarray, window: int, sinks: int
) -> np.ndarray:
    """Mean distance from the query (position context_len - 1) of each block's sparse keys (>= 1)."""
    starts = np.arange(keys.size, dtype=np.int64) * header.block_size
    lo = np.maximum(starts, sinks)
    centre = lo + (keys - 1) / 2.0
    return np.maximum(context_len - 1 - centre, 1.0)


def draw_blocks(rng: np.random.Generator, p: np.ndarray, keys: np.ndarray, clustering: float) -> np.ndarray:
    """Survivor counts per block: Binomial(keys, p) or beta-binomial with correlation ``clustering``."""
    p = np.clip(p, 0.0, 1.0)
    if clustering > 1e-6:  # below this the beta draw is numerically binomial
        conc = (1 - clustering) / clustering
        alpha = np.maximum(p * conc, 1e-9)
        beta = np.maximum((1 - p) * conc, 1e-9)
        # Tiny beta parameters can come back NaN; such blocks are all-or-nothing anyway.
        p = np.clip(np.nan_to_num(rng.beta(alpha, beta), nan=0.0), 0.0, 1.0)
    return rng.binomial(np.broadcast_to(keys, p.shape), p).astype(np.uint16)


def topk_from_blocks(
    rng: np.random.Generator, blocks: np.ndarray, header: TraceHeader
) -> tuple[np.ndarray, np.ndarray]:
    """Spread each block's survivors evenly inside the block, let every query head pick min(k, n) of them.

    Returns (topk_positions [L, H, G, k] -1 padded, values_fetched [L, H] = size of the group's union)."""
    L, H, _ = blocks.shape
    g, k, bs = header.group_size, header.k, header.block_size
    out = np.full((L, H, g, k), -1, dtype=np.int32)
    fetched = np.zeros((L, H), dtype=np.int64)
    for l_ in range(L):
        for h in range(H):
            c = blocks[l_, h].astype(np.int64)
            n = int(c.sum())
            if n == 0:
                continue
            block_of = np.repeat(np.arange(c.size), c)
            rank = np.arange(n) - np.repeat(np.cumsum(c) - c, c)
            pos = block_of * bs + (rank * bs) // np.maximum(c[block_of], 1)
            chosen = set()
            for q in range(g):
                pick = np.sort(rng.choice(pos, size=min(k, n), replace=False))
                out[l_, h, q, : pick.size] = pick
                chosen.update(pick.tolist())
            fetched[l_, h] = len(chosen)
    return out, fetched


def synthetic_steps(
    header: TraceHeader,
    *,
    context: int,
    steps: int = 1,
    law: SurvivalLaw | None = None,
    with_topk: bool = False,
    seed: int = 0,
    first_step: int = 0,
) -> Iterator[StepRecord]:
    """Decode steps ``first_step ..``: at step s the KV cache holds ``context + s`` tokens."""
    law = law or SurvivalLaw()
    if context < 1 or steps < 0:
        raise CemsimError(f"context must be >= 1 and steps >= 0 (got context={context}, steps={steps})")
    a = head_scales(header, law, seed)
    dense = header.policy == "dense"
    g = header.group_size
    for s in range(first_step, first_step + steps):
        rng = np.random.default_rng([seed, 2, s])
        ctx = context + s
        window = ctx if dense else min(header.window, ctx)
        sinks = 0 if dense else min(header.sinks, ctx - window)
        keys = sparse_keys_per_block(ctx, header, window, sinks)
        if dense or header.policy == "window":
            keys = np.zeros_like(keys)
        d = block_distance(ctx, header, keys, max(window, 1), sinks)
        p = a[:, :, None] * (d[None, None, :] / max(header.window, 1)) ** (-law.decay)
        blocks = draw_blocks(rng, p, keys[None, None, :], law.clustering)
        survivors = blocks.sum(axis=-1, dtype=np.int64)
        topk = None
        if with_topk:
            topk, fetched = topk_from_blocks(rng, blocks, header)
        else:
            union = round(header.k * (1 + (g - 1) * (1 - law.overlap)))
            fetched = np.minimum(survivors, union)
        yield StepRecord(
            step=s,
            context_len=ctx,
            keys_considered=np.full((header.layers, header.kv_heads), int(keys.sum()), dtype=np.int64),
            survivors=survivors,
            survivor_blocks=blocks,
            values_fetched=fetched.astype(np.int64),
            window=window,
            sinks=sinks,
            topk_positions=topk,
        )
