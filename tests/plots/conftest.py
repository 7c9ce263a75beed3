"""One small real sweep for every chart test: the shipped systems, evaluated by the SimPy simulator on a
synthetic Llama-3-8B trace (the trace engineer's survival-law generator), stored as result files."""

from __future__ import annotations

from pathlib import Path

import pytest
from plot_helpers import REPO, SYSTEMS

from cemsim.sweep.runner import run_sweep
from cemsim.trace.format import TraceWriter
from cemsim.trace.synthetic import synthetic_header, synthetic_steps


@pytest.fixture(scope="session")
def trace_256k(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "llama3-8b-256k.parquet"
    header = synthetic_header("llama3-8b", k=1024)
    with TraceWriter(path, header) as writer:
        for rec in synthetic_steps(header, context=256 * 1024, steps=1):
            writer.write(rec)
    return path


@pytest.fixture(scope="session")
def scaling_results(tmp_path_factory, trace_256k: Path) -> Path:
    """6 systems x 3 contexts x 2 batches, DES, one decode step each; returns the results.parquet path."""
    folder = tmp_path_factory.mktemp("scaling")
    systems = "\n".join(f"  - {REPO}/hwconfigs/{s}.yaml" for s in SYSTEMS)
    spec = folder / "scaling.yaml"
    spec.write_text(f"""\
name: scaling_test
options: {{steps: 1}}
trace: {trace_256k}
systems:
{systems}
axes:
  workload.context: [8K, 64K, 256K]
  workload.batch: [1, 32]
plots:
  - {{chart: context_scaling}}
  - {{chart: energy, batch: 1, contexts: [8K, 256K]}}
  - {{chart: time_breakdown, batch: 1}}
""")
    report = run_sweep(spec, folder / "out", workers=2, progress=False)
    assert set(report.frame["status"]) == {"ok"}, report.frame[["system", "error"]]
    return report.results_path
