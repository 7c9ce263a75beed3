"""Run a sweep: expand the spec, skip points whose result file exists, evaluate the rest on an engine with
a progress bar, store each result as it arrives, then write the combined results table."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cemsim import __version__
from cemsim.sweep.engines import run_engine
from cemsim.sweep.expand import Point, expand
from cemsim.sweep.spec import DEFAULT_EVALUATE, SweepSpec, load_spec
from cemsim.sweep.store import ResultStore, flatten
from cemsim.sweep.worker import Outcome


@dataclass
class SweepReport:
    spec: SweepSpec
    results_path: Path
    frame: pd.DataFrame
    counts: Counter = field(default_factory=Counter)  # status -> points
    skipped: int = 0  # finished by an earlier run
    evaluated: int = 0  # evaluated by this run


def _scalar(value: Any) -> Any:
    return value if isinstance(value, int | float | bool) or value is None else str(value)


def _row(spec: SweepSpec, pt: Point, outcome: Outcome | None) -> dict[str, Any]:
    """One results row: identity and axes first, then the evaluator's result flattened into columns."""
    row: dict[str, Any] = {
        "point_id": pt.point_id,
        "sweep": spec.name,
        "status": "invalid" if outcome is None else outcome["status"],
        "error": pt.error if outcome is None else outcome["error"],
        "base": Path(pt.base).stem if pt.base else None,
        "params": json.dumps(pt.params, sort_keys=True, default=str),
    }
    for name, raw in pt.params.items():
        row[f"param.{name}"] = _scalar(pt.resolved.get(name, raw) if pt.valid else raw)
    row["trace"] = pt.trace
    if outcome is not None:
        row["elapsed_s"] = outcome["elapsed_s"]
        result = outcome["result"] or {}
        row.update(flatten(result))
    if row.get("system") is None:
        row["system"] = pt.system.name if pt.system is not None else row["base"]
    return row


def _uniform(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet wants one type per column: a column mixing text with numbers becomes text."""
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {
                type(v) for v in frame[col] if v is not None and not (isinstance(v, float) and pd.isna(v))
            }
            if len(kinds) > 1 and str in kinds:
                frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    return frame


def _progress(console: Console, enabled: bool, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=transient,
    )


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    *,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    trace: str | None = None,
    evaluate: str | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> SweepReport:
    console = console or Console(stderr=True)
    spec = load_spec(spec_path)
    if evaluate:
        spec = dataclasses.replace(spec, evaluate=evaluate)
    store = ResultStore(out)
    with _progress(console, progress, transient=True) as bar:
        expanding = bar.add_task("expanding", total=None, note="")
        points = expand(spec, trace_override=trace)
        bar.remove_task(expanding)
    valid = [p for p in points if p.valid]
    if spec.evaluate == DEFAULT_EVALUATE["run"] and any(p.trace is None for p in valid):
        raise spec.error(
            ("trace",),
            "the simulator replays a trace: give 'trace:' in the spec (a file, or a "
            "template with {context}) or --trace on the command line",
        )
    unique: dict[str, Point] = {}
    for p in valid:  # two axis values that resolve to the same config are one point
        unique.setdefault(p.point_id, p)  # type: ignore[arg-type]
    todo = [p for pid, p in unique.items() if not store.done(pid)]
    report = SweepReport(spec, store.out / "results.parquet", pd.DataFrame(), skipped=len(unique) - len(todo))
    console.print(
        f"sweep [bold]{spec.name}[/]: {len(points)} points, {len(points) - len(valid)} invalid, "
        f"{report.skipped} already done, {len(todo)} to evaluate ({engine})",
        highlight=False,
    )

    failed: dict[str, Outcome] = {}
    if todo:
        with _progress(console, progress) as bar:
            task_id = bar.add_task(spec.name, total=len(todo), note="")
            errors = 0
            for outcome in run_engine(
                engine, [p.task(spec.options) for p in todo], spec.evaluate, workers, address
            ):
                pt = unique[outcome["point_id"]]
                if outcome["status"] == "failed":
                    failed[pt.point_id] = outcome  # type: ignore[index]
                else:  # ok, or a CemsimError of the simulator: a result of this point, kept
                    store.write_point(outcome["point_id"], _row(spec, pt, outcome))
                errors += outcome["status"] != "ok"
                report.evaluated += 1
                bar.update(task_id, advance=1, note=f"{errors} not ok" if errors else "")

    rows = []
    for pt in points:
        if not pt.valid:
            rows.append(_row(spec, pt, None))
        elif pt.point_id in failed:
            rows.append(_row(spec, pt, failed[pt.point_id]))
        else:
            stored = store.read_point(pt.point_id)  # type: ignore[arg-type]
            # a duplicate point shares its result; keep this point's own axis values
            rows.append(
                {
                    **stored,
                    **{
                        k: v
                        for k, v in _row(spec, pt, None).items()
                        if k.startswith("param.") or k in ("params", "base")
                    },
                }
            )
    frame = _uniform(pd.DataFrame(rows))
    report.counts = Counter(frame["status"]) if len(frame) else Counter()
    meta = {
        "name": spec.name,
        "kind": spec.kind,
        "spec": str(spec.path),
        "evaluate": spec.evaluate,
        "options": spec.options,
        "axes": spec.axis_names(),
        "systems": [str(s) for s in spec.systems],
        "plots": spec.plots,
        "cemsim": __version__,
        "counts": dict(report.counts),
    }
    report.results_path = store.write_results(frame, meta)
    report.frame = frame
    return report
