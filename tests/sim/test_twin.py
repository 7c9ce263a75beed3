"""The analytic twin and the discrete-event model agree within 2% when nothing contends (batch 1)."""

from __future__ import annotations

import pytest

from cemsim.sim.analytic import analytic
from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import HWCONFIGS, load, make_header, make_step

TOL = 0.02


def _agree(des: float | None, twin: float | None) -> None:
    assert des is not None and twin is not None
    assert abs(des - twin) <= TOL * twin, (des, twin)


@pytest.mark.parametrize("hw", HWCONFIGS, ids=[p.stem for p in HWCONFIGS])
@pytest.mark.parametrize("context", [4096, 65536])
def test_twin_matches_des_at_batch_1(hw, context):
    system = load(hw)
    header = make_header(system.geometry)
    steps = [make_step(header, context, step=i) for i in range(2)]
    prep = prepare(system, header, steps, batch=1)
    des, twin = simulate(prep), analytic(prep)
    assert des.fits and des.truncated is None
    _agree(des.latency_per_token_s, twin.latency_per_token_s)
    _agree(des.energy_per_token_j, twin.energy_per_token_j)
    for phase, t in twin.time_breakdown_s.items():
        assert des.time_breakdown_s.get(phase, 0.0) == pytest.approx(t, rel=TOL, abs=1e-9)
    # the breakdown is the critical path: it sums to the latency
    assert sum(des.time_breakdown_s.values()) == pytest.approx(des.latency_per_token_s, rel=1e-9)


def test_twin_matches_when_the_scratchpad_forces_alternation():
    # a 64 KiB scratchpad holds 16K addresses: 30% survival at 1M tokens fills it every epoch
    system = load(
        "hwconfigs/h100-drex.yaml", **{"cem.nma.address_scratchpad": "64 KiB", "workload.model": "llama3-1b"}
    )
    header = make_header(system.geometry)
    prep = prepare(system, header, [make_step(header, 1 << 20, survival=0.3)], batch=1)
    des, twin = simulate(prep), analytic(prep)
    _agree(des.latency_per_token_s, twin.latency_per_token_s)
    roomy = prepare(
        load("hwconfigs/h100-drex.yaml", **{"workload.model": "llama3-1b"}),
        header,
        [make_step(header, 1 << 20, survival=0.3)],
        batch=1,
    )
    # alternating filter and scoring re-fills the epoch pipeline: slower than one long filtering run
    assert des.latency_per_token_s > simulate(roomy).latency_per_token_s
