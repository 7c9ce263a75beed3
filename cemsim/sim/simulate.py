"""Public entry points: prepare the work of a trace for a system, then simulate it (DES).

    prep = prepare(system, header, steps, context=None, batch=None, max_steps=None)
    result = simulate(prep, timeline=False)        # SimPy discrete-event model
    estimate = analytic(prep)                     # independent closed-form bounds (cemsim.sim.analytic)

``steps`` is any iterable of StepRecord (a TraceReader's iter_steps(), or records built in memory), so
replay does not care where the trace came from. Sweeps call these with a SystemConfig from load_system.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cemsim.config.system import SystemConfig
from cemsim.errors import CemsimError
from cemsim.sim.capacity import FitReport, check_fit
from cemsim.sim.plan import Sizes, system_kind, workload_sizes
from cemsim.sim.replay import Replayer
from cemsim.sim.result import SimResult, fill_metrics, percentiles
from cemsim.sim.settings import AttentionSettings, resolve
from cemsim.sim.survival import replay_works
from cemsim.sim.system import build, drex_shape_for
from cemsim.sim.work import StepWork, check_geometry
from cemsim.trace.records import StepRecord, TraceHeader


@dataclass
class Prepared:
    system: SystemConfig
    header: (
        TraceHeader  # as replayed: the workload's k and topk_scope (settings.py); the trace's is trace_header
    )
    kind: str
    sizes: Sizes
    works: list[StepWork]
    context: int
    batch: int
    fit: FitReport
    trace_context: int
    attention: AttentionSettings | None = None
    trace_header: TraceHeader | None = None


def prepare(
    system: SystemConfig,
    header: TraceHeader,
    steps: Iterable[StepRecord],
    *,
    context: int | None = None,
    batch: int | None = None,
    max_steps: int | None = None,
    where: str = "trace",
) -> Prepared:
    geo = system.geometry
    check_geometry(header, geo.layers, geo.kv_heads, geo.head_dim, where)
    kind = system_kind(system)
    if batch is not None and batch < 1:
        raise CemsimError(f"batch must be at least 1, got {batch}")
    if max_steps is not None and max_steps < 1:
        raise CemsimError(f"steps must be at least 1, got {max_steps}")
    stream = iter(steps)
    first = next(stream, None)
    if first is None:
        raise CemsimError("the trace has no decode steps", where=where)
    settings = resolve(system, header, context or first.context_len, where)
    replayed = dataclasses.replace(header, k=settings.k, topk_scope=settings.topk_scope)
    sizes = workload_sizes(system, replayed)
    shape = drex_shape_for(system, sizes) if kind == "cem" else None
    rows = shape.rows if shape is not None else None

    def check(rec: StepRecord) -> None:
        try:
            rec.check(header)
        except ValueError as exc:
            raise CemsimError(f"inconsistent trace record: {exc}", where=where) from None

    users = batch if batch is not None else system.workload.batch
    fits: list[FitReport] = []

    def fits_at(w: StepWork) -> bool:  # a point that does not fit needs only its first step's work
        fits.append(check_fit(system, kind, sizes, w.context, users, w.window, w.sinks))
        return fits[0].fits

    works, trace_context = replay_works(
        settings, header, itertools.chain([first], stream), context, rows, where, check, max_steps, fits_at
    )
    survivors = sum(float(w.survivors.sum()) for w in works)
    if survivors > 0:
        settings.replayed_filter_ratio = sum(float(w.considered.sum()) for w in works) / survivors
    target_context, fit = works[0].context, fits[0]
    return Prepared(
        system, replayed, kind, sizes, works, target_context, users, fit, trace_context, settings, header
    )


def empty_result(prep: Prepared, model: str) -> SimResult:
    res = SimResult(
        system=prep.system.name,
        model=model,
        kind=prep.kind,
        context_tokens=prep.context,
        batch=prep.batch,
        steps=0,
        fits=prep.fit.fits,
        why_not=list(prep.fit.why_not),
        gpus_needed=prep.fit.gpus_needed,
        memory=prep.fit.memory,
        context_scaled_from=prep.trace_context if prep.trace_context != prep.context else None,
    )
    if prep.attention is not None:
        res.attention = prep.attention.record()
    return res


def simulate(
    prep: Prepared,
    *,
    steps: int | None = None,
    timeline: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SimResult:
    """The discrete-event model. A system that does not fit returns a result saying why, unsimulated."""
    res = empty_result(prep, "des")
    if not prep.fit.fits:
        return res
    sim = build(prep.system, prep.sizes)
    replayer = Replayer(sim, prep.header, prep.works, prep.batch)
    n_steps = steps if steps is not None else len(prep.works)
    out = replayer.run(n_steps, timeline_step=0 if timeline else None, progress=progress)
    rec = sim.rec
    fill_metrics(res, prep.system, dict(rec.bytes), dict(rec.ops), dict(rec.phase), out.step_latencies)
    res.user_latency_s = percentiles(rec.user_latency)
    if res.steps:
        res.busy_s = {k: v / res.steps for k, v in sorted(rec.busy.items())}
    res.events, res.wall_s, res.truncated = out.events, out.wall_s, out.truncated
    res.spans = rec.spans
    return res
