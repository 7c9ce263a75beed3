"""Physical address <-> DRAM coordinates, by a mapping string (most significant field first).

Fields are two-letter codes as in DRAMsim3's ``address_mapping`` ("rochrababgco"): ``ro`` row, ``ch`` channel,
``pc`` pseudo-channel, ``ra`` rank, ``bg`` bank group, ``ba`` bank, ``co`` column (in bursts). Ramulator 2's
names are accepted too: "RoBaRaCoCh" (its Ba covers bank then bank group) becomes "robabgracoch". The low
log2(burst bytes) bits are the offset inside a burst, as both simulators drop them. Fields a mapping leaves out
must have size 1. ``rank`` in coordinates is flat within a channel: pseudo-channel * ranks + rank.
"""

from __future__ import annotations

import re

import numpy as np

from cemsim.dram.spec import DramSpec
from cemsim.errors import CemsimError

FIELDS = ("ro", "ch", "pc", "ra", "bg", "ba", "co")
_RAMULATOR = {"Ro": "ro", "Ba": "babg", "Ra": "ra", "Co": "co", "Ch": "ch", "Bg": "bg"}


def _log2(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise CemsimError(f"address mapping needs a power of two for {what}, got {n}")
    return n.bit_length() - 1


def normalise(mapping: str) -> list[str]:
    """The mapping as a list of two-letter fields, MSB first; raises CemsimError if it is not one."""
    text = mapping.strip()
    if re.fullmatch(r"(?:[A-Z][a-z])+", text):
        text = "".join(_RAMULATOR.get(text[i : i + 2], "??") for i in range(0, len(text), 2))
    parts = [text[i : i + 2] for i in range(0, len(text), 2)]
    bad = [p for p in parts if p not in FIELDS]
    if bad or len(set(parts)) != len(parts) or not parts:
        raise CemsimError(
            f"address mapping {mapping!r} is not a string of distinct fields among {', '.join(FIELDS)} "
            "(most significant first, e.g. 'rochrababgco' or Ramulator's 'RoBaRaCoCh')"
        )
    return parts


def field_sizes(spec: DramSpec, channels: int) -> dict[str, int]:
    return {
        "ro": spec.rows,
        "ch": channels,
        "pc": spec.pseudo_channels,
        "ra": spec.ranks,
        "bg": spec.bankgroups,
        "ba": spec.banks_per_group,
        "co": spec.columns,
    }


def _layout(spec: DramSpec, channels: int) -> list[tuple[str, int, int]]:
    """(field, shift, bits) for every field, shifts in bytes-address bits."""
    parts = normalise(spec.mapping)
    sizes = field_sizes(spec, channels)
    for f, size in sizes.items():
        if f not in parts and size != 1:
            raise CemsimError(
                f"address mapping {spec.mapping!r} has no {f!r} field, but {spec.name} has {size}"
            )
    shift = _log2(spec.burst_bytes, "burst bytes")
    out = []
    for f in reversed(parts):
        bits = _log2(sizes[f], f)
        out.append((f, shift, bits))
        shift += bits
    return out


def decode_address(spec: DramSpec, addr, channels: int | None = None) -> dict[str, np.ndarray]:
    """Byte addresses -> {channel, rank, bankgroup, bank, row, column} int64 arrays (rank flat, see above)."""
    channels = spec.channels if channels is None else channels
    a = np.asarray(addr, dtype=np.uint64)
    got: dict[str, np.ndarray] = {}
    for f, shift, bits in _layout(spec, channels):
        got[f] = ((a >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
    zero = np.zeros(a.shape, dtype=np.int64)
    pc, ra = got.get("pc", zero), got.get("ra", zero)
    return {
        "channel": got.get("ch", zero),
        "rank": pc * spec.ranks + ra,
        "bankgroup": got.get("bg", zero),
        "bank": got.get("ba", zero),
        "row": got.get("ro", zero),
        "column": got.get("co", zero),
    }


def encode_address(spec: DramSpec, coords: dict, channels: int | None = None) -> np.ndarray:
    """{channel, rank, bankgroup, bank, row, column} -> byte addresses (uint64); inverse of decode_address."""
    channels = spec.channels if channels is None else channels
    n = np.asarray(coords["row"]).shape
    zero = np.zeros(n, dtype=np.int64)
    rank = np.asarray(coords.get("rank", zero), dtype=np.int64)
    values = {
        "ro": coords["row"],
        "ch": coords.get("channel", zero),
        "pc": rank // spec.ranks,
        "ra": rank % spec.ranks,
        "bg": coords.get("bankgroup", zero),
        "ba": coords.get("bank", zero),
        "co": coords["column"],
    }
    sizes = field_sizes(spec, channels)
    addr = np.zeros(n, dtype=np.uint64)
    for f, shift, _bits in _layout(spec, channels):
        v = np.asarray(values[f], dtype=np.int64)
        if v.size and (v.min() < 0 or v.max() >= sizes[f]):
            raise CemsimError(f"coordinate {f!r} out of range [0, {sizes[f]}) for {spec.name}")
        addr |= v.astype(np.uint64) << np.uint64(shift)
    return addr
