"""Golden timeline: the exact (time, component, event) list of one small simulated step.

A change to the model that moves any event shows here. When the change is intended, regenerate with
CEMSIM_REGEN_GOLDEN=1 pytest tests/sim/test_golden.py and review the diff of the JSON file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cemsim.sim.simulate import prepare, simulate
from cemsim.sim.timeline import event_tuples, trace_events
from tests.sim.conftest import REPO, load, make_header, make_step

GOLDEN = Path(__file__).parent / "golden" / "timeline_tiny_drex.json"
TINY = Path(__file__).parent / "data" / "tiny" / "config.json"


def tiny_result():
    # calibration constants pinned here, so recalibrating a preset does not move the golden: it pins mechanics
    system = load(
        REPO / "hwconfigs" / "h100-drex.yaml",
        **{"workload.model": str(TINY), "gpu.layer_overhead": "15 us", "workload.attention.k": 64},
    )
    header = make_header(system.geometry, k=64)
    prep = prepare(system, header, [make_step(header, 4096, survival=0.1, seed=7)], batch=2)
    return simulate(prep, timeline=True)


def test_timeline_matches_golden():
    got = [list(t) for t in event_tuples(tiny_result().spans)]
    if os.environ.get("CEMSIM_REGEN_GOLDEN"):
        GOLDEN.write_text("[\n" + ",\n".join(json.dumps(t) for t in got) + "\n]\n")
    want = json.loads(GOLDEN.read_text())
    assert got == want


def test_timeline_shape_and_perfetto_format():
    res = tiny_result()
    tracks = {s.track for s in res.spans}
    assert {"gpu0", "link.to_device", "link.to_host"} <= tracks
    assert any(t.startswith("nma") for t in tracks)
    doc = trace_events(res.spans, res.system)
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(res.spans)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in xs)
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == tracks
    # every span lies within the simulated step
    assert max(s.end for s in res.spans) <= res.step_latencies_s[0] + 1e-12
