"""Spec parsing and expansion: errors name file, line and field; axes expand as product and zip; invalid
points are kept and reported; point hashes follow the resolved config and the trace's bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import EVAL, REPO, write_spec

from cemsim.sweep.expand import expand
from cemsim.sweep.spec import SpecError, load_spec

H100 = f"{REPO}/hwconfigs/h100.yaml"
DREX = f"{REPO}/hwconfigs/h100-drex.yaml"


def test_product_times_zip_times_systems(tmp_path: Path) -> None:
    spec = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            f"""\
evaluate: {EVAL}
systems: [{H100}, {DREX}]
axes:
  workload.batch: [1, 8, 32]
zip:
  - workload.context: [32K, 64K, 128K, 256K]
    workload.attention.k: [256, 512, 1024, 1024]
""",
        )
    )
    points = expand(spec)
    assert len(points) == 2 * 3 * 4
    assert all(p.valid for p in points)
    pairs = {(p.system.workload.context, p.system.workload.attention.k) for p in points}
    assert pairs == {(32768, 256), (65536, 512), (131072, 1024), (262144, 1024)}
    assert len({p.point_id for p in points}) == len(points)
    # axis values are recorded as resolved SI values ("32K" -> 32768)
    assert {p.resolved["workload.context"] for p in points} == {32768, 65536, 131072, 262144}


def test_invalid_points_are_kept_with_the_loader_message(tmp_path: Path) -> None:
    spec = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            f"""\
evaluate: {EVAL}
systems: [{H100}]
axes:
  workload.batch: [1, 0, 4]
""",
        )
    )
    points = expand(spec)
    bad = [p for p in points if not p.valid]
    assert len(points) == 3 and len(bad) == 1
    assert bad[0].params == {"workload.batch": 0}
    assert "workload.batch" in bad[0].error and "greater than 0" in bad[0].error
    assert bad[0].point_id is None


def test_hash_follows_resolved_config_and_trace_bytes(tmp_path: Path) -> None:
    trace = tmp_path / "t.bin"
    trace.write_bytes(b"one")
    body = f"evaluate: {EVAL}\nsystems: [{H100}]\ntrace: {trace}\naxes:\n  workload.context: [131072, 128K, 64K]\n"
    spec = load_spec(write_spec(tmp_path / "s.yaml", body))
    a = expand(spec)
    assert a[0].point_id == a[1].point_id != a[2].point_id  # 131072 and "128K" are the same config
    assert a[0].point_id == expand(load_spec(tmp_path / "s.yaml"))[0].point_id  # stable across runs
    trace2 = tmp_path / "t2.bin"
    trace2.write_bytes(b"two")
    spec2 = load_spec(write_spec(tmp_path / "s2.yaml", body.replace(str(trace), str(trace2))))
    assert expand(spec2)[0].point_id != a[0].point_id


def test_trace_template_and_missing_trace(tmp_path: Path) -> None:
    (tmp_path / "ctx4096.trace").write_bytes(b"x")
    spec = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            f"""\
evaluate: {EVAL}
systems: [{H100}]
trace: ctx{{context}}.trace
axes:
  workload.context: [4K, 8K]
""",
        )
    )
    a, b = expand(spec)
    assert a.valid and a.trace == str(tmp_path / "ctx4096.trace")
    assert not b.valid and "ctx8192.trace does not exist" in b.error


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        (f"systems: [{H100}]\naxes:\n  workload.contxt: [1]\n", 3, "did you mean 'workload.context'"),
        (
            f"systems: [{H100}]\naxes:\n  gpu.hbm.peak_bandwith: [1]\n",
            3,
            "did you mean 'gpu.hbm.peak_bandwidth'",
        ),
        (
            "systems:\n  - hwconfigs/h100.yaml\n  - hwconfigs/nope.yaml\n",
            3,
            "'hwconfigs/nope.yaml' not found",
        ),
        (f"systems: [{H100}]\naxis:\n  workload.batch: [1]\n", 2, "did you mean 'axes'"),
        (
            f"systems: [{H100}]\nzip:\n  - workload.batch: [1, 2]\n    workload.context: [4K]\n",
            3,
            "equal lengths",
        ),
        (f"systems: [{H100}]\naxes:\n  workload.batch: []\n", 3, "non-empty list"),
        (f"systems: [{H100}]\naxes: [workload.batch\n", 3, "malformed YAML"),
        ("axes:\n  workload.batch: [1]\n", None, "needs 'systems:'"),
        (f"systems: [{H100}]\nkind: simulate\n", 2, "kind must be one of"),
        (f"systems: [{H100}]\nevaluate: not_a_path\n", 2, "import path"),
    ],
)
def test_bad_specs_name_file_line_and_field(tmp_path: Path, body: str, line: int | None, needle: str) -> None:
    path = write_spec(tmp_path / "bad.yaml", body)
    with pytest.raises(SpecError) as info:
        expand(load_spec(path))
    msg = str(info.value)
    assert str(path) in msg and needle in msg
    if line is not None:
        assert f"line {line}" in msg


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such sweep spec"):
        load_spec(tmp_path / "absent.yaml")


def test_path_known_only_to_some_systems_is_invalid_there(tmp_path: Path) -> None:
    # cem.nma.engines exists for DReX only: the GPU-only points are invalid, not the whole spec
    spec = load_spec(
        write_spec(
            tmp_path / "s.yaml",
            f"""\
evaluate: {EVAL}
systems: [{H100}, {DREX}]
axes:
  cem.nma.engines: [8, 16]
""",
        )
    )
    points = expand(spec)
    assert [p.valid for p in points] == [False, False, True, True]
    assert {p.system.cem.nma.engines for p in points if p.valid} == {8, 16}


def test_eval_specs_need_no_system_and_hash_their_settings(tmp_path: Path) -> None:
    spec = load_spec(
        write_spec(
            tmp_path / "e.yaml",
            """\
kind: eval
options: {tokens: 2048, window: 256}
axes:
  threshold: [0, 40, 44]
  itq: [true, false]
""",
        )
    )
    assert spec.evaluate == "cemsim.sweep.evaluate:eval_point"
    points = expand(spec)
    assert len(points) == 6 and all(p.valid and p.system is None for p in points)
    assert len({p.point_id for p in points}) == 6
    task = points[0].task(spec.options)
    assert task.params == {"threshold": 0, "itq": True} and task.options == {"tokens": 2048, "window": 256}
    # the evaluator's options are part of a point's identity
    other = load_spec(
        write_spec(tmp_path / "e2.yaml", (tmp_path / "e.yaml").read_text().replace("2048", "4096"))
    )
    assert expand(other)[0].point_id != points[0].point_id


def test_simulator_sweep_without_a_trace_is_a_spec_error(tmp_path: Path) -> None:
    from cemsim.sweep.runner import run_sweep

    spec = write_spec(tmp_path / "s.yaml", f"systems: [{H100}]\naxes:\n  workload.batch: [1, 2]\n")
    with pytest.raises(SpecError, match="--trace"):
        run_sweep(spec, tmp_path / "out", progress=False)
