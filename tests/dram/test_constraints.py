"""Micro-streams, one per timing constraint, against hand-calculated command times (toy timings in
conftest.py: nRCD 7, nRP 6, nRAS 15, nRC 21, nCL 10, nBL 2, nRRD_S/L 3/5, nFAW 20, nCCD_S/L 2/4, ...)."""

from __future__ import annotations

import numpy as np

from cemsim.dram import replay
from tests.dram.conftest import TOY_TIMING, toy_spec


def run(spec, reqs, **kw):
    """reqs: list of (rank, bankgroup, bank, row, column, is_write)."""
    a = np.array(reqs, dtype=np.int64)
    return replay(spec, rank=a[:, 0], bankgroup=a[:, 1], bank=a[:, 2], row=a[:, 3], column=a[:, 4],
                  is_write=a[:, 5], **kw)  # fmt: skip


def test_unloaded_conflict_latency_is_rp_rcd_cl_bl():
    # Ramulator 2's check (tests/latency_throughput/utils/checks.py): a row conflict on an idle channel
    # costs nRP + nRCD + nCL (+ the burst, which Ramulator's read latency includes).
    t = TOY_TIMING
    res = run(toy_spec(), [(0, 0, 0, 1, 0, 0), (0, 0, 0, 2, 0, 0)], depth=1)
    lat = res.done[1] - res.issued[1]
    assert res.row_class[1] == 2  # conflict
    assert lat == t["nRP"] + t["nRCD"] + t["nCL"] + t["nBL"] == 25
    # the first one found the bank closed: nRCD + nCL + nBL
    assert res.done[0] - res.issued[0] == 7 + 10 + 2


