"""Request streams from files: DRAMsim3 text traces and .npz arrays (the reference set's format).

Text: one request per line, ``0xADDR READ|WRITE CYCLE`` (DRAMsim3's trace format; ``#`` starts a comment).
.npz: ``addr`` (byte addresses), ``is_write``, and either ``arrival`` / ``arrival_cycle`` (open loop, in
cycles of the config) or ``K`` (closed loop: keys in flight; ``key_id`` groups requests into keys, default
one key per request; an array of K values takes the first).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cemsim.errors import CemsimError


@dataclass(frozen=True)
class Stream:
    addr: np.ndarray  # uint64 byte addresses
    is_write: np.ndarray  # int64 0/1
    arrival: np.ndarray | None  # int64 cycles (open loop)
    depth: int | None  # keys in flight (closed loop)
    key_id: np.ndarray | None


def read_text_trace(path: Path) -> Stream:
    addrs: list[int] = []
    writes: list[int] = []
    cycles: list[int] = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CemsimError(f"{path}: cannot read the trace ({exc})") from None
    for no, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 3:
            raise CemsimError(f"{path}, line {no}: expected '0xADDR READ|WRITE CYCLE', got {line.strip()!r}")
        a, op, cyc = parts
        try:
            addr = int(a, 16)
            cycle = int(cyc)
        except ValueError:
            raise CemsimError(
                f"{path}, line {no}: address must be hex and cycle an integer: {line.strip()!r}"
            ) from None
        if op.upper() not in ("READ", "WRITE"):
            raise CemsimError(f"{path}, line {no}: operation must be READ or WRITE, got {op!r}")
        if addr < 0 or addr >= 2**64 or cycle < 0:
            raise CemsimError(f"{path}, line {no}: address or cycle out of range: {line.strip()!r}")
        if cycles and cycle < cycles[-1]:
            raise CemsimError(f"{path}, line {no}: cycles must not decrease (requests are offered in order)")
        addrs.append(addr)
        writes.append(1 if op.upper() == "WRITE" else 0)
        cycles.append(cycle)
    if not addrs:
        raise CemsimError(f"{path}: the trace holds no requests")
    return Stream(
        addr=np.array(addrs, dtype=np.uint64),
        is_write=np.array(writes, dtype=np.int64),
        arrival=np.array(cycles, dtype=np.int64),
        depth=None,
        key_id=None,
    )


def read_npz_stream(path: Path) -> Stream:
    try:
        z = np.load(path, allow_pickle=False)
        data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CemsimError(f"{path}: not a readable .npz ({exc})") from None
    if "addr" not in data:
        raise CemsimError(f"{path}: an .npz stream needs an 'addr' array (has: {', '.join(sorted(data))})")
    addr = np.asarray(data["addr"])
    if addr.ndim != 1 or not np.issubdtype(addr.dtype, np.integer):
        raise CemsimError(f"{path}: 'addr' must be a 1-D integer array")
    n = addr.shape[0]

    def arr(name: str) -> np.ndarray | None:
        if name not in data:
            return None
        v = np.asarray(data[name])
        if v.shape != (n,) or not (np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_):
            raise CemsimError(f"{path}: '{name}' must be an integer array with one entry per address ({n})")
        return v.astype(np.int64)

    is_write = arr("is_write")
    if is_write is None:
        is_write = np.zeros(n, dtype=np.int64)
    arrival = arr("arrival")
    if arrival is None:
        arrival = arr("arrival_cycle")
    depth = None
    if "K" in data:
        k = np.atleast_1d(np.asarray(data["K"]))
        if k.size == 0 or not np.issubdtype(k.dtype, np.integer) or int(k[0]) < 1:
            raise CemsimError(f"{path}: 'K' (keys in flight) must be a positive integer")
        depth = int(k[0])
        arrival = None
    elif arrival is None:
        raise CemsimError(f"{path}: give 'arrival' (cycles, open loop) or 'K' (closed loop) in the .npz")
    if arrival is not None and arrival.size and (arrival.min() < 0 or (np.diff(arrival) < 0).any()):
        raise CemsimError(f"{path}: arrival cycles must be non-negative and non-decreasing")
    return Stream(
        addr=addr.astype(np.uint64), is_write=is_write, arrival=arrival, depth=depth, key_id=arr("key_id")
    )


def read_stream(path: str | Path) -> Stream:
    path = Path(path)
    if not path.is_file():
        raise CemsimError(f"{path}: no such stream file")
    if path.suffix == ".npz":
        return read_npz_stream(path)
    return read_text_trace(path)
