"""Per-step work derived from a trace record: what each (layer, KV head) reads, at the target context.

The simulator never walks keys. A StepRecord's per-block survivor counts become, per (layer, KV head):
survivors per DReX filter epoch (one epoch = one 128-key Key Block in every bank of a package, i.e. one
context slice), and the LPDDR5X rows those survivors (and the top-k values) touch, which set the row
misses of the NMA's fetches. Arrays are [L, H] or [L, H, epochs]; survivor_blocks is dropped afterwards,
so a 1M-token step costs kilobytes here.

Context scaling (``cemsim run --context N`` below the trace's context): each (layer, head) keeps its
survival fraction; the considered range shrinks to N - window - sinks, and the survivors' position
distribution is the trace's, stretched onto the new range (its cumulative curve, rescaled); values are
capped at the new survivor count. A context above the trace's is refused: extrapolating survival to
longer contexts is a statistical model, and `cemsim trace project` owns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cemsim.errors import CemsimError
from cemsim.trace.records import StepRecord, TraceHeader


@dataclass(frozen=True)
class RowGeometry:
    """How a CEM device lays keys out: keys per epoch (a context slice) and keys per opened DRAM row."""

    slice_keys: int
    keys_per_row: float
    keys_per_block: int


@dataclass
class StepWork:
    step: int
    context: int
    window: int
    sinks: int
    considered: np.ndarray  # [L, H] int64
    survivors: np.ndarray  # [L, H] int64
    values: np.ndarray  # [L, H] int64
    epoch_survivors: np.ndarray | None  # [L, H, E] int64 (CEM systems only)
    epoch_rows: np.ndarray | None  # [L, H, E] float: rows opened to fetch survivor keys
    epoch_blocks: np.ndarray | None  # [L, H, E] int64: key blocks (active PFUs) per epoch
    value_rows: np.ndarray | None  # [L, H] float: rows opened to fetch the top-k values


def check_geometry(header: TraceHeader, layers: int, kv_heads: int, head_dim: int, where: str) -> None:
    got = (header.layers, header.kv_heads, header.head_dim)
    want = (layers, kv_heads, head_dim)
    if got != want:
        raise CemsimError(
            f"the trace's geometry (layers, kv_heads, head_dim) = {got} (model {header.model}) does not match "
            f"the workload's {want}; capture or project a trace for this model, or set workload.model",
            where=where,
        )


class _Blocks:
    """A trace's per-block survivor counts of one (new, old) considered-range pair, in old positions.

    Survivors of block b lie in its part inside the considered range [sinks, sinks + old_n): its valid keys.
    The cumulative count is linear inside each valid part (survivors spread uniformly within a block).
    """

    def __init__(self, counts: np.ndarray, block_size: int, start: int, old_n: int) -> None:
        nb = counts.shape[-1]
        edges = np.arange(nb + 1) * block_size
        self.lo = np.clip(edges[:-1], start, start + old_n).astype(np.float64)
        self.hi = np.clip(edges[1:], start, start + old_n).astype(np.float64)
        self.counts = counts.astype(np.float32)  # [M, nb]; the row model runs in float32 (expected counts)
        self.cum = np.concatenate([np.zeros((counts.shape[0], 1)), np.cumsum(counts, axis=-1)], axis=-1)
        self.bs = block_size

    def below(self, pos: np.ndarray) -> np.ndarray:
        """Survivors at positions below ``pos`` (old, absolute): [M, len(pos)]."""
        b = np.clip((pos // self.bs).astype(np.int64), 0, len(self.lo) - 1)
        width = self.hi[b] - self.lo[b]
        frac = np.divide(np.clip(pos - self.lo[b], 0, None), width, out=np.ones_like(width), where=width > 0)
        frac = np.minimum(frac, 1.0)
        lo = self.cum[:, b]
        return lo + frac * (self.cum[:, b + 1] - lo)

    def log_closed(self, row_edges: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """log P(a row holds no survivor), rows given by their old-position edges: [M, rows]. Linear in
        ``weight`` (survivors per block are scaled by it), so a thinned set is this times the thinning.

        A block's n survivors fall in a piece of length o of its k valid keys with probability o / k
        each, so a row stays closed with probability prod over its pieces of (1 - o / k) ** n."""
        edges = np.union1d(row_edges, np.concatenate([self.lo, self.hi]))
        edges = edges[(edges >= row_edges[0]) & (edges <= row_edges[-1])]
        length = np.diff(edges)
        mid = edges[:-1] + length / 2
        b = np.clip((mid // self.bs).astype(np.int64), 0, len(self.lo) - 1)
        valid = self.hi[b] - self.lo[b]
        share = np.divide(length, valid, out=np.zeros_like(length), where=valid > 0)
        log_closed = np.log1p(-np.minimum(share, 1.0 - 1e-7)).astype(np.float32)  # whole-block piece: ~ -16
        terms = self.counts[:, b]  # [M, pieces]
        terms *= log_closed[None, :]
        terms *= weight.astype(np.float32)
        row_of = np.searchsorted(row_edges, mid, side="right") - 1
        return _sum_runs(terms, row_of, len(row_edges) - 1)


def _sum_runs(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the last axis of ``values`` by a sorted group index; empty groups get 0: [..., n_groups].

    Groups are short runs here (a DRAM row spans one or two trace blocks), so a few strided gathers beat a
    cumulative sum over the whole axis; long runs (epochs) take the cumulative sum."""
    bounds = np.searchsorted(group, np.arange(n_groups + 1))
    counts = np.diff(bounds)
    longest = int(counts.max(initial=0))
    if longest <= 4:
        out = np.zeros((*values.shape[:-1], n_groups), dtype=values.dtype)
        last = values.shape[-1] - 1
        for j in range(longest):
            take = counts > j
            out[..., take] += values[..., np.minimum(bounds[:-1][take] + j, last)]
        return out
    cs = np.concatenate([np.zeros((*values.shape[:-1], 1)), np.cumsum(values, axis=-1)], axis=-1)
    return cs[..., bounds[1:]] - cs[..., bounds[:-1]]


