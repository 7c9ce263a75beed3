"""Survivors per (layer, KV head) at the simulated context: which source, and the stated rescaling rules.

Source, per simulated context (recorded in the result as ``attention.survival_source``):
  captured    the trace holds steps at that context: its survivors as measured (or projected, for a
              projected trace at its own context);
  projection  a projected trace (header.projection holds the fitted survival law) simulated at another
              context: steps drawn from that law at the simulated context (trace.projection.project_steps,
              the same draw `cemsim trace project --context N` writes), never another context's fraction;
  scaled      a captured trace below its context, with no law to draw from: LongSight keeps each head's
              survival fraction (an approximation that ignores how survival falls with distance, so it
              says so); oracle-topk and Quest keep their selection counts (they select about k keys at any
              context).

Rules applied on top, in order (settings.py decides which apply):
  thresholds   measured, when the trace records its survivors at every threshold: each head's survival x
               survivors(T_new) / survivors(T_trace). Else binomial concordance: a key's best sign agreement over the G query heads of its group is
               modelled as the maximum of G Binomial(D, q) counts, q per head fitted so that survival at the
               trace's threshold equals the measured fraction; survival at the workload's threshold follows.
  filter ratio every head's survivors scaled by one factor (capped at the keys considered, the excess
               spread over the others) so that keys considered / survivors, over all heads, is the ratio:
               the trace's per-head spread and per-block shape (step_work stretches its block curve) stay.
  k, scope     values fetched x k / k_trace (LongSight, query_head: a fixed union share), min(k, survivors)
               (kv_group); oracle-topk and Quest select x k / k_trace keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from cemsim.sim.settings import AttentionSettings
from cemsim.sim.work import RowGeometry, StepWork, step_work
from cemsim.trace.records import StepRecord, TraceHeader

Counts = tuple[np.ndarray, np.ndarray]  # survivors, values [L, H]

_Q_GRID = np.linspace(1e-4, 1 - 1e-4, 4001)


def _binomial_sf_table(d: int) -> np.ndarray:
    """P(X >= t) for X ~ Binomial(d, q): [len(_Q_GRID), d + 2], t = 0..d + 1."""
    n = np.arange(d + 1)
    log_comb = np.array([math.lgamma(d + 1) - math.lgamma(i + 1) - math.lgamma(d - i + 1) for i in n])
    q = _Q_GRID[:, None]
    pmf = np.exp(log_comb[None, :] + n[None, :] * np.log(q) + (d - n)[None, :] * np.log1p(-q))
    sf = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]
    return np.concatenate([np.minimum(sf, 1.0), np.zeros((len(_Q_GRID), 1))], axis=1)


def threshold_survival(
    fraction: np.ndarray, t_old: np.ndarray, t_new: np.ndarray, head_dim: int, group: int
) -> np.ndarray:
    """Survival fraction at ``t_new`` of heads measured at ``fraction`` with ``t_old`` (the binomial
    concordance rule, module docstring). Arrays [L, H]; thresholds clipped to 0..head_dim + 1."""
    sf = _binomial_sf_table(head_dim)
    t_old = np.clip(t_old, 0, head_dim + 1)
    t_new = np.clip(t_new, 0, head_dim + 1)
    out = np.array(fraction, dtype=np.float64, copy=True)
    for idx in np.ndindex(out.shape):
        f = float(fraction[idx])
        if f <= 0.0 or f >= 1.0 or t_old[idx] == t_new[idx]:
            continue  # nothing to fit: no survivor (or every key) at the trace's threshold stays so
        group_old = 1.0 - (1.0 - sf[:, t_old[idx]]) ** group  # increasing in q
        q = np.interp(f, group_old, _Q_GRID)
        p_new = np.interp(q, _Q_GRID, sf[:, t_new[idx]])
        out[idx] = 1.0 - (1.0 - p_new) ** group
    return out


def scale_to_ratio(considered: np.ndarray, survivors: np.ndarray, ratio: float) -> np.ndarray:
    """Survivors scaled by one factor so that sum(considered) / sum(survivors) = ratio; a head cannot pass
    more keys than it considered, and what it cannot take goes to the others (water-filling)."""
    cons = considered.astype(np.float64)
    base = survivors.astype(np.float64)
    if base.sum() <= 0:
        base = cons.copy()  # no survivor to take a shape from: spread like the keys
    target = cons.sum() / ratio
    out = np.zeros_like(base)
    free = np.ones(base.shape, bool)
    for _ in range(64):
        left = target - out[~free].sum()
        weight = base[free].sum()
        if weight <= 0:
            break
        trial = base * (left / weight)
        over = free & (trial > cons)
        if not over.any():
            out[free] = trial[free]
            break
        out[over] = cons[over]
        free &= ~over
    return np.minimum(np.rint(out), cons).astype(np.int64)


def redistribute(blocks: np.ndarray, keys: np.ndarray, survivors: np.ndarray) -> np.ndarray:
    """Per-block counts [L, H, B] moved to new per-head totals ``survivors`` [L, H]: each head's blocks scaled
    by one factor, none past its keys ``keys`` [B] (what it cannot take goes to the head's other blocks), then
    rounded to integers keeping each total (largest remainders first)."""
    base = blocks.astype(np.float64)
    cap = np.broadcast_to(keys.astype(np.float64), base.shape)
    target = np.minimum(survivors.astype(np.float64), cap.sum(-1))
    out = np.zeros_like(base)
    free = np.ones(base.shape, bool)
    for _ in range(64):
        left = target - np.where(free, 0.0, out).sum(-1)
        weight = np.where(free, base, 0.0).sum(-1)
        factor = np.divide(left, weight, out=np.zeros_like(left), where=weight > 0)
        trial = base * factor[..., None]
        over = free & (trial > cap)
        out = np.where(free, np.minimum(trial, cap), out)
        if not over.any():
            break
        free &= ~over
    # what the blocks holding survivors cannot take (every one full) goes to the rest in proportion to their
    # room: a head pushed towards every key fills its empty blocks last
    left = target - out.sum(-1)
    room = cap - out
    total_room = room.sum(-1)
    more = left > 1e-9
    if more.any():
        out[more] += room[more] * np.minimum(left[more] / total_room[more], 1.0)[:, None]
    floor = np.floor(out)
    short = np.rint(target - floor.sum(-1)).astype(np.int64)  # units each head still needs
    rank = np.argsort(np.argsort(-(out - floor), axis=-1, kind="stable"), axis=-1)
    floor += (rank < short[..., None]) & (floor < cap)
    return floor.astype(np.uint16)


def with_counts(
    header: TraceHeader, rec: StepRecord, survivors: np.ndarray, values: np.ndarray
) -> StepRecord:
    """``rec`` carrying other survivor and value counts at its own context, blocks redistributed."""
    if np.array_equal(survivors, rec.survivors):
        blocks = rec.survivor_blocks
    else:
        from cemsim.trace.synthetic import sparse_keys_per_block

        keys = sparse_keys_per_block(rec.context_len, header, rec.window, rec.sinks)
        blocks = redistribute(rec.survivor_blocks, keys, survivors)
    surv = blocks.sum(-1, dtype=np.int64)
    return dataclasses.replace(
        rec,
        survivors=surv,
        survivor_blocks=blocks,
        values_fetched=np.minimum(values.astype(np.int64), surv),
        topk_positions=None,
    )


def adjust_counts(
    s: AttentionSettings,
    header: TraceHeader,
    rec: StepRecord,
    considered: np.ndarray,
    survivors: np.ndarray,
    values: np.ndarray,
) -> Counts:
    """The settings' rules applied to one step's counts at the simulated context."""
    survivors = survivors.astype(np.int64)
    values = values.astype(np.int64)
    selecting = s.policy in ("oracle-topk", "quest")
    if selecting and not np.array_equal(considered, rec.keys_considered):
        survivors = np.minimum(rec.survivors.astype(np.int64), considered)  # a selection keeps its count
        values = np.minimum(rec.values_fetched.astype(np.int64), survivors)
    if s.thresholds is not None and header.thresholds is not None:
        frac = np.divide(survivors, considered, out=np.zeros(survivors.shape), where=considered > 0)
        traced = np.clip(np.asarray(header.thresholds, np.int64), 0, header.head_dim + 1)
        if s.threshold_table is not None:  # measured: survivors at the new threshold / at the traced one
            t = s.threshold_table
            at_new = np.take_along_axis(t, np.clip(s.thresholds, 0, header.head_dim + 1)[..., None], -1)[
                ..., 0
            ]
            at_old = np.take_along_axis(t, traced[..., None], -1)[..., 0]
            new = np.minimum(
                frac * np.divide(at_new, at_old, out=np.zeros(frac.shape), where=at_old > 0), 1.0
            )
        else:
            new = threshold_survival(frac, traced, s.thresholds, header.head_dim, header.group_size)
        survivors = np.minimum(np.rint(new * considered).astype(np.int64), considered)
    if s.filter_ratio is not None:
        survivors = scale_to_ratio(considered, survivors, s.filter_ratio)
    if s.k != s.trace_k and selecting:
        survivors = np.minimum(np.rint(survivors * (s.k / s.trace_k)).astype(np.int64), considered)
        values = np.rint(values * (s.k / s.trace_k)).astype(np.int64)
    elif s.topk_scope == "kv_group":
        values = np.full_like(survivors, s.k)
    elif s.k != s.trace_k:
        values = np.rint(values * (s.k / s.trace_k)).astype(np.int64)
    return survivors, np.minimum(values, survivors)


def _projection_steps(header: TraceHeader, context: int, steps: int) -> Iterator[StepRecord]:
    """Steps drawn from the trace's projection at ``context``, lazily; the first few are kept (a sweep
    replays one trace at one context for many systems and batch sizes: the draw is seeded, so identical)."""
    key = (json.dumps(header.projection, sort_keys=True, default=str), header.model, header.k, context)
    cached = _DRAWN.setdefault(key, [])  # filled in place as steps are drawn (callers stop early)
    while len(_DRAWN) > _KEEP_CONTEXTS:
        _DRAWN.pop(next(iter(_DRAWN)))
    yield from list(cached)
    if len(cached) >= steps:
        return
    from cemsim.trace.projection import SurvivalFit, project_steps

    proj = header.projection or {}
    fit = SurvivalFit.from_dict(proj["fit"])
    drawn = project_steps(header, fit, context=context, steps=steps, seed=int(proj.get("seed", 0)))
    for i, rec in enumerate(drawn):
        if i < len(cached):
            continue
        if i < _KEEP_STEPS:
            cached.append(rec)
        yield rec


_DRAWN: dict[tuple, list[StepRecord]] = {}  # (projection, model, k, context) -> the first steps drawn
_KEEP_STEPS, _KEEP_CONTEXTS = 8, 4  # at most 32 steps held (a 512K-token step of Llama-3-8B: 2 MB)


def can_project(header: TraceHeader) -> bool:
    return bool(header.projected and header.projection and "fit" in header.projection)


def replay_works(
    s: AttentionSettings,
    header: TraceHeader,
    records: Iterable[StepRecord],
    context: int | None,
    rows: RowGeometry | None,
    where: str,
    check: Callable[[StepRecord], None],
    max_steps: int | None,
    keep_going: Callable[[StepWork], bool] | None = None,
) -> tuple[list[StepWork], int]:
    """The StepWork of every replayed step, and the largest context the trace itself holds. Sets
    ``s.survival_source``. ``keep_going(first work)`` False stops after the first step (a point that does
    not fit is reported, not simulated: deriving a 1M-token step's work costs seconds)."""
    works: list[StepWork] = []
    trace_context = 0
    drawn: Iterator[StepRecord] | None = None
    first: int | None = None
    sources: set[str] = set()
    for rec in records:
        check(rec)
        trace_context = max(trace_context, rec.context_len)
        ctx = rec.context_len if context is None else context
        if s.policy in ("dense", "window"):
            works.append(_no_sparse_work(s, header, rec.step, ctx))
            sources.add("none needed (dense or window)")
        else:
            use, at = rec, context
            first = rec.context_len if first is None else first
            # the trace's own steps span [first, rec.context_len]: a context inside is the trace's (a step
            # past it replays a few tokens shorter, the fraction kept over those few keys)
            own = context is None or first <= context <= rec.context_len
            if not own and can_project(header):
                if drawn is None:
                    drawn = _projection_steps(header, context, max_steps or 1 << 30)
                use, at = next(drawn), None
                sources.add(f"projection ({(header.projection or {}).get('model')}) to {context} tokens")
            elif own:
                kind = "projected" if header.projected else "captured"
                sources.add(f"{kind} at {ctx if context is not None else first} tokens")
            else:
                sources.add(
                    f"scaled from the trace at {rec.context_len} tokens (no projection in the trace: "
                    + (
                        "survival fraction per head kept)"
                        if s.policy == "longsight"
                        else "selection count kept)"
                    )
                )

            # the settings' rules at the record's own context, its blocks redistributed to the new counts
            # (capped at each block's keys), then the work at the simulated context
            surv, vals = adjust_counts(s, header, use, use.keys_considered, use.survivors, use.values_fetched)
            use = with_counts(header, use, surv, vals)
            keep = None
            if s.policy != "longsight":  # a selection keeps its count, not its fraction, at another context

                def keep(cons: np.ndarray, _s: np.ndarray, _v: np.ndarray, _rec: StepRecord = use) -> Counts:
                    kept = np.minimum(_rec.survivors, cons)
                    return kept, np.minimum(_rec.values_fetched, kept)

            works.append(step_work(header, use, at, rows, where, adjust=keep))
        if len(works) == 1 and keep_going is not None and not keep_going(works[0]):
            break
        if max_steps is not None and len(works) >= max_steps:
            break  # before pulling another record: a 1M-token step costs a read and a decode
    s.survival_source = "; ".join(sorted(sources))
    return works, trace_context


def _no_sparse_work(s: AttentionSettings, header: TraceHeader, step: int, ctx: int) -> StepWork:
    """Dense and window policies: the context, window and sinks of the workload, no sparse stage (dense
    reads the whole context; its window and sinks only size what off-GPU systems keep in HBM)."""
    zeros = np.zeros((header.layers, header.kv_heads), np.int64)
    window = min(s.window, ctx)
    sinks = min(s.sinks, ctx - window)
    return StepWork(step, ctx, window, sinks, zeros, zeros, zeros, None, None, None, None)
