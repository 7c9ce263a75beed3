"""`replay`: check a request stream, pack it and the spec for the kernel, run it once, wrap the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numba
import numpy as np

from cemsim.dram import kernel_state as K
from cemsim.dram.kernel import simulate
from cemsim.dram.spec import DramSpec
from cemsim.dram.stats import summarize
from cemsim.dram.timing import ACT, BANK, NCMD, tables
from cemsim.errors import CemsimError

KIND_READ, KIND_WRITE, KIND_OP = 0, 1, 2


@dataclass
class DramResult:
    """Per-request times (ticks of ``spec.tck_s``) and the run's statistics.

    ``done``: data return for reads, end of the write burst for writes, end of the op for bank-internal
    ops. ``accepted``: the tick the controller took the request. ``issued``: the tick the client offered
    it (arrival in open loop, its key's start in closed loop). ``first_command``: its first DRAM command;
    ``row_class``: 0 row hit, 1 miss (bank closed), 2 conflict (another row open), by that command.
    """

    spec: DramSpec
    done: np.ndarray
    accepted: np.ndarray
    issued: np.ndarray
    first_command: np.ndarray
    row_class: np.ndarray
    kind: np.ndarray
    channel: np.ndarray
    closed_loop: bool
    counts: np.ndarray  # [channel, counter] (kernel layout)
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def stats(self) -> dict[str, Any]:
        return summarize(self)


def _as_int(name: str, value, n: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise CemsimError(f"replay: {name} must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        raise CemsimError(f"replay: {name} must hold integers, got dtype {arr.dtype}")
    if n is not None and arr.shape[0] != n:
        raise CemsimError(f"replay: {name} has {arr.shape[0]} entries, the stream has {n}")
    # no copy when the caller's array is already a writable contiguous int64 one (the kernel only reads it)
    out = np.ascontiguousarray(arr, dtype=np.int64)
    return out if out.flags.writeable else out.copy()


@numba.njit(cache=True)
def _first_outside(arr: np.ndarray, lo: int, hi: int) -> int:
    """Index of the first value outside [lo, hi), or -1: one pass (min and max would be two per array)."""
    for i in range(arr.shape[0]):
        if arr[i] < lo or arr[i] >= hi:
            return i
    return -1


@numba.njit(cache=True)
def _flat_banks(rank, bankgroup, bank, row, column, nrank, nbg, nbpg, nrows, ncols, out):
    """One compiled pass: ``out`` = (rank * nbg + bankgroup) * nbpg + bank; returns whether any coordinate is
    outside its range (branch-free, so the loop vectorizes; the caller then finds and reports the first)."""
    bad = False
    for i in range(rank.shape[0]):
        r, g, k, w, c = rank[i], bankgroup[i], bank[i], row[i], column[i]
        bad |= (r < 0) | (r >= nrank) | (g < 0) | (g >= nbg) | (k < 0) | (k >= nbpg)
        bad |= (w < 0) | (w >= nrows) | (c < 0) | (c >= ncols)
        out[i] = (r * nbg + g) * nbpg + k
    return bad


def _check_range(name: str, arr: np.ndarray, size: int, spec: DramSpec) -> None:
    i = _first_outside(arr, 0, size)
    if i >= 0:
        raise CemsimError(f"replay: {name} value {int(arr[i])} is outside [0, {size}) for {spec.name}")


def kernel_params(spec: DramSpec, depth: int, every_cycle: bool = False) -> np.ndarray:
    t = spec.timing
    prof = spec.controller
    codes = prof.codes()
    P = np.zeros(K.NPARAM, dtype=np.int64)
    P[K.P_NPC] = spec.pseudo_channels
    P[K.P_NRANK] = spec.ranks
    P[K.P_NBG] = spec.bankgroups
    P[K.P_NBPG] = spec.banks_per_group
    P[K.P_QUEUE] = codes["queue"]
    P[K.P_QSIZE] = prof.queue_size
    P[K.P_WQSIZE] = prof.write_queue_size
    P[K.P_BANKQ] = prof.bank_queue_depth
    P[K.P_HITCAP] = prof.row_hit_cap
    P[K.P_ROWPOL] = codes["row_policy"]
    P[K.P_REF] = codes["refresh"]
    P[K.P_NAAD] = t["nAAD"]
    P[K.P_WCK] = int(prof.wck_sync)
    P[K.P_DUAL] = int(prof.dual_command)
    P[K.P_BROADCAST] = int(spec.act_limits == "broadcast")
    P[K.P_RDDELAY] = spec.read_delay
    P[K.P_WRDELAY] = t["nCWL"] + t["nBL"]
    P[K.P_NFAW] = t["nFAW"]
    P[K.P_NREFI] = t["nREFIpb"] if prof.refresh == "per_bank" else t["nREFI"]
    P[K.P_WCKRD] = t["nCL"] + t["nBL"] + t["nWCKPST"]
    P[K.P_WCKWR] = t["nCWL"] + t["nBL"] + t["nWCKPST"]
    P[K.P_DEPTH] = depth
    P[K.P_REFGROUP] = spec.ranks if spec.rank_scope == "pseudo_channel" else 1
    P[K.P_EVERY] = int(every_cycle)
    return P


_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def kernel_tables(spec: DramSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constraint lists per (level, command), the rank switch (toward the other ranks of the pseudo-channel)
    as an extra level ``K.SIB_LV``, with ACT-to-ACT spacing above the bank moved to the ACTL pseudo-command
    (so broadcast ACTs can skip it). Cached per timing set: models that replay many small streams call this
    once."""
    key = (tuple(sorted(spec.timing.items())), spec.rank_scope)
    if key not in _TABLES:
        _TABLES[key] = _build_kernel_tables(spec)
    return _TABLES[key]


def _build_kernel_tables(spec: DramSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat, sib = tables(spec)
    nlev = lat.shape[0] + 1
    full = np.full((nlev, NCMD, K.NCOL), -1, dtype=np.int64)
    full[: K.SIB_LV, :, :NCMD] = lat
    full[K.SIB_LV, :, :NCMD] = sib
    for lv in range(K.SIB_LV):
        if lv != BANK and full[lv, ACT, ACT] >= 0:
            full[lv, ACT, K.ACTL] = full[lv, ACT, ACT]
            full[lv, ACT, ACT] = -1
    cl_n = np.zeros((nlev, NCMD), dtype=np.int64)
    cl_nx = np.zeros((nlev, NCMD, K.NCOL), dtype=np.int64)
    cl_l = np.zeros((nlev, NCMD, K.NCOL), dtype=np.int64)
    for lv in range(nlev):
        for c in range(NCMD):
            for nx in range(K.NCOL):
                if full[lv, c, nx] >= 0:
                    k = cl_n[lv, c]
                    cl_nx[lv, c, k] = nx
                    cl_l[lv, c, k] = full[lv, c, nx]
                    cl_n[lv, c] += 1
    return cl_n, cl_nx, cl_l


def replay(
    spec: DramSpec,
    rank,
    bankgroup,
    bank,
    row,
    column,
    is_write,
    channel=None,
    arrival=None,
    depth: int | None = None,
    key_id=None,
    kind=None,
    hold=None,
    act_limits: str | None = None,
    tick_every_cycle: bool = False,
) -> DramResult:
    """Replay one request stream (one burst per request) on ``spec``; see the module docs of cemsim.dram.

    ``act_limits`` ("jedec" / "broadcast") overrides the spec's for this call: with "broadcast", ACTs of
    bank-internal ops (kind 2) skip tRRD and tFAW (the DReX all-bank PFU assumption). ``tick_every_cycle``
    visits every tick instead of jumping between events: the same results, slower; it exists to check the
    event-driven loop against a cycle-ticked run of the same rules (tests/dram/test_event_driven.py)."""
    import time
    from dataclasses import replace as _replace

    if act_limits is not None:
        if act_limits not in ("jedec", "broadcast"):
            raise CemsimError(f"replay: act_limits must be 'jedec' or 'broadcast', got {act_limits!r}")
        spec = _replace(spec, act_limits=act_limits)

    row = _as_int("row", row, None)
    n = row.shape[0]
    rank = _as_int("rank", rank, n)
    bankgroup = _as_int("bankgroup", bankgroup, n)
    bank = _as_int("bank", bank, n)
    column = _as_int("column", column, n)
    is_write = _as_int("is_write", is_write, n)
    nrank = spec.ranks * spec.pseudo_channels
    # The per-request arrays come as rows of two blocks: numpy asks the kernel for huge pages from 4 MiB on,
    # so a 262,144-request call takes tens of page faults instead of thousands (separate 2 MiB arrays are
    # returned to the system when freed and fault in again page by page on the next call: ~10 ms of system
    # time per call). Results: accept, first command, done, class, issue tick, kind (views of one block).
    ws = np.empty((8, n + 1), dtype=np.int64)  # flat banks, key numbers, and the kernel's scratch (ws[2:])
    flat_bank, key_local = ws[0, :n], ws[1, :n]
    outb = np.empty((6, n), dtype=np.int64)
    acc, first, done, cls, elig_out, kind_a = outb
    if _flat_banks(rank, bankgroup, bank, row, column, nrank, spec.bankgroups, spec.banks_per_group, spec.rows,
                   spec.columns, flat_bank):  # fmt: skip
        _check_range("rank", rank, nrank, spec)
        _check_range("bankgroup", bankgroup, spec.bankgroups, spec)
        _check_range("bank", bank, spec.banks_per_group, spec)
        _check_range("row", row, spec.rows, spec)
        _check_range("column", column, spec.columns, spec)
    if kind is None:
        np.not_equal(is_write, 0, out=kind_a)
    else:
        kind_a[:] = _as_int("kind", kind, n)  # kept in the result: never the caller's array
        _check_range("kind", kind_a, 3, spec)
    hold_a = np.zeros(n, dtype=np.int64) if hold is None else _as_int("hold", hold, n)
    if hold is not None and _first_outside(hold_a, 0, K.INF) >= 0:
        raise CemsimError("replay: hold must not be negative")
    chan = np.zeros(n, dtype=np.int64) if channel is None else _as_int("channel", channel, n).copy()
    if channel is not None and _first_outside(chan, 0, K.INF) >= 0:
        raise CemsimError("replay: channel must not be negative")
    closed = depth is not None
    if closed:
        if int(depth) < 1:
            raise CemsimError(f"replay: depth (keys in flight per channel) must be >= 1, got {depth}")
        if arrival is not None:
            raise CemsimError("replay: give either arrival (open loop) or depth (closed loop), not both")
        arr = np.zeros(n, dtype=np.int64)
    else:
        arr = np.zeros(n, dtype=np.int64) if arrival is None else _as_int("arrival", arrival, n)
        if arrival is not None and _first_outside(arr, 0, K.INF) >= 0:
            raise CemsimError("replay: arrival ticks must not be negative")
    keys = np.arange(n, dtype=np.int64) if key_id is None else _as_int("key_id", key_id, n)

    nch = int(chan.max()) + 1 if (n and channel is not None) else 1
    # one channel (the common case): the stream is already in channel order, so nothing is reordered
    order = np.argsort(chan, kind="stable") if nch > 1 else None

    def take(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    if nch == 1:
        seg = np.array([0, n], dtype=np.int64)
    else:
        seg = np.searchsorted(take(chan), np.arange(nch + 1)).astype(np.int64)
    # keys: consecutive runs of equal key_id within each channel's sub-stream, numbered from 0 per channel
    k_sorted = take(keys)
    nkeys = np.zeros(nch, dtype=np.int64)
    for c in range(nch):
        a, z = seg[c], seg[c + 1]
        if z > a:
            # in place (no temporaries): 0, then +1 wherever the key changes
            ks, loc = k_sorted[a:z], key_local[a:z]
            loc[0] = 0
            np.not_equal(ks[1:], ks[:-1], out=loc[1:])
            np.cumsum(loc, out=loc)
            nkeys[c] = loc[-1] + 1
    if arrival is not None:
        # open loop: offers are in stream order per channel; arrivals must not go backwards
        a_sorted = take(arr)
        for c in range(nch):
            s = a_sorted[seg[c] : seg[c + 1]]
            if s.size > 1 and (np.diff(s) < 0).any():
                raise CemsimError(
                    f"replay: arrival ticks decrease within channel {c}; requests are offered in stream order"
                )

    P = kernel_params(spec, int(depth) if closed else 0, tick_every_cycle)
    cl_n, cl_nx, cl_l = kernel_tables(spec)
    # the kernel writes every request's accept, done, class and issue tick (a stuck run raises below), and
    # reads ``first`` (-1 = no command yet)
    first.fill(-1)
    counts = np.zeros((nch, K.NCOUNT), dtype=np.int64)
    t0 = time.perf_counter()
    simulate(
        P,
        cl_n,
        cl_nx,
        cl_l,
        seg,
        take(flat_bank),
        take(row),
        take(kind_a),
        take(hold_a),
        take(arr),
        key_local,
        nkeys,
        acc,
        first,
        done,
        cls,
        counts,
        elig_out,
        ws[2:],
    )
    wall = time.perf_counter() - t0
    if counts[:, K.C_STATUS].any():
        raise CemsimError(
            f"replay: the engine found no legal next event with requests pending on {spec.name} "
            "(an internal deadlock); please report the stream"
        )
    if order is not None:
        inv = np.empty(n, dtype=np.int64)
        inv[order] = np.arange(n)
        done, acc, elig_out, first, cls = done[inv], acc[inv], elig_out[inv], first[inv], cls[inv]
    return DramResult(
        spec=spec,
        done=done,
        accepted=acc,
        issued=elig_out,
        first_command=first,
        row_class=cls,
        kind=kind_a,
        channel=chan,
        closed_loop=closed,
        counts=counts,
        wall_s=wall,
    )


__all__ = ["ACT", "KIND_OP", "KIND_READ", "KIND_WRITE", "DramResult", "replay"]


def warm() -> None:
    """Compile the engine's kernel into Numba's cache (``__pycache__`` beside cemsim/dram/kernel.py) with a tiny
    replay: a cold compile takes 1.5-3 minutes on a 2-core machine, which the Makefile pays at install rather than
    a user's first DReX run or a test whose subprocess has a time limit. Every replay calls the kernel with the
    same argument types, so one compile serves all."""
    from cemsim.dram.loader import load_dram_spec

    spec = load_dram_spec("lpddr5x-8533")
    n = 64
    zeros = np.zeros(n, dtype=np.int64)
    replay(spec, zeros, zeros, np.arange(n) % spec.banks_per_group, np.arange(n), zeros, zeros)
