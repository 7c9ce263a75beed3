"""Energy against DRAMsim3's own energy statistics (issue 13): same stream, same IDD currents (read from the
DRAMsim3 .ini by the engine's loader), the engine's command counts and rank-active time put through the
Micron TN-41-01 formulas. DRAMsim3's numbers (tests/dram/data/dramsim3_energy.json) come from running
DRAMsim3 itself (make_dramsim3_energy.py); nothing of DRAMsim3's code is in the engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cemsim.dram import EnergySpec, replay
from tests.dram.conftest import toy_spec
from tests.dram.test_reference import RECORDS, SUBSET, replay_record, replay_subset_record

DATA = Path(__file__).resolve().parent / "data"
DS3 = {
    (r["config"], r["pattern"], r["K"]): r
    for r in json.loads((DATA / "dramsim3_energy.json").read_text())["records"]
}
PARTS = {  # engine breakdown key -> DRAMsim3 statistic
    "activate_j": "act_energy_j",
    "read_j": "read_energy_j",
    "refresh_j": "ref_energy_j",
    "active_standby_j": "act_stb_energy_j",
    "precharge_standby_j": "pre_stb_energy_j",
}
REL = 1e-9  # same formulas on the same counts: equal up to rounding


def _check(res, ref: dict) -> None:
    s = res.stats
    assert s["end_tick_per_channel"][0] == ref["num_cycles"]
    assert s["commands"]["ACT"] == ref["num_act_cmds"]
    assert s["commands"]["REF"] == ref["num_ref_cmds"]
    for mine, theirs in PARTS.items():
        assert s["energy_breakdown_j"][mine] == pytest.approx(ref[theirs], rel=REL, abs=1e-18), mine
    assert s["energy_j"] == pytest.approx(ref["total_energy_j"], rel=REL)


DS3_SUBSET = [r for r in SUBSET if r["simulator"] == "dramsim3"]


@pytest.mark.slow
@pytest.mark.parametrize("rec", DS3_SUBSET, ids=[f"{r['pattern']}-K{r['K']}" for r in DS3_SUBSET])
def test_energy_equals_dramsim3_on_the_in_repo_lp5x_streams(rec):
    _check(replay_subset_record(rec), DS3[(rec["config"], rec["pattern"], rec["K"])])


DS3_RECORDS = [r for r in RECORDS if r["simulator"] == "dramsim3"]


@pytest.mark.slow
@pytest.mark.skipif(not DS3_RECORDS, reason="reference set not found beside the repository")
@pytest.mark.parametrize(
    "rec", DS3_RECORDS, ids=[f"{r['config']}-{r['pattern']}-K{r['K']}" for r in DS3_RECORDS]
)
def test_energy_equals_dramsim3_on_every_dramsim3_stream(rec):
    _check(replay_record(rec), DS3[(rec["config"], rec["pattern"], rec["K"])])


def test_standby_splits_at_the_rows_open_time_worked_by_hand():
    """One read to a closed bank of a 2-rank toy (tRCD 7, CL 10, BL 2; no refresh): ACT at 0, RD at 7, data
    done at 19, so the run lasts 20 ticks; rank 0 has a row open from tick 0 to the end, rank 1 never."""
    e = EnergySpec(act_j=1e-9, read_j=2e-9, background_w=1.0, precharge_standby_w=0.5)
    spec = toy_spec()
    spec = replace(spec, energy=e)
    res = replay(spec, rank=[0], bankgroup=[0], bank=[0], row=[3], column=[0], is_write=[0])
    s = res.stats
    assert s["end_tick_per_channel"] == [20]
    assert s["rank_active_fraction"] == pytest.approx(0.5)  # 20 of 2 x 20 rank-ticks
    t = 20 * spec.tck_s
    b = s["energy_breakdown_j"]
    assert b["active_standby_j"] == pytest.approx(1.0 * 0.5 * t)
    assert b["precharge_standby_j"] == pytest.approx(0.5 * 0.5 * t)
    assert s["energy_j"] == pytest.approx(1e-9 + 2e-9 + 0.75 * t)


def test_without_a_precharge_standby_figure_background_is_drawn_all_the_time():
    spec = replace(toy_spec(), energy=EnergySpec(background_w=2.0))
    s = replay(spec, rank=[1], bankgroup=[1], bank=[2], row=[5], column=[3], is_write=[0]).stats
    assert s["energy_breakdown_j"]["active_standby_j"] == pytest.approx(2.0 * s["simulated_s"])
    assert s["energy_breakdown_j"]["precharge_standby_j"] == 0.0
    assert np.isfinite(s["energy_j"])
