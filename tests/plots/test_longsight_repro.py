"""The LongSight reproduction (analysis/longsight_repro.yaml) reduced to one model, one context and one
scenario: the shipped trace projected, the sweep run, the side-by-side table built from its results file, and
the table checked against the rows it came from and the batch against the capacity model's edge."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cemsim.config.loader import load_system
from cemsim.errors import CemsimError
from cemsim.plots import longsight
from cemsim.plots.charts import plot_results
from cemsim.sim.capacity import check_fit
from cemsim.sim.simulate import prepare
from cemsim.sweep.runner import run_sweep
from cemsim.sweep.spec import load_spec
from cemsim.sweep.store import read_results
from cemsim.trace.format import TraceReader
from cemsim.trace.projection import project_file

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "analysis" / "longsight_repro.yaml"
CONTEXT = 131072


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Path]:
    tmp = tmp_path_factory.mktemp("longsight")
    trace = tmp / "llama3-8b.parquet"
    project_file(  # past SmolLM2's 8K positions, as the spec's traces are (docs/validation.md)
        [REPO / "traces" / "smollm2-4k.parquet"],
        trace,
        context=CONTEXT,
        target="llama3-8b",
        steps=1,
        allow_extrapolation=True,
    )
    spec = yaml.safe_load(SPEC.read_text())
    spec["systems"] = [str(REPO / s) for s in spec["systems"]]
    spec["axes"] = {
        "workload.batch": [1, "max"],
        "workload.model": ["llama3-8b"],
        "workload.context": ["128K"],
        "workload.attention.filter_ratio": [20],
    }
    path = tmp / "reduced.yaml"
    path.write_text(yaml.safe_dump(spec))
    report = run_sweep(path, tmp / "out", trace=str(tmp / "{model}.parquet"), workers=1, progress=False)
    frame, _ = read_results(report.results_path)
    return trace, frame, report.results_path


def test_the_shipped_spec_is_the_papers_setup() -> None:
    spec = load_spec(SPEC)
    names = [load_system(p).system.name for p in spec.systems]
    assert names == ["h100", "h100x2-dp", "h100x2", "h100-drex"]
    assert spec.axes["workload.context"] == ["32K", "64K", "128K", "256K", "512K", "1M"]
    assert spec.axes["workload.model"] == ["llama3-1b", "llama3-8b"]
    assert spec.axes["workload.attention.filter_ratio"][0] == longsight.PAPER_FILTER_RATIO
    assert spec.axes["workload.batch"] == [1, "max"]  # one user, and as many as each system holds
    att = load_system(REPO / "hwconfigs" / "h100-drex.yaml", spec.overrides).system.workload.attention
    assert (att.window, att.sinks) == (1024, 16)
    assert [att.k_for(c << 10) for c in (32, 64, 128, 256, 1024)] == [256, 512, 1024, 1024, 1024]
    # the models' shapes as the paper gives them (LongSight, section 8)
    for model, shape in {"llama3-1b": (16, 32, 8, 64), "llama3-8b": (32, 32, 8, 128)}.items():
        geo = load_system(REPO / "hwconfigs" / "h100.yaml", {"workload.model": model}).system.geometry
        assert (geo.layers, geo.q_heads, geo.kv_heads, geo.head_dim) == shape
    dp = load_system(REPO / "hwconfigs" / "h100x2-dp.yaml").system.gpu
    assert (dp.count, dp.parallelism) == (2, "data")


@pytest.mark.slow
def test_every_system_runs_at_the_capacity_models_edge(reduced) -> None:
    trace, frame, _ = reduced
    assert set(frame["status"]) == {"ok"} and sorted(frame["batch_rule"]) == ["given"] * 4 + ["max"] * 4
    assert set(frame.loc[frame["batch_rule"] == "given", "batch"]) == {1}
    frame = frame[frame["batch_rule"] == "max"]
    with TraceReader(trace) as reader:
        header, steps = reader.header, list(reader.iter_steps(topk=False))
    for _, row in frame.iterrows():
        base = next(p for p in load_spec(SPEC).systems if p.stem == row["base"])
        system = load_system(
            base,
            {
                "workload.model": "llama3-8b",
                "workload.context": CONTEXT,
                "workload.attention.filter_ratio": 20,
            },
        ).system
        prep = prepare(system, header, steps, context=CONTEXT, batch=1)
        w = prep.works[0]

        def fits(b: int, prep=prep, w=w) -> bool:
            return check_fit(prep.system, prep.kind, prep.sizes, CONTEXT, b, w.window, w.sinks).fits

        batch = int(row["batch"])
        assert fits(batch) and not fits(batch + 1), row["system"]
        assert math.isclose(row["throughput_tokens_per_s"], batch / row["latency_per_token_s"], rel_tol=1e-9)
    users = frame.set_index("system")["batch"].to_dict()  # the most users each holds
    # by hand: (80 GB - 16.06 GB of weights) / 17.18 GB of KV per user at 128K; DReX: 512 GB / (KV + signs)
    assert users["h100"] == 3 and users["h100x2-dp"] == 6 and users["h100-drex"] == 28


@pytest.mark.slow
def test_the_table_is_the_ratio_of_its_systems_rows(reduced) -> None:
    _, frame, _ = reduced
    table = longsight.side_by_side(frame)
    assert len(table) == 1
    row = table.iloc[0]
    one = frame[frame["batch_rule"] == "given"].set_index("system")
    assert math.isclose(row["gpu_latency_1_ms"], one.loc["h100", "latency_per_token_s"] * 1e3)
    assert math.isclose(
        row["latency_ratio_1"],
        one.loc["h100", "latency_per_token_s"] / one.loc["h100-drex", "latency_per_token_s"],
    )
    by = frame[frame["batch_rule"] == "max"].set_index("system")
    gpu, cem, dp, tp = (by.loc[s] for s in ("h100", "h100-drex", "h100x2-dp", "h100x2"))
    assert row["gpu_users"] == gpu["batch"] and row["cem_users"] == cem["batch"]
    assert row["scenario"] == "20x (paper)" and row["k"] == 1024 and row["longest_gpu_context"]
    assert math.isclose(row["latency_ratio"], gpu["latency_per_token_s"] / cem["latency_per_token_s"])
    assert math.isclose(row["latency_ratio"], row["gpu_latency_ms"] / row["cem_latency_ms"])
    for key, base in (("gpu", gpu), ("dp", dp), ("tp", tp)):
        expect = cem["throughput_tokens_per_s"] / base["throughput_tokens_per_s"]
        assert math.isclose(row[f"throughput_ratio_{key}"], expect)
        assert math.isclose(row[f"throughput_ratio_{key}"], row["cem_throughput"] / row[f"{key}_throughput"])
    text = longsight.markdown(table)
    lines = [ln for ln in text.splitlines() if ln.startswith("| llama3-8b")]
    assert len(lines) == 1 and "longest on one H100" in lines[0] and "8.1-9.6x" in lines[0]
    assert f"{row['throughput_ratio_gpu']:.2f}" in lines[0]
    assert f"{row['latency_ratio_1']:.2f} / {row['latency_ratio']:.2f}" in lines[0]


@pytest.mark.slow
def test_the_chart_and_the_table_command_read_the_results_file(reduced, tmp_path: Path, capsys) -> None:
    _, _, results = reduced
    written = plot_results([results], tmp_path)
    assert {p.name for p in written} == {"longsight_repro.png", "longsight_repro.svg"}
    assert longsight.main([str(results)]) == 0
    assert "| llama3-8b | 128K (longest on one H100)" in capsys.readouterr().out
    out = tmp_path / "table.md"
    assert longsight.main([str(results), "--out", str(out)]) == 0
    assert out.read_text().startswith("| model | context |")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- longsight:headline:begin -->\n<!-- longsight:headline:end -->\n"
        "<!-- longsight:table:begin -->\n<!-- longsight:table:end -->\n"
    )
    assert longsight.main([str(results), "--doc", str(doc)]) == 0
    filled = doc.read_text()
    assert "| llama3-8b | 256K |" not in filled  # the reduced run has 128K only
    assert "| llama3-8b | 128K | 3 / 28 | 20x (paper) |" in filled  # headline: users H100 / LongSight
    assert longsight.main([str(results), "--doc", str(tmp_path / "none.md")]) == 1


def test_gap_is_zero_inside_the_papers_range_and_relative_outside() -> None:
    assert longsight.gap(9.0, (8.1, 9.6)) == 0.0
    assert math.isclose(longsight.gap(4.05, (8.1, 9.6)), -0.5)
    assert math.isclose(longsight.gap(19.2, (8.1, 9.6)), 1.0)
    assert math.isnan(longsight.gap(math.nan, (8.1, 9.6)))


def test_doc_blocks_are_replaced_and_a_missing_block_is_an_error(tmp_path: Path) -> None:
    text = "intro\n<!-- longsight:table:begin -->\nold\n<!-- longsight:table:end -->\noutro\n"
    out = longsight.replace_blocks(text, {"table": "| new |\n"}, "doc.md")
    assert out == "intro\n<!-- longsight:table:begin -->\n| new |\n<!-- longsight:table:end -->\noutro\n"
    assert longsight.replace_blocks(out, {"table": "| new |\n"}, "doc.md") == out  # idempotent
    with pytest.raises(CemsimError, match=r"doc\.md: no '<!-- longsight:headline:begin -->'"):
        longsight.replace_blocks(text, {"headline": "x"}, "doc.md")
