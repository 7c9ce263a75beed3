"""State layout and timing primitives of the DRAM kernel (see kernel.py for the loop).

Event driven (DRAM-NOTES.md section 3): the loop jumps from one tick where something can happen (an offer
accepted, a command issued, a refresh falling due, a closed-loop key released) to the next. At every such
tick it does what a cycle-ticked controller does in that cycle: the client offers at most one request, the
scheduler issues at most one command (two with separate row/column buses), the per-bank profile moves at
most one transaction into a bank queue. Nothing can become legal between events, so this equals ticking
every cycle, at O(banks + queue) per event: a refused offer is retried the tick after room frees, and a
transaction moved into a bank queue brings the next tick in (its command may be legal then).
``replay(..., tick_every_cycle=True)`` runs the same loop on every tick; tests/dram/test_event_driven.py
holds the two equal.

State per channel: ``ready[node, cmd]`` (flat, ``_rx``) = earliest tick ``cmd`` may issue at that node of the device tree
(channel, pseudo-channel, rank, bank group, bank); issuing writes ``tick + lat`` into the nodes above the
bank (see timing.py). A rank's row also holds what was written to the channel and pseudo-channel above it
(ticks only grow, so pushing those writes down keeps it exact): a bank's command is legal at the maximum of
three rows (bank, group, rank), and the scheduler re-checks cached ticks after nearly every command. A
4-entry ring per rank enforces tFAW.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from cemsim.dram.timing import ACT, NCMD, RD, WR

SIB_LV = 5  # the constraint lists' extra level: a data command's rank switch, toward the other ranks
ACTL = (
    NCMD  # pseudo-command: the ACT-to-ACT spacing of other banks (tRRD), kept apart so broadcast ACTs skip it
)
NCOL = NCMD + 1
RW = 16  # row width of the flat ready table (>= NCOL; a power of two, so a node's row is a shift away)
NW = 8  # row width of the flat bank-to-node table
INF = np.int64(1) << np.int64(62)

# Parameter vector layout (built by replay.py).
(
    P_NPC,
    P_NRANK,
    P_NBG,
    P_NBPG,
    P_QUEUE,
    P_QSIZE,
    P_WQSIZE,
    P_BANKQ,
    P_HITCAP,
    P_ROWPOL,
    P_REF,
    P_NAAD,
    P_WCK,
    P_DUAL,
    P_BROADCAST,
    P_RDDELAY,
    P_WRDELAY,
    P_NFAW,
    P_NREFI,
    P_WCKRD,
    P_WCKWR,
    P_DEPTH,
    P_REFGROUP,  # ranks per refresh unit (and tFAW node): 1, or the SIDs of an HBM3 pseudo-channel
    P_EVERY,  # 1: visit every tick (a cycle-ticked run, to check the event-driven loop against)
) = range(24)
NPARAM = 24

# Scalar controller state S[...] (one int64 vector, so the kernel's parts can share it).
(
    S_TQN,  # per-bank profile: transactions waiting for a bank queue (reads)
    S_WQN,  # per-bank profile: writes waiting
    S_DRAIN,  # per-bank profile: writes left to drain
    S_RR,  # per-bank profile: round-robin pointer
    S_RBN,  # shared profile: read-buffer occupancy
    S_WBN,  # shared profile: write-buffer occupancy
    S_WMODE,  # shared profile: serving writes
    S_REFQN,  # pending refreshes (ranks in refq)
    S_CAS,  # request waiting behind its CAS, or -1
    S_WCKEXP,  # tick when WCK turns off
    S_FIN,  # requests finished
    S_HN,  # closed-loop release heap size
    S_NA2,  # ACT-2s owed
    S_NDIRTY,  # banks whose candidates need rebuilding (listed in the dirty stack)
    S_NBUSY,  # per-bank profile: banks whose queue is not empty
    S_NEXT,  # scratch: the selectors' earliest next tick
    S_REST,  # 1 if the selector left banks' cached ticks out of its next tick (next_tick_rest)
    S_RESTMASK,  # ... the banks it did not leave out (bits)
) = range(18)
NSTATE = 18
# Bank state BS[bank, ...]: open row (-1 closed), accesses since its ACT, ACT-2 deadline and owner (-1 none),
# requests past their own ACT (shared profile's active buffer), transactions waiting for its queue (per-bank
# profile: reads, writes).
B_OPEN, B_HITS, B_A2DL, B_A2REQ, B_ACTN, B_TQ, B_WQ = range(7)
NBSTATE = 7
# Per-bank candidate cache slots[bank, k, field]: what the bank's queue asks for next (rebuilt when the bank's
# queue or state changes) and when it becomes legal (recomputed after every command).
F_I, F_CMD, F_KEY, F_ACTIVE, F_LIM, F_E = range(
    6
)  # request, command, order key, active buffer, ACT limits, tick
NFIELD = 6
NSLOT = 4

# Counter layout.
C_READ_HITS = NCMD  # reads served from a row an earlier access already used (DRAMsim3's definition)
C_READS = NCMD + 1
C_AUTO_PRE = NCMD + 2
C_END = NCMD + 3
C_STATUS = NCMD + 4  # 0 ok, 1 stuck (no event left with requests pending)
C_EVENTS = NCMD + 5  # ticks the loop visited
C_RANK_ACTIVE = NCMD + 6  # rank-ticks with at least one open bank (active standby, as DRAMsim3 counts it)
NCOUNT = NCMD + 7

K_READ, K_WRITE, K_OP = 0, 1, 2


@intrinsic
def prefetch(typingctx, arr, idx, write):
    """Hint the CPU to fetch the cache line of ``arr[idx]`` (LLVM's prefetch: never faults, so ``idx`` may run
    past the end). ``write`` (a literal bool) asks for the line in a writable state. The per-request arrays
    (2 MB each at 262,144 requests) are read or written once per request at ticks far apart, and the loop
    otherwise waits on those cache misses."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    if not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, cgutils.voidptr_t), i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx, write), codegen


