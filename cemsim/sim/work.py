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


def _cumulative_at(cum: np.ndarray, block_size: int, pos: np.ndarray) -> np.ndarray:
    """Survivors below absolute positions ``pos`` (linear inside a block); cum is [L, H, nb + 1]."""
    nb = cum.shape[-1] - 1
    p = np.clip(pos / block_size, 0.0, nb)
    i = np.minimum(np.floor(p).astype(np.int64), nb - 1)
    frac = p - i
    lo = cum[..., i]
    return lo + frac * (cum[..., i + 1] - lo)


def _touched(survivors_in_row: np.ndarray, keys_per_row: float) -> np.ndarray:
    """Expected rows opened: a row holding s survivors (density s / keys_per_row) is opened unless all miss."""
    density = np.clip(survivors_in_row / keys_per_row, 0.0, 1.0)
    return 1.0 - (1.0 - density) ** keys_per_row


def step_work(
    header: TraceHeader, rec: StepRecord, context: int | None, rows: RowGeometry | None, where: str
) -> StepWork:
    """Work of one trace step at ``context`` tokens (None: the trace's own)."""
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
    work = StepWork(rec.step, ctx, window, sinks, considered, survivors, values, None, None, None, None)
    if rows is not None:
        _add_epochs(work, header, rec, old, rows)
    return work


def _add_epochs(work: StepWork, header: TraceHeader, rec: StepRecord, old: np.ndarray, rows: RowGeometry) -> None:
    lay, hea = work.considered.shape
    n_epochs = max(1, -(-int(work.considered.max()) // rows.slice_keys))
    ep_surv = np.zeros((lay, hea, n_epochs), np.int64)
    ep_rows = np.zeros((lay, hea, n_epochs))
    ep_blocks = np.zeros((lay, hea, n_epochs), np.int64)
    value_rows = np.zeros((lay, hea))
    blocks = rec.survivor_blocks.astype(np.float64)
    cum = np.concatenate([np.zeros((lay, hea, 1)), np.cumsum(blocks, axis=-1)], axis=-1)
    # (new considered, old considered) pairs: usually one, since every head sees the same context
    for new_n, old_n in {(int(a), int(b)) for a, b in zip(work.considered.ravel(), old.ravel(), strict=True)}:
        mask = (work.considered == new_n) & (old == old_n)
        if new_n == 0 or old_n == 0:
            continue
        stretch = old_n / new_n  # new considered index -> old considered index
        c = cum[mask]  # [M, nb + 1]
        total_old = c[:, -1]
        total_new = work.survivors[mask].astype(np.float64)
        scale = np.divide(total_new, total_old, out=np.zeros_like(total_new), where=total_old > 0)[:, None]

        def surv_below(idx: np.ndarray, c=c, stretch=stretch, scale=scale) -> np.ndarray:
            return _cumulative_at(c, header.block_size, rec.sinks + idx * stretch) * scale

        e_edges = np.minimum(np.arange(n_epochs + 1) * rows.slice_keys, new_n).astype(np.float64)
        e_cum = np.rint(surv_below(e_edges))
        ep_surv[mask] = np.diff(e_cum, axis=-1).astype(np.int64)
        keys_e = np.diff(e_edges)
        ep_blocks[mask] = np.ceil(keys_e / rows.keys_per_block).astype(np.int64)[None, :]
        n_rows = int(np.ceil(new_n / rows.keys_per_row))
        r_edges = np.minimum(np.arange(n_rows + 1) * rows.keys_per_row, new_n)
        per_row = np.diff(surv_below(r_edges), axis=-1)  # [M, n_rows]
        touched = _touched(per_row, rows.keys_per_row)
        epoch_of_row = np.minimum((r_edges[:-1] // rows.slice_keys).astype(np.int64), n_epochs - 1)
        sums = np.zeros((per_row.shape[0], n_epochs))
        np.add.at(sums.T, epoch_of_row, touched.T)
        ep_rows[mask] = sums
        # the top-k values are a subset of the survivors: thin each row's survivors by values / survivors
        v = work.values[mask].astype(np.float64)
        thin = np.divide(v, total_new, out=np.zeros_like(v), where=total_new > 0)[:, None]
        value_rows[mask] = _touched(per_row * thin, rows.keys_per_row).sum(axis=-1)
    work.epoch_survivors, work.epoch_rows, work.epoch_blocks, work.value_rows = ep_surv, ep_rows, ep_blocks, value_rows
