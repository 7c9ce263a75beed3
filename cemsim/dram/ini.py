"""Read a DRAMsim3 .ini: organisation, timing and IDD power, as DRAMsim3's src/configuration.cc interprets
them (ranks from channel_size, bursts per row = columns / BL, burst cycles = BL / 2, RL = AL + CL,
tRC = tRAS + tRP, unspecified keys take DRAMsim3's defaults), with the DRAMsim3 controller profile.
What the engine does not model is refused with the key that asks for it."""

from __future__ import annotations

import configparser
from dataclasses import replace
from pathlib import Path

from cemsim.dram.spec import PROFILES, DramSpec, EnergySpec
from cemsim.errors import CemsimError

SUPPORTED_PROTOCOLS = ("DDR3", "DDR4", "LPDDR", "LPDDR3", "LPDDR4", "HBM", "HBM2")
# DRAMsim3's defaults for keys an .ini may omit (src/configuration.cc, InitTimingParams / InitDRAMParams).
DEFAULTS = {
    "AL": 0, "CL": 12, "CWL": 12, "tCCD_L": 6, "tCCD_S": 4, "tRTRS": 2, "tRTP": 5, "tWTR_L": 5, "tWTR_S": 5,
    "tWR": 10, "tRP": 10, "tRRD_L": 4, "tRRD_S": 4, "tRAS": 24, "tRCD": 10, "tRFC": 74, "tRFCb": 20,
    "tREFI": 7800, "tREFIb": 1950, "tFAW": 50, "tPPD": 0, "tRCDRD": 24, "tRCDWR": 20,
}  # fmt: skip