@numba.njit(cache=True, inline="always")
def _lo(a, b):
    """min(a, b) for ints, inline: Numba compiles the builtin min/max as out-of-line calls that pass their
    arguments through the stack, which in the event loop forces spills around every call."""
    return a if a <= b else b


@numba.njit(cache=True, inline="always")
def _hi(a, b):
    """max(a, b) for ints, inline (see _lo)."""
    return a if a >= b else b


@numba.njit(cache=True, inline="always")
def _rx(node, cmd):
    """Index of ``ready[node, cmd]`` in the flat table: unsigned, and a row width known when Numba compiles,
    so LLVM needs no stride or negative-index wraparound."""
    return np.uint64(node) * np.uint64(RW) + np.uint64(cmd)


@numba.njit(cache=True, inline="always")
def _nd(nodes, b, lv):
    """Bank b's node at level lv (0 channel, 1 pseudo-channel, 2 rank, 3 bank group, 4 bank, 5 tFAW node)."""
    return nodes[np.uint64(b) * np.uint64(NW) + np.uint64(lv)]


@numba.njit(cache=True, inline="always")
def _earliest(ready, nodes, b, cmd, faw, faw_head, faw_cnt, nfaw, limited):
    # rank rows include the channel's and pseudo-channel's ticks (module docs)
    e = ready[_rx(_nd(nodes, b, 4), cmd)]
    for lv in (2, 3):
        v = ready[_rx(_nd(nodes, b, lv), cmd)]
        if v > e:
            e = v
    if cmd == ACT and limited:
        for lv in (2, 3):
            v = ready[_rx(_nd(nodes, b, lv), ACTL)]
            if v > e:
                e = v
        r = _nd(nodes, b, 5)  # the node tFAW counts at (rank, or pseudo-channel for HBM3)
        if faw_cnt[r] >= 4:
            v = faw[r * np.uint64(4) + np.uint64(faw_head[r])] + nfaw
            if v > e:
                e = v
    return e


@numba.njit(cache=True, inline="always")
def _earliest_rank(ready, rank_node, pc_node, cmd):
    e = ready[_rx(0, cmd)]
    v = ready[_rx(pc_node, cmd)]
    if v > e:
        e = v
    v = ready[_rx(rank_node, cmd)]
    if v > e:
        e = v
    return e


