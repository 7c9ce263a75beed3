"""What the DRAM engine simulates: a device (organisation + timings in ticks) and a controller profile.

A `DramSpec` is plain data, built by the loaders (cemsim presets, DRAMsim3 .ini files) and read by the timing
table builder and the kernel. Timings are integer ticks (one tick = ``tck_s``; 1 CK for DDR/LPDDR, CK/2 for
HBM3 as Ramulator 2 ticks it), named as in JEDEC / Ramulator 2 (``nRCD`` = tRCD in ticks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

# Timing names the engine reads, with what each means (ticks). Loaders must fill all of them.
TIMING_NAMES: dict[str, str] = {
    "nBL": "data-bus ticks of one burst",
    "nCL": "read latency RL: RD command to first data",
    "nCWL": "write latency WL: WR command to first data",
    "nRCD": "ACT to RD (measured from ACT-1 on LPDDR5)",
    "nRCDWR": "ACT to WR",
    "nRP": "PRE (per bank) to ACT",
    "nRPab": "PRE all-bank to ACT / REF",
    "nRAS": "ACT to PRE",
    "nRC": "ACT to ACT, same bank",
    "nRRD_S": "ACT to ACT, other bank group",
    "nRRD_L": "ACT to ACT, same bank group",
    "nFAW": "window of four ACTs per rank",
    "nCCD_S": "RD to RD (and WR to WR), other bank group",
    "nCCD_L": "RD to RD, same bank group",
    "nCCD_L_WR": "WR to WR, same bank group",
    "nRTP": "RD to PRE",
    "nWR": "end of write data to PRE (write recovery)",
    "nWTR_S": "end of write data to RD, other bank group",
    "nWTR_L": "end of write data to RD, same bank group",
    "nRTRS": "extra data-bus gap when the next burst comes from another rank",
    "nPPD": "PRE to PRE, same rank",
    "nRFC": "REF all-bank to ACT",
    "nRFCpb": "REF per-bank to ACT",
    "nREFI": "refresh interval per rank (all-bank)",
    "nREFIpb": "per-bank refresh interval",
    "nPBR2PBR": "REFpb to REFpb in one rank (LPDDR5 tpbR2pbR); 0 = none",
    "nPBR2ACT": "REFpb to an ACT of another bank of the rank (LPDDR5 tpbR2ACT); 0 = none",
    "nAAD": "ACT-1 to ACT-2 deadline (LPDDR5 two-part ACT); 0 = single ACT",
    "nWCKPST": "WCK postamble after the last burst (LPDDR5 WCK sync); used when the profile syncs WCK",
    "nCMD_ACT": "command-bus ticks an ACT takes (row bus when the profile has separate row/column buses)",
    "nCMD_CAS": "command-bus ticks a RD/WR takes",
}

QUEUE_SHARED, QUEUE_PER_BANK = 0, 1
REFRESH_NONE, REFRESH_RANK_STAGGERED, REFRESH_ALL_BANK, REFRESH_PER_BANK = 0, 1, 2, 3
ROW_OPEN, ROW_CLOSED = 0, 1


@dataclass(frozen=True)
class ControllerProfile:
    """A memory controller's queueing and scheduling, as named, documented choices.

    ``queue``: "shared" = one read buffer (and one write buffer) for all banks, scheduled first-ready
    first-come-first-served, requests whose row their own ACT opened served first (Ramulator 2's generic
    controller); "per_bank" = a transaction queue feeding per-bank command queues of ``bank_queue_depth``,
    one transaction moved per tick, queues served round-robin, the first ready command of each (DRAMsim3's
    PER_BANK structure). ``row_hit_cap``: a PRE may close a row with pending hits once this many hits were
    served (DRAMsim3 hard-codes 4; 0 = never). ``refresh``: "rank_staggered" (ranks refreshed tREFI/ranks
    apart, each blocking only its own rank), "all_bank" (every rank each tREFI through a priority queue that
    stops new reads until served), "per_bank" (LPDDR5 REFpb: every tREFIpb each rank refreshes its next bank
    pair (bank b and b + banks/2), holding only ACTs to those two banks), or "none". ``wck_sync``: LPDDR5 CAS-WCK sync before an access when WCK is
    off. ``dual_command``: a row command and a column command may issue in the same tick (HBM).
    """

    name: str = "frfcfs-shared"
    queue: str = "shared"
    queue_size: int = 32
    write_queue_size: int = 32
    bank_queue_depth: int = 8
    row_hit_cap: int = 0
    row_policy: str = "open"
    refresh: str = "all_bank"
    wck_sync: bool = False
    dual_command: bool = False
    # Ticks from a command to the controller's report of it: reads return at RD + nCL + nBL + this.
    return_delay: int = 0

    def codes(self) -> dict[str, int]:
        queue = {"shared": QUEUE_SHARED, "per_bank": QUEUE_PER_BANK}[self.queue]
        refresh = {
            "none": REFRESH_NONE,
            "rank_staggered": REFRESH_RANK_STAGGERED,
            "all_bank": REFRESH_ALL_BANK,
            "per_bank": REFRESH_PER_BANK,
        }[self.refresh]
        row = {"open": ROW_OPEN, "closed": ROW_CLOSED}[self.row_policy]
        return {"queue": queue, "refresh": refresh, "row_policy": row}


PROFILES: dict[str, ControllerProfile] = {
    # DRAMsim3 (umd-memsys, src/controller.cc, src/command_queue.cc): 32-entry transaction queue, PER_BANK
    # command queues of 8, round-robin, hard-coded row-hit cap 4, rank-staggered refresh.
    "dramsim3": ControllerProfile(
        name="dramsim3",
        queue="per_bank",
        queue_size=32,
        write_queue_size=32,
        bank_queue_depth=8,
        row_hit_cap=4,
        refresh="rank_staggered",
    ),
    # Ramulator 2.1 (CMU-SAFARI, src/ramulator/controller/controller_base.cpp, scheduler/impl/frfcfs.cpp):
    # shared 32-entry read buffer, FR-FCFS (ready first, then oldest), active-request priority, all-bank
    # refresh through the priority buffer. LPDDR5 adds ACT-1/ACT-2 (from the spec) and CAS-WCK sync.
    "ramulator2": ControllerProfile(
        name="ramulator2",
        queue="shared",
        queue_size=32,
        write_queue_size=32,
        refresh="all_bank",
    ),
    # Ramulator 2.1 HBM3/4 (src/ramulator/controller/impl/hbm_controller_base.cpp): a column-bus and a row-bus
    # command per tick, each chosen as above.
    "ramulator2-hbm3": ControllerProfile(
        name="ramulator2-hbm3",
        queue="shared",
        queue_size=32,
        write_queue_size=32,
        refresh="all_bank",
        dual_command=True,
    ),
    "ramulator2-lpddr5": ControllerProfile(
        name="ramulator2-lpddr5",
        queue="shared",
        queue_size=32,
        write_queue_size=32,
        refresh="all_bank",
        wck_sync=True,
    ),
}


@dataclass(frozen=True)
class EnergySpec:
    """Energy per command (J) and background power (W) of one channel; all zero when not given."""

    act_j: float = 0.0  # one ACT + its PRE
    read_j: float = 0.0  # one read burst (array + I/O)
    write_j: float = 0.0  # one write burst
    refresh_j: float = 0.0  # one all-bank REF of one rank
    background_w: float = 0.0  # active-standby power of the channel's devices (IDD3N), all ranks
    # precharge-standby power (IDD2N), all ranks; when given, a rank draws it while none of its banks is open
    # and background_w while one is (DRAMsim3's split); when 0, background_w is drawn all the time
    precharge_standby_w: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class DramSpec:
    """One DRAM channel type and how its controller behaves. Timings are ticks (see TIMING_NAMES)."""

    name: str
    tck_s: float
    burst_bytes: int
    ranks: int
    bankgroups: int
    banks_per_group: int
    rows: int
    columns: int  # bursts per row
    timing: Mapping[str, int]
    pseudo_channels: int = 1  # HBM pseudo-channels (independent data buses sharing one controller)
    channels: int = 1  # channels of the memory system the config describes (address decoding only)
    mapping: str = "rorabgbacoch"  # MSB -> LSB address fields (DRAMsim3 style 2-letter codes)
    controller: ControllerProfile = field(default_factory=ControllerProfile)
    act_limits: str = "jedec"  # "broadcast": bank-internal-op ACTs skip tRRD/tFAW (DReX PFU assumption)
    # The unit tRRD_S, tFAW and all-bank refresh apply to: "rank", or "pseudo_channel" (HBM3: both SIDs)
    rank_scope: str = "rank"
    energy: EnergySpec = field(default_factory=EnergySpec)
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [k for k in TIMING_NAMES if k not in self.timing]
        if missing:
            raise ValueError(f"DRAM spec {self.name!r} lacks timings: {', '.join(missing)}")
        if self.rank_scope not in ("rank", "pseudo_channel"):
            raise ValueError(f"rank_scope must be 'rank' or 'pseudo_channel', got {self.rank_scope!r}")
        if self.act_limits not in ("jedec", "broadcast"):
            raise ValueError(f"act_limits must be 'jedec' or 'broadcast', got {self.act_limits!r}")

    @property
    def banks(self) -> int:
        """Banks per rank."""
        return self.bankgroups * self.banks_per_group

    @property
    def banks_per_channel(self) -> int:
        return self.pseudo_channels * self.ranks * self.banks

    @property
    def channel_peak_bytes_per_s(self) -> float:
        """Data-bus peak of one channel (all its pseudo-channels)."""
        return self.pseudo_channels * self.burst_bytes / (self.timing["nBL"] * self.tck_s)

    @property
    def read_delay(self) -> int:
        """RD command to the end of its data (ticks): when a read is done."""
        return self.timing["nCL"] + self.timing["nBL"] + self.controller.return_delay

    def with_controller(self, profile: ControllerProfile | str) -> DramSpec:
        if isinstance(profile, str):
            profile = PROFILES[profile]
        return replace(self, controller=profile)