def step_work(
    header: TraceHeader,
    rec: StepRecord,
    context: int | None,
    rows: RowGeometry | None,
    where: str,
    adjust: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> StepWork:
    """Work of one trace step at ``context`` tokens (None: the trace's own). ``adjust(considered, survivors,
    values) -> (survivors, values)`` applies the workload's settings (sim/survival.py) before the blocks
    are laid out; the trace's per-block shape carries the adjusted counts."""
    ctx = rec.context_len if context is None else context
    if ctx > rec.context_len:
        raise CemsimError(
            f"context {ctx} is beyond the trace's {rec.context_len} tokens (step {rec.step}); run "
            f"`cemsim trace project TRACE --context {ctx} --out NEW` and simulate the projected trace",
            where=where,
        )
    window = min(rec.window, ctx)
    sinks = min(rec.sinks, max(ctx - window, 0))
    old = rec.keys_considered.astype(np.int64)
    if ctx == rec.context_len:
        considered = old.copy()
        survivors = rec.survivors.astype(np.int64)
        values = rec.values_fetched.astype(np.int64)
    else:
        considered = np.full_like(old, max(ctx - window - sinks, 0))
        frac = np.divide(rec.survivors, old, out=np.zeros(old.shape), where=old > 0)
        survivors = np.minimum(np.rint(frac * considered).astype(np.int64), considered)
        values = np.minimum(rec.values_fetched.astype(np.int64), survivors)
    if adjust is not None:
        survivors, values = adjust(considered, survivors, values)
    work = StepWork(rec.step, ctx, window, sinks, considered, survivors, values, None, None, None, None)
    if rows is not None:
        _add_epochs(work, header, rec, old, rows)
    return work


def _add_epochs(
    work: StepWork, header: TraceHeader, rec: StepRecord, old: np.ndarray, rows: RowGeometry
) -> None:
    lay, hea = work.considered.shape
    n_epochs = max(1, -(-int(work.considered.max()) // rows.slice_keys))
    ep_surv = np.zeros((lay, hea, n_epochs), np.int64)
    ep_rows = np.zeros((lay, hea, n_epochs))
    ep_blocks = np.zeros((lay, hea, n_epochs), np.int64)
    value_rows = np.zeros((lay, hea))
    blocks = rec.survivor_blocks.astype(np.float64)
    # (new considered, old considered) pairs: usually one, since every head sees the same context
    for new_n, old_n in {(int(a), int(b)) for a, b in zip(work.considered.ravel(), old.ravel(), strict=True)}:
        mask = (work.considered == new_n) & (old == old_n)
        if new_n == 0 or old_n == 0:
            continue
        stretch = old_n / new_n  # one new considered key spans this many old ones
        blk = _Blocks(blocks[mask], header.block_size, rec.sinks, old_n)
        total_old = blk.cum[:, -1]
        total_new = work.survivors[mask].astype(np.float64)
        scale = np.divide(total_new, total_old, out=np.zeros_like(total_new), where=total_old > 0)[:, None]
        e_edges = np.minimum(np.arange(n_epochs + 1) * rows.slice_keys, new_n).astype(np.float64)
        e_cum = np.rint(blk.below(rec.sinks + e_edges * stretch) * scale)
        ep_surv[mask] = np.diff(e_cum, axis=-1).astype(np.int64)
        ep_blocks[mask] = np.ceil(np.diff(e_edges) / rows.keys_per_block).astype(np.int64)[None, :]
        n_rows = int(np.ceil(new_n / rows.keys_per_row))
        r_edges = rec.sinks + np.minimum(np.arange(n_rows + 1) * rows.keys_per_row, new_n) * stretch
        log_closed = blk.log_closed(r_edges, scale)  # [M, n_rows]
        # a row opens only for a survivor: cap by the row's expected survivors (scaled counts are fractional)
        in_row = (np.diff(blk.below(r_edges), axis=-1) * scale).astype(np.float32)
        touched = np.minimum(1.0 - np.exp(log_closed), in_row)
        epoch_of_row = np.minimum(
            (np.arange(n_rows) * rows.keys_per_row // rows.slice_keys).astype(np.int64), n_epochs - 1
        )
        ep_rows[mask] = _sum_runs(touched.astype(np.float64), epoch_of_row, n_epochs)
        # the top-k values are a subset of the survivors: thin each block's survivors by values / survivors
        v = work.values[mask].astype(np.float64)
        thin = np.divide(v, total_new, out=np.zeros_like(v), where=total_new > 0)[:, None]
        thin32 = thin.astype(np.float32)
        value_rows[mask] = np.minimum(1.0 - np.exp(log_closed * thin32), in_row * thin32).sum(
            axis=-1, dtype=np.float64
        )
    work.epoch_survivors, work.epoch_rows, work.epoch_blocks, work.value_rows = (
        ep_surv,
        ep_rows,
        ep_blocks,
        value_rows,
    )
