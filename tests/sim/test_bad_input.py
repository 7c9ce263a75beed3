"""Bad input gets a clear CemsimError or a "does not fit" result; every run is bounded."""

from __future__ import annotations

import dataclasses

import pytest

from cemsim.errors import CemsimError
from cemsim.sim.analytic import analytic
from cemsim.sim.registry import sim_class
from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import REPO, load, make_header, make_step

DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def test_geometry_mismatch_names_both_geometries():
    system = load(DREX)
    other = load(DREX, **{"workload.model": "llama3-1b"}).geometry
    header = make_header(other)
    with pytest.raises(CemsimError, match=r"\(16, 8, 64\).*\(32, 8, 128\)"):
        prepare(system, header, [make_step(header, 8192)], where="x.parquet")


def test_context_beyond_the_trace_points_at_projection():
    system = load(DREX)
    header = make_header(system.geometry)
    with pytest.raises(CemsimError, match="cemsim trace project"):
        prepare(system, header, [make_step(header, 8192)], context=1 << 20)


def test_workload_k_beyond_the_topk_unit():
    system = load(DREX, **{"workload.attention.k": 4096})  # the workload's k is replayed, not the trace's
    header = make_header(system.geometry)
    with pytest.raises(CemsimError, match="topk_max"):
        prepare(system, header, [make_step(header, 8192)])


def test_inconsistent_record_is_a_clear_error():
    system = load(DREX)
    header = make_header(system.geometry)
    rec = make_step(header, 8192)
    rec = dataclasses.replace(rec, survivors=rec.survivors + 1)
    with pytest.raises(CemsimError, match="do not add up"):
        prepare(system, header, [rec])


def test_empty_trace():
    system = load(DREX)
    with pytest.raises(CemsimError, match="no decode steps"):
        prepare(system, make_header(system.geometry), [])


def test_batch_that_does_not_fit_is_a_result_with_reasons():
    system = load(REPO / "hwconfigs" / "h100.yaml")
    header = make_header(system.geometry)
    prep = prepare(system, header, [make_step(header, 131072)], batch=8)
    res = simulate(prep)
    assert not res.fits and res.latency_per_token_s is None
    assert "GPU HBM" in res.why_not[0] and "8 user(s)" in res.why_not[0]
    # 16 GB of weights + 8 x 17.2 GB of KV over 80 GB GPUs
    assert res.gpus_needed == 2
    assert res.to_json_dict()["fits"] is False
    assert not analytic(prep).fits


def test_cem_capacity_is_checked():
    system = load(DREX)
    header = make_header(system.geometry)
    res = simulate(prepare(system, header, [make_step(header, 131072)], batch=64))
    assert not res.fits and any("CEM device" in w for w in res.why_not)


def test_event_bound_stops_the_run_and_says_so():
    system = load(DREX, **{"simulation.max_events": 500})
    header = make_header(system.geometry)
    res = simulate(prepare(system, header, [make_step(header, 8192)]))
    assert res.truncated is not None and "max_events" in res.truncated
    assert res.events == 500 and res.steps == 0


def test_time_bound_stops_the_run_and_says_so():
    system = load(DREX, **{"simulation.max_simulated_time": "1 ms"})
    header = make_header(system.geometry)
    res = simulate(prepare(system, header, [make_step(header, 8192)]))
    assert res.truncated is not None and "max_simulated_time" in res.truncated


def test_unknown_sim_impl_lists_the_valid_ones():
    with pytest.raises(CemsimError, match="cxl, nvlink, pcie"):
        sim_class("link", "ethernet")
