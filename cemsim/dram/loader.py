"""`load_dram_spec`: a preset name, a cemsim DRAM YAML, a DRAMsim3 .ini or a Ramulator 2 *.timings.json.

A cemsim DRAM YAML (cemsim/config/presets/dram/*.yaml) writes every number as ``{value, tag, source}``, the
same provenance leaves as the system presets (cemsim/config/loader.py). Timings are named ``nXXX`` (ticks,
integers) or ``tXXX`` (a time such as "18 ns", converted to ticks by ceiling, as Ramulator 2 does).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from cemsim.config.loader import PROVENANCE_KEYS, TAGS
from cemsim.config.units import UnitError, parse_quantity
from cemsim.dram.spec import PROFILES, TIMING_NAMES, ControllerProfile, DramSpec, EnergySpec
from cemsim.errors import CemsimError

PRESET_DIR = Path(__file__).resolve().parent.parent / "config" / "presets" / "dram"
# Timings a preset may leave out, and what they default to (a feature the device does not have).
OPTIONAL_TIMINGS = {
    "nPBR2PBR": 0,
    "nPBR2ACT": 0,
    "nAAD": 0,
    "nWCKPST": 0,
    "nRTRS": 0,
    "nPPD": 0,
    "nCMD_ACT": 1,
    "nCMD_CAS": 1,
}


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_dram_spec(name_or_path: str | Path) -> DramSpec:
    """A preset name (``lpddr5x-8533``), a cemsim DRAM YAML, a DRAMsim3 .ini or a Ramulator *.timings.json."""
    text = str(name_or_path)
    path = Path(text)
    preset = PRESET_DIR / f"{text}.yaml"
    if not path.suffix and preset.is_file():
        return _load_yaml(preset)
    if not path.is_file():
        raise CemsimError(
            f"DRAM config {text!r}: no such file and no such preset (presets: {', '.join(available_presets())})"
        )
    if path.suffix == ".ini":
        from cemsim.dram.ini import load_dramsim3_ini

        return load_dramsim3_ini(path)
    if path.name.endswith(".timings.json"):
        return load_ramulator_timings(path)
    if path.suffix in (".yaml", ".yml"):
        return _load_yaml(path)
    raise CemsimError(
        f"DRAM config {text!r}: expected a preset name, a .yaml, a DRAMsim3 .ini or a Ramulator *.timings.json"
    )


def _leaf(value: Any, where: str, provenance: dict[str, str]) -> Any:
    if isinstance(value, dict) and "value" in value and set(value) <= PROVENANCE_KEYS:
        tag, source = value.get("tag"), value.get("source")
        if tag not in TAGS:
            raise CemsimError(f"{where}: tag must be one of {', '.join(TAGS)}, got {tag!r}")
        if not source:
            raise CemsimError(f"{where}: a value written as {{value: ...}} needs a 'source'")
        provenance[where.split(": ", 1)[-1]] = f"{tag}: {source}"
        return value["value"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise CemsimError(f"{where}: numbers in a DRAM preset need provenance, write {{value, tag, source}}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CemsimError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _load_yaml(path: Path) -> DramSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CemsimError(f"{path}: cannot read the DRAM preset ({exc})") from None
    if not isinstance(data, dict):
        raise CemsimError(f"{path}: a DRAM preset must be a YAML mapping")
    prov: dict[str, str] = {}

    def get(key: str, default: Any = ...) -> Any:
        if key not in data:
            if default is ...:
                raise CemsimError(f"{path}: field {key!r} is missing")
            return default
        return _leaf(data[key], f"{path}: {key}", prov)

    known = {"name", "tck", "burst_bytes", "pseudo_channels", "ranks", "bankgroups", "banks_per_group"}
    known |= {"rows", "columns", "timing", "mapping", "controller", "act_limits", "energy", "standard"}
    known |= {"rank_scope"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CemsimError(f"{path}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    try:
        tck = parse_quantity(get("tck"), "time")
    except UnitError as exc:
        raise CemsimError(f"{path}: tck: {exc}") from None
    if tck <= 0:
        raise CemsimError(f"{path}: tck must be positive")
    org = {
        k: _int(get(k, 1 if k == "pseudo_channels" else ...), f"{path}: {k}")
        for k in (
            "burst_bytes",
            "pseudo_channels",
            "ranks",
            "bankgroups",
            "banks_per_group",
            "rows",
            "columns",
        )
    }
    raw_t = data.get("timing")
    if not isinstance(raw_t, dict):
        raise CemsimError(f"{path}: 'timing' must be a mapping of nXXX (ticks) or tXXX (time) entries")
    timing: dict[str, int] = dict(OPTIONAL_TIMINGS)
    for key, raw in raw_t.items():
        where = f"{path}: timing.{key}"
        value = _leaf(raw, where, prov)
        if key.startswith("n"):
            timing[key] = _int(value, where)
        elif key.startswith("t"):
            try:
                seconds = parse_quantity(value, "time")
            except UnitError as exc:
                raise CemsimError(f"{where}: {exc}") from None
            timing["n" + key[1:]] = math.ceil(seconds / tck - 1e-6)
        else:
            raise CemsimError(f"{where}: timing names start with n (ticks) or t (a time)")
    unknown_t = sorted(k for k in timing if k not in TIMING_NAMES)
    if unknown_t:
        raise CemsimError(
            f"{path}: unknown timing(s) {', '.join(unknown_t)}; known: {', '.join(TIMING_NAMES)}"
        )
    missing = [k for k in TIMING_NAMES if k not in timing]
    if missing:
        raise CemsimError(f"{path}: timing is missing {', '.join(missing)}")
    controller = _profile(data.get("controller", "ramulator2"), path)
    energy = _energy(data.get("energy"), path, prov, org["burst_bytes"])
    act_limits = data.get("act_limits", "jedec")
    if act_limits not in ("jedec", "broadcast"):
        raise CemsimError(f"{path}: act_limits must be 'jedec' or 'broadcast', got {act_limits!r}")
    rank_scope = data.get("rank_scope", "rank")
    if rank_scope not in ("rank", "pseudo_channel"):
        raise CemsimError(f"{path}: rank_scope must be 'rank' or 'pseudo_channel', got {rank_scope!r}")
    return DramSpec(
        name=str(data.get("name", path.stem)),
        tck_s=tck,
        rank_scope=rank_scope,
        timing=timing,
        mapping=str(data.get("mapping", "robabgracoch")),
        controller=controller,
        act_limits=act_limits,
        energy=energy,
        provenance=prov,
        **org,
    )


def _profile(value: Any, path: Path) -> ControllerProfile:
    if isinstance(value, str):
        if value not in PROFILES:
            raise CemsimError(f"{path}: unknown controller profile {value!r}; known: {', '.join(PROFILES)}")
        return PROFILES[value]
    if isinstance(value, dict):
        base = PROFILES.get(str(value.get("base", "ramulator2")))
        if base is None:
            raise CemsimError(f"{path}: controller.base must be one of {', '.join(PROFILES)}")
        fields = {k: v for k, v in value.items() if k != "base"}
        try:
            prof = ControllerProfile(**{**base.__dict__, **fields})
            prof.codes()
        except (TypeError, KeyError) as exc:
            raise CemsimError(f"{path}: controller: {exc}") from None
        return prof
    raise CemsimError(f"{path}: controller must be a profile name or a mapping")


def _energy(value: Any, path: Path, prov: dict[str, str], burst_bytes: int) -> EnergySpec:
    if value is None:
        return EnergySpec()
    if not isinstance(value, dict):
        raise CemsimError(f"{path}: energy must be a mapping")
    got: dict[str, float] = {}
    dims = {"act": "energy", "read": "energy", "write": "energy", "refresh": "energy", "background": "power"}
    dims |= {"precharge_standby": "power"}
    dims |= {"read_per_bit": "energy_per_bit", "write_per_bit": "energy_per_bit"}
    sources = []
    for key, raw in value.items():
        if key not in dims:
            raise CemsimError(f"{path}: energy.{key} is unknown; valid: {', '.join(dims)}")
        v = _leaf(raw, f"{path}: energy.{key}", prov)
        try:
            got[key] = parse_quantity(v, dims[key])
        except UnitError as exc:
            raise CemsimError(f"{path}: energy.{key}: {exc}") from None
        if isinstance(raw, dict):
            sources.append(f"{key}: {raw.get('source')}")
    bits = 8 * burst_bytes
    return EnergySpec(
        act_j=got.get("act", 0.0),
        read_j=got.get("read", got.get("read_per_bit", 0.0) * bits),
        write_j=got.get("write", got.get("write_per_bit", 0.0) * bits),
        refresh_j=got.get("refresh", 0.0),
        background_w=got.get("background", 0.0),
        precharge_standby_w=got.get("precharge_standby", 0.0),
        source="; ".join(sources),
    )


def load_ramulator_timings(path: Path) -> DramSpec:
    """A Ramulator 2 config's timings, as listed in the reference set's *.timings.json (LPDDR5 and HBM3)."""
    try:
        d = json.loads(Path(path).read_text())
        std = d["standard"]
        lv = d["levels"]
        t = d["timing_in_ticks (tCK_ps and rate are not in ticks)"]
        ctrl = d.get("controller", {})
    except (OSError, ValueError, KeyError) as exc:
        raise CemsimError(f"{path}: not a Ramulator timings file ({type(exc).__name__}: {exc})") from None
    bl = int(d["internal_prefetch_size(BL)"])
    burst_bytes = int(d["dq"]) * bl // 8
    mult = int(d.get("tick_multiplier", 1))
    tck = int(t["tCK_ps"]) * 1e-12 if std != "HBM3" else 0.625e-9 / mult
    if std == "LPDDR5":
        timing = {
            "nBL": t["nBL_min"], "nCL": t["nCL"], "nCWL": t["nCWL"], "nRCD": t["nRCD"], "nRCDWR": t["nRCD"],
            "nRP": t["nRP"], "nRPab": t["nRPab"], "nRAS": t["nRAS"], "nRC": t["nRC"], "nRRD_S": t["nRRDS"],
            "nRRD_L": t["nRRDL"], "nFAW": t["nFAW"], "nCCD_S": t["nCCDS"], "nCCD_L": t["nCCDL"],
            "nCCD_L_WR": t["nCCDL_WR"], "nRTP": t["nRTP"], "nWR": t["nWR"], "nWTR_S": t["nWTRS"],
            "nWTR_L": t["nWTRL"], "nRTRS": t["nCS"], "nPPD": t["nPPD"], "nRFC": t["nRFC"],
            "nRFCpb": t["nRFCpb"], "nREFI": t["nREFI"], "nREFIpb": t["nREFIpb"], "nAAD": t["nAAD"],
            "nWCKPST": t["nWCKPST"], "nCMD_ACT": 1, "nCMD_CAS": 1, "nPBR2PBR": t["nPBR2PBR"],
            "nPBR2ACT": t["nPBR2ACT"],
        }  # fmt: skip
        ranks, pcs, profile = int(lv["Rank"]), 1, PROFILES["ramulator2-lpddr5"]
    elif std == "HBM3":
        timing = {
            "nBL": t["nBL"], "nCL": t["nCL"], "nCWL": t["nCWL"], "nRCD": t["nRCDRD"], "nRCDWR": t["nRCDWR"],
            "nRP": t["nRP"], "nRPab": t["nRP"], "nRAS": t["nRAS"], "nRC": t["nRC"], "nRRD_S": t["nRRDS"],
            "nRRD_L": t["nRRDL"], "nFAW": t["nFAW"], "nCCD_S": t["nCCDS"], "nCCD_L": t["nCCDL"],
            "nCCD_L_WR": t["nCCDL"], "nRTP": t["nRTP"], "nWR": t["nWR"], "nWTR_S": t["nWTRS"],
            "nWTR_L": t["nWTRL"], "nRTRS": t["nCCDR"] - t["nBL"], "nPPD": t["nPPD"], "nRFC": t["nRFC"],
            "nRFCpb": t["nRFCpb"], "nREFI": t["nREFI"], "nREFIpb": t["nREFIpb"], "nAAD": 0, "nWCKPST": 0,
            "nCMD_ACT": 3, "nCMD_CAS": 2, "nPBR2PBR": 0, "nPBR2ACT": 0,
        }  # fmt: skip
        ranks, pcs = int(lv["Sid"]), int(lv["PseudoChannel"])
        profile = ControllerProfile(
            **{**PROFILES["ramulator2"].__dict__, "name": "ramulator2-hbm3", "dual_command": True}
        )
    else:
        raise CemsimError(f"{path}: Ramulator standard {std!r} is not supported (LPDDR5, HBM3)")
    rb = int(ctrl.get("read_buffer_size", 32))
    wb = int(ctrl.get("write_buffer_size", 32))
    refresh = {"AllBank": "all_bank"}.get(ctrl.get("refresh_manager", {}).get("impl", "AllBank"))
    if refresh is None or ctrl.get("row_policy", {}).get("impl", "Open") != "Open":
        raise CemsimError(f"{path}: only AllBank refresh and the Open row policy are modelled")
    profile = ControllerProfile(**{**profile.__dict__, "queue_size": rb, "write_queue_size": wb})
    mapping = {"RoBaRaCoCh": "robabgrapccoch" if pcs > 1 else "robabgracoch"}.get(
        ctrl.get("addr_mapper", {}).get("impl", "RoBaRaCoCh")
    )
    if mapping is None:
        raise CemsimError(f"{path}: only the RoBaRaCoCh address mapper is modelled")
    return DramSpec(
        name=f"ramulator2 {std} {Path(path).name.removesuffix('.timings.json')}",
        tck_s=tck,
        burst_bytes=burst_bytes,
        pseudo_channels=pcs,
        ranks=ranks,
        bankgroups=int(lv["BankGroup"]),
        banks_per_group=int(lv["Bank"]),
        rows=int(lv["Row"]),
        columns=int(lv["Column"]) // bl,
        timing={k: int(v) for k, v in timing.items()},
        mapping=mapping,
        controller=profile,
        rank_scope="pseudo_channel" if std == "HBM3" else "rank",
        provenance={"all": f"Ramulator 2 timings exported to {Path(path).name}"},
    )
