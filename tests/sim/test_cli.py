"""`cemsim run` end to end on trace files: JSON contract, run directory, timeline, overrides, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cemsim.cli import main
from cemsim.sim.analytic import analytic
from cemsim.sim.simulate import prepare
from cemsim.trace.format import TraceReader, TraceWriter
from tests.sim.conftest import HWCONFIGS, REPO, load, make_header, make_step

KEYS = {
    "system",
    "context_tokens",
    "batch",
    "fits",
    "latency_per_token_s",
    "throughput_tokens_per_s",
    "energy_per_token_j",
    "energy_breakdown_j",
    "time_breakdown_s",
    "bandwidth_utilization",
    "bytes_moved",
}
DREX = str(REPO / "hwconfigs" / "h100-drex.yaml")


def write_trace(path, model: str, context: int, steps: int = 2):
    geo = load(DREX, **{"workload.model": model}).geometry
    header = make_header(geo)
    with TraceWriter(path, header) as w:
        for i in range(steps):
            w.write(make_step(header, context + i, step=i))
    return path


@pytest.fixture(scope="module")
def trace_128k(tmp_path_factory):
    return write_trace(tmp_path_factory.mktemp("tr") / "l8-128k.parquet", "llama3-8b", 131072)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["run", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_has_the_contract(capsys, trace_128k):
    code, out, _ = run_cli(capsys, DREX, "--trace", str(trace_128k), "--json")
    assert code == 0
    d = json.loads(out)
    assert d.keys() >= KEYS
    assert d["fits"] and d["context_tokens"] == 131072 and d["batch"] == 1
    assert d["latency_per_token_s"] == pytest.approx(sum(d["time_breakdown_s"].values()))
    assert all(0.0 <= v <= 1.0 for v in d["bandwidth_utilization"].values())
    # beside the DES, the independent analytic model's estimate of the same run (how close the two must be
    # is test_analytic.py's: here one user, 128K, within 2%)
    system = load(DREX)
    with TraceReader(trace_128k) as reader:
        prep = prepare(system, reader.header, reader.iter_steps(topk=False))
    assert d["analytic"]["latency_per_token_s"] == pytest.approx(
        analytic(prep).latency_per_token_s, rel=1e-12
    )
    assert d["analytic"]["latency_per_token_s"] == pytest.approx(d["latency_per_token_s"], rel=0.02)
    lo, hi = d["analytic"]["latency_bounds_s"]["lower"], d["analytic"]["latency_bounds_s"]["upper"]
    assert lo <= d["latency_per_token_s"] <= hi


def test_table_shows_bounds_and_the_attention_replayed(capsys, trace_128k):
    code, out, _ = run_cli(capsys, DREX, "--trace", str(trace_128k), "--context", "32K")
    assert code == 0
    assert "analytic estimate" in out and "analytic bounds (lower - upper)" in out
    # the k schedule (256/512/1024 at 32K/64K/128K) gives 256 at 32K
    line = next(ln for ln in out.splitlines() if ln.startswith("attention:"))
    assert "longsight" in line and "k 256" in line and "window 1024, sinks 16" in line


def test_run_directory_and_timeline(capsys, trace_128k, tmp_path):
    out_dir, tl = tmp_path / "run", tmp_path / "step.json"
    code, out, _ = run_cli(
        capsys,
        DREX,
        "--trace",
        str(trace_128k),
        "--batch",
        "2",
        "--context",
        "32K",
        "--out",
        str(out_dir),
        "--timeline",
        str(tl),
    )
    assert code == 0 and "latency per token" in out
    assert json.loads((out_dir / "config.json").read_text())
    result = json.loads((out_dir / "result.json").read_text())
    assert result["des"]["context_tokens"] == 32768 and result["des"]["context_scaled_from"] == 131073
    stats = pd.read_parquet(out_dir / "stats.parquet")
    assert {"bytes_per_token", "energy_j_per_token"} <= set(stats.metric)
    assert len(pd.read_parquet(out_dir / "steps.parquet")) == 2
    events = json.loads(tl.read_text())["traceEvents"]
    assert any(e.get("name") == "filter_epoch" for e in events)
    assert not list(tmp_path.rglob("*.tmp"))


def test_set_overrides_reach_the_config(capsys, trace_128k):
    _, base, _ = run_cli(capsys, DREX, "--trace", str(trace_128k), "--json")
    _, slow, _ = run_cli(capsys, DREX, "--trace", str(trace_128k), "--json", "--set", "link.latency=5 us")
    assert json.loads(slow)["latency_per_token_s"] > json.loads(base)["latency_per_token_s"]


def test_does_not_fit_is_reported_not_failed(capsys, trace_128k):
    code, out, _ = run_cli(
        capsys, str(REPO / "hwconfigs" / "h100.yaml"), "--trace", str(trace_128k), "--batch", "16"
    )
    assert code == 0 and "does not fit" in out and "GPU HBM" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--context", "2M"], "cemsim trace project"),
        (["--context", "lots"], "--context"),
        (["--set", "nonsense"], "dotted.path=value"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_flags_exit_1_with_one_paragraph(capsys, trace_128k, args, message):
    code, _, err = run_cli(capsys, DREX, "--trace", str(trace_128k), *args)
    assert code == 1 and message in err and "Traceback" not in err


def test_geometry_mismatch_exits_1(capsys, tmp_path):
    small = write_trace(tmp_path / "l1.parquet", "llama3-1b", 8192, steps=1)
    code, _, err = run_cli(capsys, DREX, "--trace", str(small))
    assert code == 1 and "geometry" in err and "l1.parquet" in err


@pytest.mark.slow
def test_every_hwconfig_runs_from_4k_to_1m(capsys, tmp_path):
    trace = write_trace(tmp_path / "l8-1m.parquet", "llama3-8b", 1 << 20, steps=1)
    for hw in HWCONFIGS:
        for ctx in ("4K", "32K", "128K", "512K", "1M"):
            code, out, err = run_cli(capsys, str(hw), "--trace", str(trace), "--context", ctx, "--json")
            assert code == 0, err
            d = json.loads(out)
            assert d["fits"] == (d["latency_per_token_s"] is not None)
            if not d["fits"]:
                assert d["why_not"]
