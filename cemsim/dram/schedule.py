"""Which command a controller issues at tick t: the two controller profiles' selection rules.

Each bank keeps up to NSLOT candidates (kernel_state.py, ``slots``): what its queued requests need next (an
access on a row hit, PRE on a conflict, ACT on a closed bank) with an order key and the tick the command
becomes legal. Candidates are rebuilt only when the bank's queue or state changes; their cached ticks are lower
bounds (a tick only grows as commands issue) re-checked only when they claim to be legal, so a tick costs
O(banks) plus the candidates that might issue. The selectors pick among candidates legal at ``t`` by the
profile's rule, write the choice into ``sel`` (request, command, bank, rank; -1 = none) and return the
earliest tick at which an eligible candidate that is not legal yet becomes legal.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from cemsim.dram.kernel_state import (
    B_A2DL,
    B_A2REQ,
    B_ACTN,
    B_HITS,
    B_OPEN,
    F_ACTIVE,
    F_CMD,
    F_E,
    F_I,
    F_KEY,
    F_LIM,
    INF,
    K_OP,
    K_READ,
    K_WRITE,
    S_CAS,
    S_NA2,
    S_NEXT,
    S_REFQN,
    S_REST,
    S_RESTMASK,
    S_RR,
    S_WCKEXP,
    S_WMODE,
    _earliest,
    _earliest_rank,
    _hi,
    _lo,
)
from cemsim.dram.timing import ACT, ACT2, CAS, OP, PRE, PREA, RD, REF, REFPB, WR


@numba.njit(cache=True, inline="always")
def _access_cmd(kd):
    if kd == K_READ:
        return RD
    if kd == K_WRITE:
        return WR
    return OP


@numba.njit(cache=True, inline="always")
def _put(slots, nslot, b, i, cmd, key, active, lim):
    k = nslot[b]
    slots[b, k, F_I] = i
    slots[b, k, F_CMD] = cmd
    slots[b, k, F_KEY] = key
    slots[b, k, F_ACTIVE] = active
    slots[b, k, F_LIM] = lim
    slots[b, k, F_E] = INF
    nslot[b] = k + 1


@numba.njit(cache=True, _nrt=False, inline="always")
def rebuild_per_bank(b, BS, bq, bqn, row, kind, hitcap, broadcast, slots, nslot):
    """DRAMsim3-like bank queue: the first read, write and op hit in queue order; PRE from the head only, if
    no queued request hits the open row or ``hitcap`` hits were served; ACT from the head of a closed bank.
    Key = queue position (the queue is served in order: first ready wins)."""
    nslot[b] = 0
    if bqn[b] == 0:
        return
    orow = BS[b, B_OPEN]
    if orow < 0:
        i = bq[b, 0]
        _put(slots, nslot, b, i, ACT, 0, 0, 0 if (broadcast and kind[i] == K_OP) else 1)
        return
    seen_r = False
    seen_w = False
    seen_o = False
    pending_hit = False
    for j in range(bqn[b]):
        i = bq[b, j]
        if row[i] != orow:
            continue
        pending_hit = True
        kd = kind[i]
        if kd == K_READ and not seen_r:
            seen_r = True
            _put(slots, nslot, b, i, RD, j, 0, 1)
        elif kd == K_WRITE and not seen_w:
            seen_w = True
            _put(slots, nslot, b, i, WR, j, 0, 1)
        elif kd == K_OP and not seen_o:
            seen_o = True
            _put(slots, nslot, b, i, OP, j, 0, 1)
    i = bq[b, 0]
    if row[i] != orow and (not pending_hit or (hitcap > 0 and BS[b, B_HITS] >= hitcap)):
        _put(slots, nslot, b, i, PRE, 0, 0, 1)


@numba.njit(cache=True, _nrt=False, inline="always")
def rebuild_shared(b, BS, bq, bqn, stage, row, kind, write_mode, broadcast, slots, nslot):
    """Ramulator-2-like: the oldest access of a request past its own ACT (active buffer); the oldest row hit
    and the oldest other request of the buffer being served (reads, or writes in write mode); no PRE on a
    bank with an active request. Key = request index (arrival order: oldest first)."""
    nslot[b] = 0
    if bqn[b] == 0 or BS[b, B_A2DL] >= 0:
        return
    orow = BS[b, B_OPEN]
    got_hit = False
    got_act_hit = False
    got_other = False
    for j in range(bqn[b]):
        i = bq[b, j]
        kd = kind[i]
        st = stage[i]
        if orow >= 0 and row[i] == orow:
            if st == 2:
                if not got_act_hit:
                    got_act_hit = True
                    _put(slots, nslot, b, i, _access_cmd(kd), i, 1, 1)
            elif not got_hit and (kd == K_WRITE) == write_mode:
                got_hit = True
                _put(slots, nslot, b, i, _access_cmd(kd), i, 0, 1)
        elif not got_other and st == 0 and (kd == K_WRITE) == write_mode:
            got_other = True
            if orow >= 0:
                if BS[b, B_ACTN] == 0:  # never close a row an active request needs
                    _put(slots, nslot, b, i, PRE, i, 0, 1)
            else:
                _put(slots, nslot, b, i, ACT, i, 0, 0 if (broadcast and kd == K_OP) else 1)


@numba.njit(cache=True, inline="always")
def update_ticks(b, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw):
    """Compute bank b's candidates' ticks and their minimum ``bmin[b]`` (INF without candidates)."""
    m = INF
    for k in range(nslot[b]):
        e = _earliest(
            ready, nodes, b, slots[b, k, F_CMD], faw, faw_head, faw_cnt, nfaw, slots[b, k, F_LIM] == 1
        )
        slots[b, k, F_E] = e
        if e < m:
            m = e
    bmin[b] = m
    return m


@numba.njit(cache=True, inline="always")
def _verify(slots, b, k, ready, nodes, faw, faw_head, faw_cnt, nfaw):
    """A candidate's cached tick is a lower bound (ticks only grow as commands issue): recompute it when it
    claims to be legal now."""
    e = _earliest(ready, nodes, b, slots[b, k, F_CMD], faw, faw_head, faw_cnt, nfaw, slots[b, k, F_LIM] == 1)
    slots[b, k, F_E] = e
    return e


@numba.njit(cache=True, inline="always")
def _unit_ready(ready, u, rgroup, rk0, pc0, nrank, cmd):
    """When a rank-level command (PREA, REF) may issue to every rank of refresh unit u."""
    e = 0
    for r in range(u * rgroup, (u + 1) * rgroup):
        e = _hi(e, _earliest_rank(ready, rk0 + r, pc0 + r // nrank, cmd))
    return e


@numba.njit(cache=True, inline="always")
def refpb_banks(u, bpr):
    """Refresh unit u of per-bank refresh: rank u // (bpr / 2), banks p and p + bpr / 2 of that rank."""
    half = bpr // 2
    b1 = (u // half) * bpr + u % half
    return b1, b1 + half


@numba.njit(cache=True, inline="always")
def select_refpb(t, S, sel, BS, refq, ready, nodes, faw, faw_head, faw_cnt, nfaw, bpr, shared):
    """Per-bank refresh (LPDDR5 REFpb): close the pending unit's two banks (not under a request whose own ACT
    opened them, on the shared profile), then REFpb. Returns (next tick, banks whose ACTs wait: b1, b2)."""
    next_e = INF
    if S[S_REFQN] == 0:
        return next_e, -1, -1
    b1, b2 = refpb_banks(refq[0], bpr)
    closed = True
    for b in (b1, b2):
        if BS[b, B_OPEN] >= 0:
            closed = False
            if shared and (BS[b, B_ACTN] > 0 or BS[b, B_A2DL] >= 0):
                continue
            e = _earliest(ready, nodes, b, PRE, faw, faw_head, faw_cnt, nfaw, True)
            if e <= t:
                sel[1] = PRE
                sel[2] = b
                return next_e, b1, b2
            next_e = _lo(next_e, e)
    if closed:
        e = _hi(
            _earliest(ready, nodes, b1, REFPB, faw, faw_head, faw_cnt, nfaw, True),
            _earliest(ready, nodes, b2, REFPB, faw, faw_head, faw_cnt, nfaw, True),
        )
        if e <= t:
            sel[1] = REFPB
            sel[3] = refq[0]
            return next_e, b1, b2
        next_e = _lo(next_e, e)
    return next_e, b1, b2


@numba.njit(cache=True, inline="always")
def _is_col(cmd):
    return cmd in (RD, WR, OP)


@numba.njit(cache=True, inline="always")
def _ctz(x):
    """Index of the lowest set bit of a non-zero int64 (LLVM's cttz: one instruction). The ``& 63`` tells LLVM
    the result is not negative, so bank tables indexed by it skip Numba's negative-index wraparound."""
    return trailing_zeros(x) & 63


@numba.njit(cache=True, inline="always")
def _bank_pick(
    t, S, sel, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw, b, blk1, blk2, next_e_out
):
    """Per-bank profile: bank b's first legal candidate in queue order into ``sel`` (True), else fold its
    candidates' ticks into ``next_e_out[0]``; re-checks cached ticks that claim to be legal, refreshes bmin[b]."""
    best = -1
    m = INF
    for k in range(nslot[b]):
        e = slots[b, k, F_E]
        if slots[b, k, F_CMD] == ACT and (b in (blk1, blk2)):
            m = _lo(m, e)
            continue
        if e <= t:
            e = _verify(slots, b, k, ready, nodes, faw, faw_head, faw_cnt, nfaw)
        m = _lo(m, e)
        if e <= t:
            if best < 0 or slots[b, k, F_KEY] < slots[b, best, F_KEY]:
                best = k
        elif e < next_e_out[0]:
            next_e_out[0] = e
    bmin[b] = m
    if best < 0:
        return False
    sel[0] = slots[b, best, F_I]
    sel[1] = slots[b, best, F_CMD]
    sel[2] = b
    S[S_RR] = b
    return True


@numba.njit(cache=True, _nrt=False, inline="always")
def select_per_bank(t, S, sel, BS, refq, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw, nb,
                    bpr, nrank, rk0, pc0, rgroup, second, refmode, claims):  # fmt: skip
    """DRAMsim3-like: the pending refresh first (PRE each open bank of its rank, then REF), then bank queues
    round-robin from the one after the last served, each giving its first ready command in queue order.
    ``second``: the extra look of a dual-command (HBM) tick: no refresh command, the caller discards a
    command of the same kind as the first (DRAMsim3's Controller::ClockTick). ``claims`` (up to 64 banks):
    the banks whose cached tick is <= t, as bits (the kernel builds it before the tick's candidate rebuilds
    and patches the rebuilt banks' bits, so the pass over ``bmin`` does not wait on their fresh stores)."""
    next_e = INF
    next_e_out = S[S_NEXT : S_NEXT + 1]
    next_e_out[0] = INF
    skip_rank = -1
    blk1 = -1
    blk2 = -1
    if refmode == 3:
        if not second:
            next_e, blk1, blk2 = select_refpb(
                t, S, sel, BS, refq, ready, nodes, faw, faw_head, faw_cnt, nfaw, bpr, False
            )
            if sel[1] >= 0:
                return next_e
        elif S[S_REFQN] > 0:
            blk1, blk2 = refpb_banks(refq[0], bpr)
    elif S[S_REFQN] > 0:
        u = refq[0]  # refresh unit: ranks u * rgroup ... (u + 1) * rgroup - 1
        skip_rank = u
        if not second:
            all_closed = True
            for bb in range(rgroup * bpr):
                b = u * rgroup * bpr + bb
                if BS[b, B_OPEN] >= 0:
                    all_closed = False
                    e = _earliest(ready, nodes, b, PRE, faw, faw_head, faw_cnt, nfaw, True)
                    if e <= t:
                        sel[1] = PRE
                        sel[2] = b
                        return next_e
                    next_e = _lo(next_e, e)
            if all_closed:
                e = _unit_ready(ready, u, rgroup, rk0, pc0, nrank, REF)
                if e <= t:
                    sel[1] = REF
                    sel[3] = u
                    return next_e
                next_e = _lo(next_e, e)
    # banks of the refresh unit being served are skipped
    skip_lo = skip_rank * rgroup * bpr if skip_rank >= 0 else nb
    skip_hi = skip_lo + rgroup * bpr
    if nb <= 64:
        # the banks that may have a legal candidate (cached tick <= t, or ACTs held by refresh), as bits,
        # visited in round-robin order from the one after the last served
        mask = claims
        for b in (blk1, blk2):
            if b >= 0:
                mask |= np.int64(1) << b
        for b in range(skip_lo, _lo(skip_hi, nb)):
            mask &= ~(np.int64(1) << b)
        start = S[S_RR] + 1
        if start >= nb:
            start = 0
        below = (np.int64(1) << start) - 1
        for part in (mask & ~below, mask & below):
            while part != 0:
                b = _ctz(part)
                part &= part - 1
                if _bank_pick(t, S, sel, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw, b,
                              blk1, blk2, next_e_out):  # fmt: skip
                    return next_e_out[0]
        # the banks outside the mask and the refresh unit add their cached ticks to the next tick; that is
        # needed only when nothing else brings the next tick in (rarely), so the kernel folds them in then
        # (next_tick_rest): nothing changes bmin until then on a tick that issues nothing
        for b in range(skip_lo, _lo(skip_hi, nb)):
            mask |= np.int64(1) << b
        S[S_RESTMASK] = mask
        S[S_REST] = 1
        return _lo(next_e, next_e_out[0])
    b = S[S_RR]
    for _ in range(nb):
        b += 1
        if b >= nb:
            b = 0
        m = bmin[b]
        if m > t and b != blk1 and b != blk2:
            # no candidate claims to be legal: the bank's earliest tick is its next event (INF if empty)
            if m < next_e and not (skip_lo <= b < skip_hi):
                next_e = m
            continue
        if skip_lo <= b < skip_hi:
            continue
        if _bank_pick(t, S, sel, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw, b, blk1, blk2,
                      next_e_out):  # fmt: skip
            return next_e_out[0]
    return _lo(next_e, next_e_out[0])


@numba.njit(cache=True, inline="always")
def next_tick_rest(S, bmin, nb):
    """The cached ticks the selector left out of its next tick (``S[S_RESTMASK]``: the banks it looked at or
    skipped), folded in when the kernel needs the exact next event."""
    mask = S[S_RESTMASK]
    e = INF
    for b in range(nb):
        e = _lo(e, INF if ((mask >> b) & 1) != 0 else bmin[b])
    return e


@numba.njit(cache=True, _nrt=False, inline="always")
def select_shared(t, S, sel, BS, refq, slots, nslot, bmin, kind, bank, ready, nodes, faw, faw_head, faw_cnt, nfaw,
                  nb, bpr, nrank, rk0, pc0, rgroup, naad, wck, col_only, row_only, refmode, claims):  # fmt: skip
    """Ramulator-2-like: an access waiting behind its CAS; an ACT-2 at its deadline; else the oldest ready
    access of a request whose own ACT opened its row (active buffer); else the pending refresh (PREA, then
    REF), which holds back the buffer; else the oldest ready request of the buffer, no ACT-1 while an ACT-2
    is owed; else an owed ACT-2. An access with WCK off first takes a CAS slot (LPDDR5)."""
    next_e = INF
    if S[S_CAS] >= 0:
        i = S[S_CAS]
        b = bank[i]
        cmd = _access_cmd(kind[i])
        e = _earliest(ready, nodes, b, cmd, faw, faw_head, faw_cnt, nfaw, True)
        if e <= t:
            sel[0] = i
            sel[1] = cmd
            sel[2] = b
            S[S_CAS] = -1
            return next_e
        return e
    has_act2 = False
    if S[S_NA2] > 0:
        best_dl = INF
        for b in range(nb):
            dl = BS[b, B_A2DL]
            if dl >= 0:
                has_act2 = True
                if dl <= t and dl < best_dl:
                    best_dl = dl
                    sel[2] = b
        if sel[2] >= 0:
            sel[1] = ACT2
            sel[0] = BS[sel[2], B_A2REQ]
            return next_e
    refq_n = S[S_REFQN]
    blk1 = -1
    blk2 = -1
    if refmode == 3:
        if not col_only:
            e, blk1, blk2 = select_refpb(
                t, S, sel, BS, refq, ready, nodes, faw, faw_head, faw_cnt, nfaw, bpr, True
            )
            next_e = _lo(next_e, e)
            if sel[1] >= 0:
                return next_e
        elif refq_n > 0:
            blk1, blk2 = refpb_banks(refq[0], bpr)
        refq_n = 0  # per-bank refresh holds only its banks' ACTs, not the buffer
    best_act = -1
    best_act_b = -1
    best_buf = -1
    best_buf_b = -1
    # a pending refresh changes which candidates count toward the next tick, so every bank is looked at; an
    # owed ACT-2 does not (the loop visits the next tick anyway, and banks whose cached ticks are later
    # cannot have a legal candidate)
    look_all = refq_n > 0
    for lo in range(0, nb, 64):
        if nb <= 64:
            # ``claims`` (built by the kernel before the candidate rebuilds, see select_per_bank): the others'
            # cached ticks count toward the next tick only when the kernel needs it (next_tick_rest)
            look = claims
            if look_all:
                look = np.int64(-1) if nb == 64 else (np.int64(1) << nb) - 1
            for b in (blk1, blk2):
                if b >= 0:
                    look |= np.int64(1) << b
            S[S_RESTMASK] = look
            S[S_REST] = 1
        else:
            look = np.int64(0)
            # banks to look at, 64 at a time, in one branch-free pass: a cached tick claiming t, or held ACTs,
            # or everything while a refresh is pending; the others' earliest candidates are next events (with
            # dual buses the column and the row look together see every candidate once)
            for b in range(lo, _lo(lo + 64, nb)):
                m = bmin[b]
                here = (m <= t) | look_all | (b == blk1) | (b == blk2)
                look |= np.int64(here) << (b - lo)
                next_e = _lo(next_e, INF if here else m)
        while look != 0:
            b = lo + _ctz(look)
            look &= look - 1
            m = INF
            for k in range(nslot[b]):
                e = slots[b, k, F_E]
                cmd = slots[b, k, F_CMD]
                col = _is_col(cmd)
                active = slots[b, k, F_ACTIVE] == 1
                if ((col_only and not col) or (row_only and col)) or (
                    cmd == ACT and (has_act2 or b in (blk1, blk2))
                ):
                    m = _lo(m, e)  # not a candidate this tick: its cached tick stays as it is
                    continue
                if e <= t:
                    e = _verify(slots, b, k, ready, nodes, faw, faw_head, faw_cnt, nfaw)
                m = _lo(m, e)
                if e > t:
                    if e < next_e and (active or refq_n == 0):
                        next_e = e
                    continue
                if active:
                    if best_act < 0 or slots[b, k, F_KEY] < slots[best_act_b, best_act, F_KEY]:
                        best_act = k
                        best_act_b = b
                elif best_buf < 0 or slots[b, k, F_KEY] < slots[best_buf_b, best_buf, F_KEY]:
                    best_buf = k
                    best_buf_b = b
            bmin[b] = m
    if best_act >= 0:
        sel[0] = slots[best_act_b, best_act, F_I]
        sel[1] = slots[best_act_b, best_act, F_CMD]
        sel[2] = best_act_b
    elif refq_n > 0:  # a pending refresh holds back the buffer (on both buses)
        if not col_only:
            u = refq[0]
            any_open = False
            blocked = False
            for bb in range(rgroup * bpr):
                b = u * rgroup * bpr + bb
                if BS[b, B_OPEN] >= 0:
                    any_open = True
                if BS[b, B_ACTN] > 0 or BS[b, B_A2DL] >= 0:
                    blocked = True
            cmd = PREA if any_open else REF
            if not (any_open and blocked):
                e = _unit_ready(ready, u, rgroup, rk0, pc0, nrank, cmd)
                if e <= t:
                    sel[1] = cmd
                    sel[3] = u
                elif e < next_e:
                    next_e = e
    elif best_buf >= 0:
        sel[0] = slots[best_buf_b, best_buf, F_I]
        sel[1] = slots[best_buf_b, best_buf, F_CMD]
        sel[2] = best_buf_b
    if sel[1] < 0 and has_act2:
        best_dl = INF
        for b in range(nb):
            dl = BS[b, B_A2DL]
            if dl >= 0 and dl < best_dl:
                best_dl = dl
                sel[2] = b
        sel[1] = ACT2
        sel[0] = BS[sel[2], B_A2REQ]
        return next_e
    if wck and (sel[1] == RD or sel[1] == WR) and t >= S[S_WCKEXP]:
        owed = -1
        for b in range(nb):
            if BS[b, B_A2DL] >= 0 and BS[b, B_A2DL] <= t + 1:
                owed = b
        if owed >= 0:
            sel[2] = owed
            sel[1] = ACT2
            sel[0] = BS[owed, B_A2REQ]
        else:
            S[S_CAS] = sel[0]
            sel[1] = CAS
    return next_e


__all__ = [
    "S_WMODE",
    "rebuild_per_bank",
    "rebuild_shared",
    "select_per_bank",
    "select_shared",
    "update_ticks",
]
