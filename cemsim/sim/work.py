"""Per-step work derived from a trace record: what each (layer, KV head) reads, at the target context.

The simulator never walks keys one event at a time. A StepRecord's per-block survivor counts become, per
(layer, KV head): survivors per device Key Block (``keys_per_block`` consecutive considered keys, the unit
a PFU filters), top-k values per Key Block (the survivors thinned evenly to the values fetched), survivors
per DReX filter epoch (one Key Block in every bank of a package, i.e. one context slice), and the rows
those survivors and values touch (runs of ``keys_per_row`` consecutive keys; expected numbers, each Key Block's survivors being a
uniform random subset of its keys, the placement drex_layout.py draws and turns into DRAM requests). Arrays are [L, H] or [L, H, epochs]
or [L, H, Key Blocks] (one byte per block: 1 MB per 1M-token step of Llama-3-8B).

Context scaling (``cemsim run --context N`` below the trace's context): each (layer, head) keeps its
survival fraction; the considered range shrinks to N - window - sinks, and the survivors' position
distribution is the trace's, stretched onto the new range (its cumulative curve, rescaled and rounded at
Key Block edges); values are capped at the new survivor count. A context above the trace's is refused:
extrapolating survival to longer contexts is a statistical model, and `cemsim trace project` owns it.
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
    block_survivors: np.ndarray | None = None  # [L, H, Key Blocks] uint8/16: survivors per device Key Block
    block_values: np.ndarray | None = None  # [L, H, Key Blocks]: top-k values per Key Block (a thinning)


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


def expected_rows(counts: np.ndarray, considered: int, rows: RowGeometry, epochs: int) -> np.ndarray:
    """Expected distinct rows (runs of ``keys_per_row`` consecutive keys) holding one of the keys, per
    epoch: [M, epochs]. counts: [M, Key Blocks]. Each block's n keys are a uniform random subset of its w
    valid keys (drex_layout.random_offsets draws one such subset), so a piece of c of a block's keys holds
    none of them with probability C(w - c, n) / C(w, n), and a row holds none when none of its pieces do."""
    kpb, kpr = rows.keys_per_block, rows.keys_per_row
    n_blocks = counts.shape[-1]
    if float(kpr).is_integer() and kpb % int(kpr) == 0 and rows.slice_keys % kpb == 0:
        return _expected_rows_aligned(counts, considered, kpb, int(kpr), rows.slice_keys // kpb, epochs)
    n_rows = int(np.ceil(considered / kpr))
    row_edges = np.ceil(np.minimum(np.arange(n_rows + 1) * kpr, considered))  # integer key positions
    blk_edges = np.minimum(np.arange(n_blocks + 1) * kpb, considered).astype(np.float64)
    edges = np.union1d(row_edges, blk_edges)
    length = np.diff(edges)
    keep = length > 0
    lo, length = edges[:-1][keep], length[keep]
    b = np.minimum((lo // kpb).astype(np.int64), n_blocks - 1)
    w = blk_edges[b + 1] - blk_edges[b]
    row_of = np.searchsorted(row_edges, lo, side="right") - 1
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kpb + 2)))])  # log k!, keys are integers
    wi = w.astype(np.int64)
    free = (w - length).astype(np.int64)  # keys of the block outside the piece
    n = np.minimum(counts[:, b].astype(np.int64), wi)  # [M, pieces]
    fit = n <= free
    log_none = np.where(
        fit,
        lf[free] - lf[np.where(fit, free - n, 0)] - lf[wi] + lf[wi - n],
        -1e4,  # more keys than fit outside the piece: the piece surely holds one
    )
    cs = np.concatenate([np.zeros((len(n), 1)), np.cumsum(log_none, axis=-1)], axis=-1)
    bounds = np.searchsorted(row_of, np.arange(n_rows + 1))
    touched = 1.0 - np.exp(cs[:, bounds[1:]] - cs[:, bounds[:-1]])  # [M, rows]
    epoch_of_row = np.minimum((row_edges[:-1] // rows.slice_keys).astype(np.int64), epochs - 1)
    e_bounds = np.searchsorted(epoch_of_row, np.arange(epochs + 1))
    tc = np.concatenate([np.zeros((len(n), 1)), np.cumsum(touched, axis=-1)], axis=-1)
    return tc[:, e_bounds[1:]] - tc[:, e_bounds[:-1]]


def _none_in_piece(lf: np.ndarray, n: np.ndarray, w: int, c: int) -> np.ndarray:
    """P(a piece of c of a block's w keys holds none of its n keys) = C(w - c, n) / C(w, n)."""
    free = w - c
    fit = n <= free
    return np.where(fit, np.exp(lf[free] - lf[np.where(fit, free - n, 0)] - lf[w] + lf[w - n]), 0.0)


def _expected_rows_aligned(
    counts: np.ndarray, considered: int, kpb: int, kpr: int, blocks_per_epoch: int, epochs: int
) -> np.ndarray:
    """expected_rows when rows tile Key Blocks (the usual case): a table of the expectation per count."""
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kpb + 2)))])
    n_all = np.arange(kpb + 1)
    table = (kpb // kpr) * (1.0 - _none_in_piece(lf, n_all, kpb, kpr))  # rows touched by a full block
    n = np.asarray(counts, dtype=np.int64)
    per_block = table[np.minimum(n, kpb)]
    last_w = considered - (counts.shape[-1] - 1) * kpb
    if 0 < last_w < kpb:  # the last block is cut short: its own pieces
        last_n = np.minimum(n[:, -1], last_w)
        per_block[:, -1] = sum(
            1.0 - _none_in_piece(lf, last_n, last_w, min(kpr, last_w - k)) for k in range(0, last_w, kpr)
        ) * (last_n > 0)
    starts = np.arange(0, counts.shape[-1], blocks_per_epoch)
    out = np.zeros((len(n), epochs))
    out[:, : len(starts)] = np.add.reduceat(per_block, starts, axis=-1)
    return out


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
    """Survivors (and top-k values) per Key Block at the new context, then per epoch, and rows touched."""
    lay, hea = work.considered.shape
    kpb = rows.keys_per_block
    n_blocks = max(1, -(-int(work.considered.max()) // kpb))
    per_epoch = rows.slice_keys // kpb
    n_epochs = -(-n_blocks // per_epoch)
    dtype = np.uint8 if kpb <= 255 else np.uint16
    blk_surv = np.zeros((lay, hea, n_blocks), dtype)
    blk_vals = np.zeros((lay, hea, n_blocks), dtype)
    ep_rows = np.zeros((lay, hea, n_epochs))
    value_rows = np.zeros((lay, hea))
    ep_blocks = np.zeros((lay, hea, n_epochs), np.int64)
    blocks = rec.survivor_blocks
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
        edges = np.minimum(np.arange(n_blocks + 1) * kpb, new_n).astype(np.float64)
        cum = np.rint(blk.below(rec.sinks + edges * stretch) * scale)
        cum[:, -1] = total_new  # exact total, whatever the rounding did on the way
        surv = np.diff(cum, axis=-1)
        # the top-k values are a subset of the survivors: thin each block's survivors by values / survivors
        v = work.values[mask].astype(np.float64)
        thin = np.divide(v, total_new, out=np.zeros_like(v), where=total_new > 0)[:, None]
        vals = np.diff(np.rint(cum * thin), axis=-1)
        blk_surv[mask] = surv.astype(dtype)
        blk_vals[mask] = vals.astype(dtype)
        blk_keys = np.diff(edges)
        ep_blocks[mask] = np.add.reduceat((blk_keys > 0).astype(np.int64), np.arange(0, n_blocks, per_epoch))
        ep_rows[mask] = expected_rows(surv, new_n, rows, n_epochs)
        value_rows[mask] = expected_rows(vals, new_n, rows, n_epochs).sum(axis=-1)
    work.block_survivors, work.block_values = blk_surv, blk_vals
    work.epoch_survivors = np.add.reduceat(
        blk_surv.astype(np.int64), np.arange(0, n_blocks, per_epoch), axis=-1
    )
    work.epoch_rows, work.epoch_blocks, work.value_rows = ep_rows, ep_blocks, value_rows