def test_fifth_act_in_a_rank_waits_for_tfaw():
    # ACTs to five closed banks of rank 0, alternating bank groups: tRRD alone would allow
    # 0, 3, 6, 9, 12; the fifth must wait until the first + nFAW = 20.
    reqs = [(0, i % 2, i // 2, 5, 0, 0) for i in range(5)]
    res = run(toy_spec(), reqs)
    acts = res.first_command
    assert list(acts[:4]) == [0, 3, 6, 9]
    assert acts[4] == acts[0] + TOY_TIMING["nFAW"] == 20
    # without the window the fifth would go at tRRD_L after the third (same group): 6 + 5 = 11 < 12
    res_wide = run(toy_spec(nFAW=4), reqs)
    assert res_wide.first_command[4] == 12


def test_trc_between_acts_to_one_bank():
    # same bank, two rows: ACT at 0, RD at 7, PRE at max(ACT + nRAS, RD + nRTP) = 15, ACT at
    # max(PRE + nRP, ACT + nRC); with nRC = 30 the row cycle binds.
    reqs = [(0, 0, 0, 1, 0, 0), (0, 0, 0, 2, 0, 0)]
    res = run(toy_spec(nRC=30), reqs)
    act2 = res.done[1] - 7 - 10 - 2  # its RD at ACT + nRCD, done at RD + nCL + nBL
    assert act2 == 30
    res21 = run(toy_spec(), reqs)
    assert res21.done[1] - 19 == 21  # nRC 21 = PRE at 15 + nRP 6


def test_tccd_long_within_a_bank_group_short_across():
    same = [(0, 0, 0, 3, c, 0) for c in range(8)]
    res = run(toy_spec(), same)
    assert np.all(np.diff(res.done) == TOY_TIMING["nCCD_L"])
    # two bank groups, rows opened first, then alternate: the data bus (nBL = nCCD_S = 2) paces them
    alt = [(0, 0, 0, 3, 0, 0), (0, 1, 0, 3, 0, 0)] + [(0, i % 2, 0, 3, 1 + i // 2, 0) for i in range(12)]
    res = run(toy_spec(), alt)
    gaps = np.diff(np.sort(res.done[4:]))
    assert np.all(gaps == TOY_TIMING["nCCD_S"])


def test_all_bank_refresh_blocks_the_rank_for_trfc():
    # a read arriving when refresh falls due (nREFI = 1000) waits for REF + nRFC before its ACT
    spec = toy_spec(refresh="all_bank")
    res = run(spec, [(0, 0, 0, 1, 0, 0)], arrival=np.array([1000]))
    assert res.first_command[0] == 1000 + TOY_TIMING["nRFC"]
    assert res.stats["commands"]["REF"] == 2  # both ranks
    # before the due time nothing waits
    early = run(spec, [(0, 0, 0, 1, 0, 0)], arrival=np.array([500]))
    assert early.first_command[0] == 500


def test_write_to_read_turnaround_twtr():
    # WR at ACT + nRCDWR = 7; a read of the same bank group waits nCWL + nBL + nWTR_L = 5 + 2 + 4
    res = run(toy_spec(), [(0, 0, 0, 4, 0, 1), (0, 0, 0, 4, 1, 0)])
    wr = res.first_command[0] + 7
    assert res.done[0] == wr + 5 + 2
    assert res.first_command[1] == wr + 5 + 2 + 4
    # other bank group of the same rank: nWTR_S = 2 (its own ACT at 3 makes RD ready at 10 < 16)
    res_s = run(toy_spec(), [(0, 0, 0, 4, 0, 1), (0, 1, 0, 4, 1, 0)])
    wr = res_s.first_command[0] + 7
    rd = res_s.done[1] - 12
    assert rd == wr + 5 + 2 + 2


def test_closed_page_precharges_after_the_last_queued_hit():
    reqs = [(0, 0, 0, 7, 0, 0), (0, 0, 0, 7, 1, 0)]
    arrival = np.array([0, 100])
    open_res = run(toy_spec(), reqs, arrival=arrival)
    closed_res = run(toy_spec(row_policy="closed"), reqs, arrival=arrival)
    assert open_res.row_class[1] == 0  # row still open: hit
    assert closed_res.row_class[1] == 1  # auto-precharged: a miss, ACT again
    assert closed_res.stats["commands"]["PRE_auto"] == 2
    assert closed_res.done[1] - 100 == 7 + 10 + 2
    # back-to-back hits to the same row stay hits under closed page (precharge only after the last)
    both = run(toy_spec(row_policy="closed"), reqs)
    assert both.row_class[1] == 0


def test_bank_internal_op_holds_its_bank_without_the_data_bus():
    # kind 2: ACT, then the op at ACT + nRCD holding the bank for `hold`; a read of another bank group
    # streams meanwhile; a read of the same bank's row waits for the op to end.
    reqs = [(0, 0, 0, 9, 0, 0), (0, 1, 0, 9, 0, 0), (0, 0, 0, 9, 1, 0)]
    kind = np.array([2, 0, 0])
    hold = np.array([40, 0, 0])
    res = run(toy_spec(), reqs, kind=kind, hold=hold)
    assert res.done[0] == 7 + 40
    assert res.done[1] == 3 + 7 + 12  # other bank group, unaffected
    assert res.done[2] - 12 >= 47  # same bank after the op
    assert res.stats["commands"]["OP"] == 1


def test_broadcast_act_limits_skip_trrd_and_tfaw():
    reqs = [(0, i % 2, i // 2, 5, 0, 0) for i in range(6)]
    kind = np.full(6, 2)
    hold = np.full(6, 8)
    jedec = run(toy_spec(), reqs, kind=kind, hold=hold)
    spec_b = toy_spec()
    from dataclasses import replace

    bcast = run(replace(spec_b, act_limits="broadcast"), reqs, kind=kind, hold=hold)
    assert jedec.first_command[4] == 20  # tFAW
    assert list(bcast.first_command) == [0, 1, 2, 3, 4, 5]  # one command slot each


def test_per_bank_refresh_holds_only_its_bank_pair_for_trfcpb():
    # per-bank refresh: every nREFIpb (125) each rank refreshes its next pair (bank p and p + 4 of 8):
    # at 125 pair 0 = banks 0 and 4 of each rank. A read of bank 0 arriving then waits REFpb + nRFCpb (25);
    # a read of bank 1 does not wait.
    spec = toy_spec(refresh="per_bank")
    r0 = run(spec, [(0, 0, 0, 1, 0, 0)], arrival=np.array([125]))
    assert r0.first_command[0] == 125 + TOY_TIMING["nRFCpb"]
    assert r0.stats["commands"]["REFpb"] == 2  # one per rank
    r1 = run(spec, [(0, 0, 1, 1, 0, 0)], arrival=np.array([125]))
    assert r1.first_command[0] == 127  # only behind the two REFpb commands (one per rank) on the bus
    # an open bank of the pair is closed first: PRE, then REFpb after nRP
    r2 = run(spec, [(0, 0, 0, 1, 0, 0), (0, 0, 0, 1, 1, 0)], arrival=np.array([0, 125]))
    assert r2.row_class[1] == 1  # the refresh closed its row: a miss
    assert r2.first_command[1] >= 125 + TOY_TIMING["nRP"] + TOY_TIMING["nRFCpb"]
