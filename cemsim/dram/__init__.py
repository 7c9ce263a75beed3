"""Command-level DRAM timing engine (issue 13): specs, loaders, address mapping, replay and statistics.

    from cemsim.dram import load_dram_spec, replay
    spec = load_dram_spec("lpddr5x-8533")   # preset, cemsim DRAM YAML, DRAMsim3 .ini or Ramulator *.timings.json
    res = replay(spec, rank=..., bankgroup=..., bank=..., row=..., column=..., is_write=...)
    res.done, res.accepted, res.stats

One request is one burst (``spec.burst_bytes``). ``rank`` is flat within a channel (pseudo-channel * ranks +
rank), ``column`` counts bursts within the row (``spec.columns`` per row). Optional per-request arrays:
``channel`` (independent controllers, one call), ``kind`` (0 read, 1 write, 2 bank-internal op) and ``hold``
(ticks an op keeps its bank busy once its row is open; it uses no data bus). Open loop: ``arrival`` ticks
(all zero = saturating; offered in order, at most one per tick per channel, retried until accepted). Closed
loop: ``depth`` keys in flight per channel, a key = consecutive requests with equal ``key_id``; a key starts
the tick after an earlier key's last read returned (writes count on acceptance). ``act_limits="broadcast"``
lets op ACTs skip tRRD/tFAW. Times are ticks of ``spec.tck_s``; ``res.done`` is the data return (reads), the
end of the write burst (writes), the end of the op (ops).

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
