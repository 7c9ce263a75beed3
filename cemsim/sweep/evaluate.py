"""The evaluate functions sweeps call by import path (``evaluate:`` in a spec, ``--evaluate`` on the CLI).

simulate_point: the SimPy simulator (cemsim.sim.simulate), one point = one `cemsim run --json`: the trace is
  replayed at the point's workload.context (scaled below the trace's own context) and workload.batch.
  Spec ``options:`` may set ``steps`` (decode steps replayed, default all) and ``model: analytic`` (the
  closed-form twin instead of the DES).
eval_point: one `cemsim eval --json` row of the sparse-attention engine, for threshold sweeps.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cemsim.errors import CemsimError
from cemsim.sweep.expand import PointTask


@lru_cache(maxsize=4)
def _trace(path: str) -> tuple[Any, tuple[Any, ...]]:
    """Header and step records of a trace, read (and its checksum verified) once per worker process."""
    from cemsim.trace.format import TraceReader

    with TraceReader(path) as reader:
        return reader.header, tuple(reader.iter_steps(topk=False))


def simulate_point(task: PointTask) -> dict[str, Any]:
    from cemsim.sim.analytic import analytic
    from cemsim.sim.simulate import prepare, simulate

    system = task.system
    if system is None:
        raise CemsimError("a 'run' sweep point needs a base system")
    if task.trace is None:
        raise CemsimError("a 'run' sweep needs a trace: set 'trace:' in the spec or pass --trace")
    header, records = _trace(task.trace)
    opts = task.options
    steps = opts.get("steps")
    prep = prepare(system, header, records, context=system.workload.context, batch=system.workload.batch,
                   max_steps=int(steps) if steps else None, where=task.trace)
    model = opts.get("model", "des")
    if model not in ("des", "analytic"):
        raise CemsimError(f"options.model must be 'des' or 'analytic', got {model!r}")
    res = simulate(prep) if model == "des" else analytic(prep)
    out = res.to_json_dict()
    out.pop("step_latencies_s", None)  # per-step detail; the run directory of `cemsim run --out` keeps it
    out["why_not"] = "; ".join(out.get("why_not") or []) or None
    out["trace_model"] = header.model
    out["trace_policy"] = header.policy
    return out


def eval_point(task: PointTask) -> dict[str, Any]:
    """One accuracy / filter-ratio measurement (`cemsim eval --json`) for a threshold sweep point."""
    try:
        from cemsim.attention.eval import evaluate_json
    except ImportError:
        raise CemsimError("the sparse-attention evaluation (cemsim.attention.eval) is not available in this "
                          "installation") from None
    return evaluate_json(task.system, dict(task.params), dict(task.options))