@numba.njit(cache=True, inline="always")
def _apply(ready, rspan, node, lv, cmd, t, cl_n, cl_nx, cl_l, skip_actl, push):
    """Constraints of cmd issued at node (level lv): raise the ready ticks, and with ``push`` (a channel or
    pseudo-channel node) those of the rank rows below it too (``rspan[node]``). The constraint lists are flat:
    ``cl_n[lv * NCMD + cmd]`` entries from ``(lv * NCMD + cmd) * NCOL`` in ``cl_nx`` / ``cl_l``."""
    lc = np.uint64(lv) * np.uint64(NCMD) + np.uint64(cmd)
    k0 = lc * np.uint64(NCOL)
    for k in range(cl_n[lc]):
        nx = cl_nx[k0 + np.uint64(k)]
        if skip_actl and nx == ACTL:
            continue
        v = t + cl_l[k0 + np.uint64(k)]
        ix = _rx(node, nx)
        if v > ready[ix]:
            ready[ix] = v
        if push:
            for r in range(
                rspan[np.uint64(node) * np.uint64(2)], rspan[np.uint64(node) * np.uint64(2) + np.uint64(1)]
            ):
                ix = _rx(r, nx)
                if v > ready[ix]:
                    ready[ix] = v


@numba.njit(cache=True, inline="always")
def _issue_bank(ready, rspan, nodes, b, cmd, t, cl_n, cl_nx, cl_l, rank_nodes_of_pc, nrank, faw, faw_head,
                faw_cnt, limited):  # fmt: skip
    # the five levels written out, so only the channel and pseudo-channel push into rank rows
    _apply(ready, rspan, _nd(nodes, b, 0), 0, cmd, t, cl_n, cl_nx, cl_l, not limited, True)
    _apply(ready, rspan, _nd(nodes, b, 1), 1, cmd, t, cl_n, cl_nx, cl_l, not limited, True)
    for lv in (2, 3, 4):
        _apply(ready, rspan, _nd(nodes, b, lv), lv, cmd, t, cl_n, cl_nx, cl_l, not limited, False)
    if cmd in (RD, WR):
        pcn = np.int64(_nd(nodes, b, 1)) - 1
        me = np.int64(_nd(nodes, b, 2))
        for k in range(nrank):
            other = rank_nodes_of_pc[pcn, k]
            if other != me:
                _apply(ready, rspan, other, SIB_LV, cmd, t, cl_n, cl_nx, cl_l, False, False)
    if cmd == ACT and limited:
        r = _nd(nodes, b, 5)
        h = np.uint64(faw_head[r])
        if faw_cnt[r] < 4:
            faw[r * np.uint64(4) + ((h + np.uint64(faw_cnt[r])) & np.uint64(3))] = t
            faw_cnt[r] += 1
        else:
            faw[r * np.uint64(4) + h] = t
            faw_head[r] = (faw_head[r] + 1) & 3


@numba.njit(cache=True, inline="always")
def _remove_at(arr, n, pos):
    """Drop ``arr[pos]`` from the first ``n`` entries, keeping order; returns the new count."""
    for j in range(pos, n - 1):
        arr[j] = arr[j + 1]
    return n - 1


@numba.njit(cache=True, inline="always")
def _heap_push(heap, n, v):
    heap[n] = v
    i = n
    while i > 0:
        p = (i - 1) // 2
        if heap[p] <= heap[i]:
            break
        heap[p], heap[i] = heap[i], heap[p]
        i = p
    return n + 1


@numba.njit(cache=True, inline="always")
def _heap_pop(heap, n):
    top = heap[0]
    n -= 1
    heap[0] = heap[n]
    i = 0
    while True:
        a = 2 * i + 1
        if a >= n:
            break
        c = a
        if a + 1 < n and heap[a + 1] < heap[a]:
            c = a + 1
        if heap[i] <= heap[c]:
            break
        heap[i], heap[c] = heap[c], heap[i]
        i = c
    return top, n
