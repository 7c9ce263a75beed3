"""Command-level DRAM timing engine (issue 13): specs, loaders, address mapping, replay and statistics.

    from cemsim.dram import load_dram_spec, replay
    spec = load_dram_spec("lpddr5x-8533")
    res = replay(spec, rank=..., bankgroup=..., bank=..., row=..., column=..., is_write=...)
    res.done, res.accepted, res.stats

See docs/validation.md ("DRAM engine vs DRAMsim3 and Ramulator 2") for how it compares with both.
"""

from cemsim.dram.loader import available_presets, load_dram_spec
from cemsim.dram.mapping import decode_address, encode_address
from cemsim.dram.replay import KIND_OP, KIND_READ, KIND_WRITE, DramResult, replay
from cemsim.dram.spec import PROFILES, ControllerProfile, DramSpec, EnergySpec

__all__ = [
    "KIND_OP",
    "KIND_READ",
    "KIND_WRITE",
    "PROFILES",
    "ControllerProfile",
    "DramResult",
    "DramSpec",
    "EnergySpec",
    "available_presets",
    "decode_address",
    "encode_address",
    "load_dram_spec",
    "replay",
]
