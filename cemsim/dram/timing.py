"""Timing constraints as data: (level, preceding command, following command, ticks), Ramulator 2 style.

`constraints(spec)` lists them from the spec's named timings (JESD209-5 / JESD79-5 definitions, the same
formulas DRAMsim3's src/timing.cc and Ramulator 2's python/ramulator/dram/*.py use); `tables(spec)` packs them
into the arrays the kernel reads: ``lat[level, prev, next]`` (-1 = no constraint) for the node that issued
the command and ``sib[prev, next]`` for the other ranks of the same pseudo-channel (rank switch).
"""

from __future__ import annotations

import numpy as np

from cemsim.dram.spec import DramSpec

# Commands. ACT is ACT-1 on LPDDR5 (tRCD/tRAS/tRRD/tFAW count from it); ACT2 and CAS only take a bus slot.
ACT, PRE, RD, WR, PREA, REF, OP, CAS, ACT2, REFPB = range(10)
NCMD = 10
COMMAND_NAMES = ("ACT", "PRE", "RD", "WR", "PREA", "REF", "OP", "CAS", "ACT2", "REFpb")
# Levels of the device tree, root first.
CHANNEL, PCH, RANK, BANKGROUP, BANK = range(5)
NLEV = 5


def constraints(spec: DramSpec) -> list[tuple[int, int, int, int]]:
    t = spec.timing
    bl, cl, cwl = t["nBL"], t["nCL"], t["nCWL"]
    wr_end = cwl + bl  # WR command to the end of its data
    rd_rd_l, rd_rd_s = max(bl, t["nCCD_L"]), max(bl, t["nCCD_S"])
    wr_wr_l, wr_wr_s = max(bl, t["nCCD_L_WR"]), max(bl, t["nCCD_S"])
    rd_to_wr = cl + bl + t["nRTRS"] - cwl
    wr_to_pre = wr_end + t["nWR"]
    out = [
        # bank: row cycle
        (BANK, ACT, ACT, t["nRC"]),
        (BANK, ACT, RD, t["nRCD"]),
        (BANK, ACT, OP, t["nRCD"]),
        (BANK, ACT, WR, t["nRCDWR"]),
        (BANK, ACT, PRE, t["nRAS"]),
        (BANK, PRE, ACT, t["nRP"]),
        (BANK, RD, PRE, t["nRTP"]),
        (BANK, WR, PRE, wr_to_pre),
        # bank group: same-group column and activation spacing
        (BANKGROUP, RD, RD, rd_rd_l),
        (BANKGROUP, WR, WR, wr_wr_l),
        (BANKGROUP, WR, RD, wr_end + t["nWTR_L"]),
        (BANKGROUP, ACT, ACT, t["nRRD_L"]),
        # rank
        (RANK, RD, RD, rd_rd_s),
        (RANK, WR, WR, wr_wr_s),
        (RANK, WR, RD, wr_end + t["nWTR_S"]),
        (RANK, RD, WR, rd_to_wr),
        (PCH if spec.rank_scope == "pseudo_channel" else RANK, ACT, ACT, t["nRRD_S"]),
        (RANK, PRE, PRE, t["nPPD"]),
        (RANK, ACT, PREA, t["nRAS"]),
        (RANK, RD, PREA, t["nRTP"]),
        (RANK, WR, PREA, wr_to_pre),
        (RANK, PREA, ACT, t["nRPab"]),
        (RANK, PREA, REF, t["nRPab"]),
        (RANK, PRE, REF, t["nRP"]),
        (RANK, ACT, REF, t["nRC"]),
        (RANK, REF, ACT, t["nRFC"]),
        (RANK, REF, REF, t["nRFC"]),
        (RANK, REF, PREA, t["nRFC"]),
        # per-bank refresh (REFpb): its bank for tRFCpb, the rank's next REFpb / ACT for tpbR2pbR / tpbR2ACT
        (BANK, REFPB, ACT, t["nRFCpb"]),
        (BANK, ACT, REFPB, t["nRC"]),
        (BANK, PRE, REFPB, t["nRP"]),
        (RANK, REFPB, REFPB, t["nPBR2PBR"]),
        (RANK, REFPB, ACT, t["nPBR2ACT"]),
        (RANK, REF, REFPB, t["nRFC"]),
        (RANK, REFPB, REF, t["nRFCpb"]),
        # pseudo-channel: its data bus
        (PCH, RD, RD, bl),
        (PCH, WR, WR, bl),
    ]
    # command buses: an ACT (row bus) or a RD/WR (column bus) longer than one tick (HBM3: 3 and 2 ticks)
    if t["nCMD_ACT"] > 1:
        out += [(CHANNEL, ACT, nxt, t["nCMD_ACT"]) for nxt in (ACT, PRE, PREA, REF)]
    if t["nCMD_CAS"] > 1:
        out += [(CHANNEL, a, b, t["nCMD_CAS"]) for a in (RD, WR) for b in (RD, WR)]
    return out


def sibling_constraints(spec: DramSpec) -> list[tuple[int, int, int]]:
    """Rank switch on a shared data bus: (prev, next, ticks) toward the other ranks of the pseudo-channel."""
    t = spec.timing
    bl, cl, cwl, rtrs = t["nBL"], t["nCL"], t["nCWL"], t["nRTRS"]
    return [
        (RD, RD, bl + rtrs),
        (RD, WR, cl + bl + rtrs - cwl),
        (WR, RD, cwl + bl + rtrs - cl),
        (WR, WR, bl),
    ]


def tables(spec: DramSpec) -> tuple[np.ndarray, np.ndarray]:
    lat = np.full((NLEV, NCMD, NCMD), -1, dtype=np.int64)
    for level, prev, nxt, ticks in constraints(spec):
        lat[level, prev, nxt] = max(lat[level, prev, nxt], ticks)
    sib = np.full((NCMD, NCMD), -1, dtype=np.int64)
    for prev, nxt, ticks in sibling_constraints(spec):
        sib[prev, nxt] = max(sib[prev, nxt], ticks)
    return lat, sib
