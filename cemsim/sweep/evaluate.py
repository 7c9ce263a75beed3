"""The evaluate functions sweeps call by import path (``evaluate:`` in a spec, ``--evaluate`` on the CLI).

simulate_point: the SimPy simulator (cemsim.sim.simulate), one point = one `cemsim run --json`: the trace is
  replayed at the point's workload.context (scaled below the trace's own context) and workload.batch.
  Spec ``options:`` may set ``steps`` (decode steps replayed, default all) and ``model: analytic`` (the
  independent analytic model's point estimate instead of the DES; it serves each user as if alone).
  A point with ``workload.batch: max`` runs at the most users the system holds at its context
  (cemsim/sweep/fit_batch.py); its result says so (``batch_rule``) and names the memory that limits it.
eval_point: one `cemsim eval --json` row of the sparse-attention engine (threshold sweeps, Pareto chart);
  a `kind: eval` spec needs no base system: its axes are the flags of `cemsim eval`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cemsim.errors import CemsimError
from cemsim.sweep.expand import BATCH_OPTION, FIT_BATCH, PointTask, is_fit_batch


@lru_cache(maxsize=4)
def _trace(path: str) -> tuple[Any, tuple[Any, ...]]:
    """Header and step records of a trace, read (and its checksum verified) once per worker process."""
    from cemsim.trace.format import TraceReader

    with TraceReader(path) as reader:
        return reader.header, tuple(reader.iter_steps(topk=False))


def simulate_point(task: PointTask) -> dict[str, Any]:
    from cemsim.sim.analytic import analytic
    from cemsim.sim.simulate import prepare, simulate
    from cemsim.sweep.fit_batch import with_most_users

    system = task.system
    if system is None:
        raise CemsimError("a 'run' sweep point needs a base system")
    if task.trace is None:
        raise CemsimError("a 'run' sweep needs a trace: set 'trace:' in the spec or pass --trace")
    header, records = _trace(task.trace)
    opts = task.options
    steps = opts.get("steps")
    prep = prepare(
        system,
        header,
        records,
        context=system.workload.context,
        batch=system.workload.batch,
        max_steps=int(steps) if steps else None,
        where=task.trace,
    )
    rule = opts.get(BATCH_OPTION)
    limit = None
    if rule is not None:
        if not is_fit_batch(rule):
            raise CemsimError(
                f"options.batch may only be {FIT_BATCH!r} (the most users that fit), got {rule!r}"
            )
        prep, limit = with_most_users(prep)
    model = opts.get("model", "des")
    if model not in ("des", "analytic"):
        raise CemsimError(f"options.model must be 'des' or 'analytic', got {model!r}")
    res = simulate(prep) if model == "des" else analytic(prep)
    out = res.to_json_dict()
    out.pop("step_latencies_s", None)  # per-step detail; the run directory of `cemsim run --out` keeps it
    out["why_not"] = "; ".join(out.get("why_not") or []) or None
    out["trace_model"] = header.model
    out["trace_policy"] = header.policy
    out["batch_rule"] = FIT_BATCH if rule is not None else "given"
    out["batch_limited_by"] = limit  # the memory that would not hold one more user (batch: max)
    return out


# The flags of `cemsim eval`, as the axis and option names of a `kind: eval` sweep.
EVAL_ARGS = (
    "model",
    "tokens",
    "policy",
    "window",
    "sinks",
    "k",
    "threshold",
    "thresholds",
    "itq",
    "topk_per",
    "backend",
    "text",
)


@lru_cache(maxsize=2)
def _model(name: str) -> Any:
    from cemsim.attention.model_loader import load_model

    return load_model(name)


@lru_cache(maxsize=2)
def _text(path: str | None) -> Any:
    from cemsim.attention.text import load_text

    return load_text(path)


def eval_point(task: PointTask) -> dict[str, Any]:
    """One `cemsim eval --json` row: dense vs sparse perplexity, filter ratio, recall, KV-load reduction.
    Axes and options are the flags of `cemsim eval` (threshold, itq, k, window, tokens, model, ...)."""
    from cemsim.attention.eval import evaluate
    from cemsim.attention.runner import make_policy

    args = {**task.options, **task.params}
    unknown = sorted(set(args) - set(EVAL_ARGS))
    if unknown:
        raise CemsimError(f"unknown eval setting(s) {', '.join(unknown)}; valid: {', '.join(EVAL_ARGS)}")
    lm = _model(str(args.get("model", "smollm2-135m")))
    text = _text(args.get("text"))
    tokens = int(args.get("tokens", 8192))
    policy = str(args.get("policy", "longsight"))
    itq = bool(args.get("itq", True))
    cfg, info = make_policy(
        lm,
        text,
        kind=policy,
        context=tokens,
        window=int(args.get("window", 1024)),
        sinks=int(args.get("sinks", 16)),
        k=args.get("k"),
        threshold=args.get("threshold"),
        thresholds_file=args.get("thresholds"),
        itq=itq,
        topk_per=str(args.get("topk_per", "head")),
        backend=str(args.get("backend", "auto")),
    )
    report = evaluate(lm, text, tokens, cfg, itq=itq and policy == "longsight")
    out = report.to_json()
    out["policy_info"] = info
    return out