def load_dramsim3_ini(path: Path) -> DramSpec:
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    cp.optionxform = str  # keys are case-sensitive (tRP vs trp)
    try:
        if not cp.read(path):
            raise CemsimError(f"{path}: cannot read the DRAMsim3 config")
    except configparser.Error as exc:
        raise CemsimError(f"{path}: not a DRAMsim3 .ini ({exc.message.splitlines()[0]})") from None

    def get(section: str, key: str, default=None, kind=int):
        if cp.has_option(section, key):
            raw = cp.get(section, key)
            try:
                return kind(raw)
            except ValueError:
                raise CemsimError(f"{path}: [{section}] {key} = {raw!r} is not a {kind.__name__}") from None
        if default is None:
            raise CemsimError(f"{path}: [{section}] {key} is missing")
        return default

    protocol = get("dram_structure", "protocol", "DDR3", str)
    if protocol not in SUPPORTED_PROTOCOLS:
        raise CemsimError(
            f"{path}: [dram_structure] protocol = {protocol}: the engine models {', '.join(SUPPORTED_PROTOCOLS)} "
            "(GDDR burst rules, HMC links are not modelled)"
        )
    hbm = protocol.startswith("HBM")
    bankgroups = get("dram_structure", "bankgroups", 2)
    banks_per_group = get("dram_structure", "banks_per_group", 2)
    if cp.has_option("dram_structure", "bankgroup_enable") and not cp.getboolean(
        "dram_structure", "bankgroup_enable"
    ):
        banks_per_group *= bankgroups
        bankgroups = 1
    rows = get("dram_structure", "rows", 1 << 16)
    columns = get("dram_structure", "columns", 1 << 10)
    device_width = get("dram_structure", "device_width", 8)
    bl = get("dram_structure", "BL", 8)
    if hbm:
        columns *= 2  # DRAMsim3 Config::InitDRAMParams: an HBM column is device_width x 2 (prefetch)
    if bl <= 0:
        raise CemsimError(f"{path}: [dram_structure] BL = {bl}: the ideal (BL 0) memory is not modelled")
    channels = get("system", "channels", 1)
    channel_size = get("system", "channel_size", 1024)
    bus_width = get("system", "bus_width", 64)
    checks = {
        ("system", "queue_structure", "PER_BANK"): "PER_BANK",
        ("system", "refresh_policy", "RANK_LEVEL_STAGGERED"): "RANK_LEVEL_STAGGERED",
        ("system", "unified_queue", "False"): "False",
        ("system", "enable_self_refresh", "False"): "False",
    }
    for (sec, key, default), want in checks.items():
        got = get(sec, key, default, str)
        if got.lower() != want.lower():
            raise CemsimError(f"{path}: [{sec}] {key} = {got}: only {want} is modelled")
    row_policy = get("system", "row_buf_policy", "OPEN_PAGE", str)
    if row_policy not in ("OPEN_PAGE", "CLOSE_PAGE"):
        raise CemsimError(f"{path}: [system] row_buf_policy = {row_policy}: OPEN_PAGE or CLOSE_PAGE")
    # organisation, as DRAMsim3's Config::CalculateSize
    devices = bus_width // device_width
    page = columns * device_width // 8
    megs_per_rank = page * (rows // 1024) // 1024 * bankgroups * banks_per_group * devices
    ranks = 1 if megs_per_rank > channel_size else channel_size // megs_per_rank
    burst_cycle = bl // 2
    g = {k: get("timing", k, v) for k, v in DEFAULTS.items()}
    if cp.has_option("timing", "tRTP_L") and not cp.has_option("timing", "tRTP"):
        pass  # DRAMsim3 reads only tRTP; tRTP_L/_S in stock HBM configs are ignored there, and here
    tck_ns = get("timing", "tCK", 1.0, float)
    al = g["AL"]
    rcd_rd = g["tRCDRD"] if hbm else g["tRCD"] - al
    rcd_wr = g["tRCDWR"] if hbm else g["tRCD"] - al
    tppd = g["tPPD"] if protocol == "LPDDR4" else 0
    timing = {
        "nBL": burst_cycle, "nCL": al + g["CL"], "nCWL": al + g["CWL"], "nRCD": rcd_rd, "nRCDWR": rcd_wr,
        "nRP": g["tRP"], "nRPab": g["tRP"], "nRAS": g["tRAS"], "nRC": g["tRAS"] + g["tRP"],
        "nRRD_S": g["tRRD_S"], "nRRD_L": g["tRRD_L"] if bankgroups > 1 else g["tRRD_S"], "nFAW": g["tFAW"],
        "nCCD_S": g["tCCD_S"], "nCCD_L": g["tCCD_L"] if bankgroups > 1 else g["tCCD_S"],
        "nCCD_L_WR": g["tCCD_L"] if bankgroups > 1 else g["tCCD_S"], "nRTP": al + g["tRTP"], "nWR": g["tWR"],
        "nWTR_S": g["tWTR_S"], "nWTR_L": g["tWTR_L"] if bankgroups > 1 else g["tWTR_S"], "nRTRS": g["tRTRS"],
        "nPPD": tppd, "nRFC": g["tRFC"], "nRFCpb": g["tRFCb"], "nREFI": g["tREFI"], "nREFIpb": g["tREFIb"],
        "nAAD": 0, "nWCKPST": 0, "nCMD_ACT": 1, "nCMD_CAS": 1, "nPBR2PBR": 0, "nPBR2ACT": 0,
    }  # fmt: skip
    profile = PROFILES["dramsim3"]
    profile = replace(
        profile,
        queue_size=get("system", "trans_queue_size", 32),
        write_queue_size=get("system", "write_buf_size", 16),
        bank_queue_depth=get("system", "cmd_queue_size", 16),
        row_policy="closed" if row_policy == "CLOSE_PAGE" else "open",
        dual_command=hbm and cp.get("dram_structure", "hbm_dual_cmd", fallback="true").lower() == "true",
    )
    energy = _idd_energy(cp, get, timing, burst_cycle, devices, tck_ns, ranks)
    return DramSpec(
        name=f"DRAMsim3 {Path(path).stem}",
        tck_s=tck_ns * 1e-9,
        burst_bytes=bus_width // 8 * bl,
        ranks=ranks,
        bankgroups=bankgroups,
        banks_per_group=banks_per_group,
        rows=rows,
        columns=columns // bl,
        channels=channels,
        timing=timing,
        mapping=get("system", "address_mapping", "chrobabgraco", str),
        controller=profile,
        energy=energy,
        provenance={"all": f"DRAMsim3 config {Path(path).name}"},
    )


def _idd_energy(cp, get, timing, burst_cycle, devices, tck_ns, ranks) -> EnergySpec:
    """IDD-based energies (Micron TN-41-01 method, the one DRAMsim3 applies): mA x V x ns = pJ."""
    if not cp.has_section("power"):
        return EnergySpec()
    # DRAMsim3's own defaults for a current the .ini leaves out (src/configuration.cc, InitPowerParams)
    defaults = {"IDD0": 48.0, "IDD2N": 34.0, "IDD3N": 43.0, "IDD4R": 135.0, "IDD4W": 123.0, "IDD5AB": 250.0}
    vdd = get("power", "VDD", 1.2, float)
    idd = {k: get("power", k, d, float) for k, d in defaults.items()}
    ras, rp, rfc = timing["nRAS"], timing["nRP"], timing["nRFC"]
    rc = ras + rp
    pj = 1e-12 * tck_ns
    act = vdd * (idd["IDD0"] * rc - (idd["IDD3N"] * ras + idd["IDD2N"] * rp)) * devices * pj
    rd = vdd * (idd["IDD4R"] - idd["IDD3N"]) * burst_cycle * devices * pj
    wr = vdd * (idd["IDD4W"] - idd["IDD3N"]) * burst_cycle * devices * pj
    ref = vdd * (idd["IDD5AB"] - idd["IDD3N"]) * rfc * devices * pj
    background = vdd * idd["IDD3N"] * 1e-3 * devices * ranks
    precharge_standby = vdd * idd["IDD2N"] * 1e-3 * devices * ranks
    return EnergySpec(
        act_j=act,
        read_j=rd,
        write_j=wr,
        refresh_j=ref,
        background_w=background,
        precharge_standby_w=precharge_standby,
        source="IDD currents of the .ini, Micron TN-41-01 method (as DRAMsim3)",
    )
