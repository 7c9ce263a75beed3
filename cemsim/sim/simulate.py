"""Public entry points: prepare the work of a trace for a system, then simulate it (DES).

    prep = prepare(system, header, steps, context=None, batch=None, max_steps=None)
    result = simulate(prep, timeline=False)        # SimPy discrete-event model
    estimate = analytic(prep)                     # independent closed-form bounds (cemsim.sim.analytic)

``steps`` is any iterable of StepRecord (a TraceReader's iter_steps(), or records built in memory), so
replay does not care where the trace came from. Sweeps call these with a SystemConfig from load_system.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cemsim.config.components import DReXConfig
from cemsim.config.system import SystemConfig
from cemsim.errors import CemsimError
from cemsim.sim.capacity import FitReport, check_fit
from cemsim.sim.plan import Sizes, system_kind, workload_sizes
from cemsim.sim.replay import Replayer
from cemsim.sim.result import SimResult, fill_metrics, percentiles
from cemsim.sim.system import build, drex_shape_for
from cemsim.sim.work import StepWork, check_geometry, step_work
from cemsim.trace.records import StepRecord, TraceHeader


@dataclass
class Prepared:
    system: SystemConfig
    header: TraceHeader
    kind: str
    sizes: Sizes
    works: list[StepWork]
    context: int
    batch: int
    fit: FitReport
    trace_context: int


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
    if kind == "cem" and isinstance(system.cem, DReXConfig) and header.k > system.cem.nma.topk_max:
        raise CemsimError(
            f"the trace's top-k ({header.k}) exceeds the NMA's top-k unit "
            f"(cem.nma.topk_max = {system.cem.nma.topk_max})",
            where=where,
        )
    if batch is not None and batch < 1:
        raise CemsimError(f"batch must be at least 1, got {batch}")
    if max_steps is not None and max_steps < 1:
        raise CemsimError(f"steps must be at least 1, got {max_steps}")
    sizes = workload_sizes(system, header)
    shape = drex_shape_for(system, sizes)
    rows = shape.rows if shape is not None else None
    works: list[StepWork] = []
    trace_context = 0
    for rec in steps:
        try:
            rec.check(header)
        except ValueError as exc:
            raise CemsimError(f"inconsistent trace record: {exc}", where=where) from None
        trace_context = max(trace_context, rec.context_len)
        works.append(step_work(header, rec, context, rows, where))
        if max_steps is not None and len(works) >= max_steps:
            break  # before pulling another record: a 1M-token step costs a read and a decode
    if not works:
        raise CemsimError("the trace has no decode steps", where=where)
    target_context = works[0].context
    users = batch if batch is not None else system.workload.batch
    fit = check_fit(system, kind, sizes, target_context, users, works[0].window, works[0].sinks)
    return Prepared(system, header, kind, sizes, works, target_context, users, fit, trace_context)


def empty_result(prep: Prepared, model: str) -> SimResult:
    return SimResult(
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
    res.events, res.wall_s, res.truncated = out.events, out.wall_s, out.truncated
    res.spans = rec.spans
    return res
