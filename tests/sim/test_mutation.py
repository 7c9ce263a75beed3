"""Mutation test: a deliberate error in a simulator cost function must turn some check red (issue 17).

Before issue 17 the "twin" shared the simulator's cost functions, so dropping the row-activation cost from
DReX's fetch moved the simulated 1M-token step from 12.14 to 10.39 ms, moved the twin with it, and every
test stayed green. Here each mutant breaks one cost in the simulator only, then runs the checks the suite
runs unmutated (DES against the independent analytic model, the held-out H100 measurements, the DReX
slice worked by hand); at least one must fail. The checks pass unmutated: test_analytic.py,
test_validation.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import cemsim.sim.gpu as gpu_module
from cemsim.sim import cem as cem_module
from cemsim.sim.link import Link, link_occupancy
from tests.sim.conftest import REPO
from tests.sim.test_analytic import agreement_failures, prepared
from tests.sim.test_drex_validation import drex_slice_failures
from tests.sim.test_validation import hbm_measurement_failures

HW = REPO / "hwconfigs"


def drop_drex_row_activations(mp: pytest.MonkeyPatch) -> None:
    """DReX's survivor and value fetches lose their row-miss cost (the issue's mutation)."""
    if hasattr(cem_module, "fetch_time"):
        original = cem_module.fetch_time
        mp.setattr(cem_module, "fetch_time", lambda cfg, shape, keys, rows: original(cfg, shape, keys, 0.0))
        return
    try:
        from cemsim.sim.drex_timing import DrexTimer  # the DRAM-engine-driven DReX (issue 13)
    except ImportError:
        DrexTimer = None
    if DrexTimer is not None and hasattr(DrexTimer, "fetch_times"):
        mp.setattr(DrexTimer, "fetch_times", lambda self, phases: [0.0] * len(phases))
        return
    pytest.fail(
        "the DReX fetch-cost entry point this mutation breaks is gone (neither cemsim.sim.cem.fetch_time nor "
        "cemsim.sim.drex_timing.DrexTimer.fetch_times exists): point drop_drex_row_activations at the "
        "function that now prices the NMA's survivor and value fetches"
    )


def double_hbm_bandwidth(mp: pytest.MonkeyPatch) -> None:
    """GPU kernels read HBM at twice the configured sustained bandwidth."""
    original = gpu_module.hbm_read_time
    mp.setattr(gpu_module, "hbm_read_time", lambda cfg, nbytes: original(cfg, nbytes / 2))


def drop_link_latency(mp: pytest.MonkeyPatch) -> None:
    """Link transfers occupy their direction but no longer fly (the latency after the occupancy is lost)."""

    def transfer(self, direction, nbytes, label, priority=0, account=True):  # type: ignore[no-untyped-def]
        if nbytes <= 0:
            return
        if account:
            self.rec.add_bytes(f"{self.name}.{direction}", nbytes)
        with self.dirs[direction].request(priority=priority) as req:
            yield req
            occ = link_occupancy(self.cfg, nbytes)
            yield self.env.timeout(occ)
            self.rec.add_busy(f"{self.name}.{direction}", occ)

    mp.setattr(Link, "transfer", transfer)


CHECKS: dict[str, Callable[[], list[str]]] = {
    "agreement h100 4K": lambda: agreement_failures(prepared(HW / "h100.yaml", 4096, 1)),
    "agreement h100x2 4K": lambda: agreement_failures(prepared(HW / "h100x2.yaml", 4096, 1)),
    "agreement h100-drex 4K": lambda: agreement_failures(prepared(HW / "h100-drex.yaml", 4096, 1)),
    "agreement h100-drex 64K": lambda: agreement_failures(prepared(HW / "h100-drex.yaml", 65536, 1)),
    "agreement h100-host-offload 4K": lambda: agreement_failures(
        prepared(HW / "h100-host-offload.yaml", 4096, 1)
    ),
    "held-out H100 HBM measurements": hbm_measurement_failures,
    "DReX slice by hand": drex_slice_failures,
}


def red_checks(mutate: Callable[[pytest.MonkeyPatch], None]) -> dict[str, list[str]]:
    with pytest.MonkeyPatch.context() as mp:
        mutate(mp)
        return {name: fails for name, check in CHECKS.items() if (fails := check())}


@pytest.mark.parametrize("mutate", [drop_drex_row_activations, double_hbm_bandwidth, drop_link_latency])
def test_a_broken_cost_function_turns_a_check_red(mutate):
    red = red_checks(mutate)
    assert red, f"{mutate.__name__}: every check stayed green"
    print(f"{mutate.__name__}: caught by {sorted(red)}")


def test_the_checks_are_green_unmutated():
    assert red_checks(lambda mp: None) == {}
