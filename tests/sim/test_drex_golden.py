"""Golden DReX phases: tiny hand-built cases whose engine timelines are pinned exactly, with the reasoning.

LPDDR5X-8533 (cemsim's DRAM preset, tCK 0.9375 ns, ticks below): nRCD 20, nCL 23, nBL 2, nRRD_S 6, an ACT is
ACT-1 + ACT-2 (one command-bus slot each), and the controller sends a CAS (WCK sync) before the first read
while the data clock is off. A change to the engine, the key layout or the phase model that moves any of
these shows here; if intended, re-derive the numbers by hand before updating them.
"""

from __future__ import annotations

import numpy as np

from cemsim.dram import replay
from cemsim.sim.drex_timing import DrexTimer
from tests.sim.conftest import REPO, load

DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def timer(mapping: str = "RoBaRaCoCh") -> DrexTimer:
    cem = load(DREX, **{"cem.layout.key_mapping": mapping}).cem
    return DrexTimer(cem, head_dim=128, key_bytes=256, group=4, kv_heads=8)


def test_four_keys_in_four_bank_groups():
    # Keys 0..3 under RoBaRaCoBgCh: one 32 B burst each per channel, bank groups 0..3 of rank 0, bank 0,
    # row 0, column 0. ACT-1 at 0, 6, 12, 18 (tRRD_S = 6 between bank groups of one rank); each RD nRCD = 20
    # after its ACT-1; data nCL + nBL = 25 after the RD; the first read also waits one tick for the CAS that
    # wakes the data clock. So the keys return at 46, 51, 57, 63 ticks.
    t = timer("RoBaRaCoBgCh")
    c = t.layout.data_coordinates(np.arange(4))
    assert list(c["bankgroup"]) == [0, 1, 2, 3] and set(c["row"]) == {0} and set(c["column"]) == {0}
    res = replay(
        t.spec,
        **{f: c[f] for f in ("rank", "bankgroup", "bank", "row", "column")},
        is_write=np.zeros(4, bool),
        depth=32,
        key_id=c["key"],
    )
    assert list(res.done) == [46, 51, 57, 63]
    assert t.fetch_times([np.arange(4)]) == [63 * t.tck]


def test_one_bank_group_serialises_row_hits_at_tccd_l():
    # The preset's RoBaRaCoCh: keys 0..3 share one row of bank group 0 (columns 0..3): one ACT, then RDs
    # tCCD_L = 4 apart: 46, 50, 54, 58 (the first as above). RoBaRaCoBgCh's keys 0, 4, 8, 12 likewise.
    for mapping, keys in (("RoBaRaCoCh", [0, 1, 2, 3]), ("RoBaRaCoBgCh", [0, 4, 8, 12])):
        t = timer(mapping)
        c = t.layout.data_coordinates(np.array(keys))
        assert set(c["bankgroup"]) == {0} and set(c["row"]) == {0} and list(c["column"]) == [0, 1, 2, 3]
        (fetch,) = t.fetch_times([np.array(keys)])
        assert round(fetch / t.tck) == 58


def test_full_epoch_stages():
    # Broadcast PFUs: one bank per bank group stands for its group's lockstep banks. Each gets ACT-1, ACT-2
    # and the PFU command nRCD after its ACT-1, then holds the bank ceil(128 x 1.25 ns / tCK) = 171 ticks.
    # The 64 bitmap bursts (128 banks x 16 B / 32 B) then alternate bank groups: 2 ticks each, after nCL.
    t = timer()
    gen, read = t.epoch_stages(1024)
    assert round(gen / t.tck) == 197
    assert round(read / t.tck) == 146
