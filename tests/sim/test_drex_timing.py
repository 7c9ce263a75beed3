"""DReX phases on the DRAM engine: PFU epochs, survivor fetches, sampled mode, and bad device configs."""

from __future__ import annotations

import numpy as np
import pytest

from cemsim.errors import CemsimError
from cemsim.sim.drex_timing import DrexTimer, drex_dram_spec, pipeline
from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import REPO, load, make_header, make_step

DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def timer(**overrides: object) -> DrexTimer:
    cfg = load(DREX, **overrides).cem
    return DrexTimer(cfg, head_dim=128, key_bytes=256, group=4, kv_heads=8)


def test_pipeline_is_a_flow_shop():
    # three equal jobs through stages of 1, 2, 5: fill 8, then one bottleneck (5) per further job
    assert pipeline([[1, 1, 1], [2, 2, 2], [5, 5, 5]]) == [8, 13, 18]
    # a short last job still waits for the bottleneck stage to free up
    assert pipeline([[1, 1], [1, 1], [5, 1]]) == [7, 8]


def test_full_epoch_bitmap_readout_matches_drex():
    # one full epoch: 128 banks per channel; their bitmaps are 128 x 16 B = 2 KiB = 64 bursts of 32 B,
    # which at 17.07 GB/s take 120 ns after the first burst's read latency (CL): DReX gives 120.4 ns for
    # the bitmap transfer into the NMA.
    t = timer()
    gen, read = t.epoch_stages(1024)
    cl = t.spec.timing["nCL"] * t.tck
    assert read - cl == pytest.approx(120.4e-9, rel=0.1)
    # bitmap generation: one broadcast ACT, tRCD, then 128 column steps of 1.25 ns = 160 ns
    rcd = t.spec.timing["nRCD"] * t.tck
    assert 160e-9 + rcd <= gen < 160e-9 + rcd + 10e-9


def test_jedec_activation_limits_slow_the_pfus_down():
    broadcast, _ = timer().epoch_stages(1024)
    jedec, _ = timer(**{"cem.pfu.activation": "jedec"}).epoch_stages(1024)
    # one ACT per bank: 128 ACTs (ACT-1 + ACT-2) and 128 PFU commands on the channel's command bus
    assert jedec > broadcast + 128 * 3 * 0.9375e-9


def test_partial_epochs_are_set_by_the_fullest_channel():
    t = timer()
    full, _ = t.epoch_stages(1024)
    small, _ = t.epoch_stages(9)  # channel_then_bank: channel 0 holds 2 blocks, the others 1
    assert small < full


def test_fetch_extremes():
    t = timer()
    tck = t.tck
    # one key: unloaded latency ACT -> tRCD -> RD -> CL + burst, a few tens of ns
    (one,) = t.fetch_times([np.array([0])])
    assert 20e-9 < one < 80e-9
    # 8,192 consecutive keys (128 rows of 64 keys, all banks): RoBaRaCoCh keeps a row's 64 keys in one bank
    # group, so reads go tCCD_L = 2 bursts apart: half the channel's peak; RoBaRaCoBgCh alternates bank
    # groups and gets close to the peak
    (seq,) = t.fetch_times([np.arange(8192)])
    peak = 8192 * 32 / t.spec.channel_peak_bytes_per_s
    assert 2 * peak <= seq < 2.2 * peak
    (alternating,) = timer(**{"cem.layout.key_mapping": "RoBaRaCoBgCh"}).fetch_times([np.arange(8192)])
    assert peak <= alternating < 1.15 * peak
    # 2,048 keys, each in its own row of one bank: every fetch pays a row cycle tRC in that bank
    same_bank = np.arange(2048) * 8192  # 8,192 keys per row index under RoBaRaCoCh: bank 0, rank 0
    (conflicts,) = t.fetch_times([same_bank])
    assert conflicts >= 2047 * t.spec.timing["nRC"] * tck
    # and batching phases into one engine call gives each its own time
    assert t.fetch_times([np.array([0]), np.arange(8192), same_bank]) == [one, seq, conflicts]


def test_more_keys_in_flight_fetch_faster():
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(1 << 20, 4000, replace=False))
    times = [timer(**{"cem.nma.outstanding_keys": k}).fetch_times([pos])[0] for k in (1, 4, 32)]
    assert times[0] > times[1] > times[2]
    # one key at a time: every key waits for the previous one, so about a row miss each
    assert times[0] / 4000 > 30e-9


def test_sampled_mode_is_close_to_full_detail():
    system = load(DREX, **{"cem.dram_detail": "full"})
    header = make_header(system.geometry, k=1024)
    steps = [make_step(header, 300_000, survival=0.05, seed=3)]
    full = simulate(prepare(system, header, steps))
    sampled_sys = load(DREX, **{"cem.dram_detail": "sampled", "cem.sampled_phases": 8})
    sampled = simulate(prepare(sampled_sys, header, steps))
    assert sampled.latency_per_token_s == pytest.approx(full.latency_per_token_s, rel=0.02)
    wait_full = full.time_breakdown_s["attention_wait"]
    assert sampled.time_breakdown_s["attention_wait"] == pytest.approx(wait_full, rel=0.05)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cem.lpddr.burst": "64 B"}, "burst"),
        ({"cem.lpddr.row_buffer": "4 KiB"}, "row"),
        ({"cem.lpddr.bankgroups": 3}, "banks per bank group"),
        ({"cem.lpddr.device": "no-such-dram"}, "no-such-dram"),
        ({"cem.layout.key_mapping": "RoBaCo"}, "mapping"),
    ],
)
def test_bad_device_settings_are_clear_errors(overrides, message):
    with pytest.raises(CemsimError, match=message):
        timer(**overrides)


def test_spec_takes_drex_organisation_and_activation():
    cfg = load(DREX).cem
    spec = drex_dram_spec(cfg)
    assert spec.ranks * spec.bankgroups * spec.banks_per_group == cfg.banks_per_channel == 128
    assert spec.act_limits == "broadcast"
