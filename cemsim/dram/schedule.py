"""Which command a controller issues at tick t: the two controller profiles' selection rules.

Each selector looks at every bank's queued requests, decides what each needs next (an access on a row hit,
PRE on a conflict, ACT on a closed bank), computes when that command is legal, and picks among those legal
at ``t`` by the profile's rule. It writes the choice into ``sel`` (request, command, bank, rank; -1 = none)
and returns the earliest tick at which an eligible command that is not legal yet becomes legal, so the loop
can jump there.
"""

from __future__ import annotations

import numba

from cemsim.dram.kernel_state import (
    B_A2DL,
    B_A2REQ,
    B_ACTN,
    B_HITS,
    B_OPEN,
    INF,
    K_OP,
    K_READ,
    K_WRITE,
    S_CAS,
    S_RBN,
    S_REFQN,
    S_RR,
    S_WBN,
    S_WCKEXP,
    S_WMODE,
    _earliest,
    _earliest_rank,
)
from cemsim.dram.timing import ACT, ACT2, CAS, OP, PRE, PREA, RD, REF, WR


@numba.njit(cache=True)
def _access_cmd(kd):
    if kd == K_READ:
        return RD
    if kd == K_WRITE:
        return WR
    return OP


@numba.njit(cache=True)
def select_per_bank(
    t,
    S,
    sel,
    BS,
    bq,
    bqn,
    refq,
    row,
    kind,
    ready,
    nodes,
    faw,
    faw_head,
    faw_cnt,
    nfaw,
    nb,
    bpr,
    nrank,
    rk0,
    pc0,
    hitcap,
    broadcast,
    col_only,
    row_only,
):
    """DRAMsim3-like: the pending refresh first (PRE each open bank of its rank, then REF), then bank queues
    round-robin from the one after the last served, each giving its first ready command in queue order; a
    PRE only from the queue head and only if no queued request hits the open row or ``hitcap`` hits were
    served. ``col_only``/``row_only`` restrict the second command of a dual-bus tick."""
    next_e = INF
    skip_rank = -1
    if S[S_REFQN] > 0 and not col_only:
        r = refq[0]
        skip_rank = r
        all_closed = True
        for bb in range(bpr):
            b = r * bpr + bb
            if BS[b, B_OPEN] >= 0:
                all_closed = False
                e = _earliest(ready, nodes, b, PRE, faw, faw_head, faw_cnt, nfaw, True)
                if e <= t:
                    sel[1] = PRE
                    sel[2] = b
                    return next_e
                if e < next_e:
                    next_e = e
        if all_closed:
            e = _earliest_rank(ready, rk0 + r, pc0 + r // nrank, REF)
            if e <= t:
                sel[1] = REF
                sel[3] = r
                return next_e
            if e < next_e:
                next_e = e
    elif S[S_REFQN] > 0:
        skip_rank = refq[0]
    b = S[S_RR]
    for _ in range(nb):
        b += 1
        if b >= nb:
            b = 0
        if bqn[b] == 0 or b // bpr == skip_rank:
            continue
        orow = BS[b, B_OPEN]
        if orow >= 0:
            pending_hit = False
            for j in range(bqn[b]):
                if row[bq[b, j]] == orow:
                    pending_hit = True
                    break
            for j in range(bqn[b]):
                i = bq[b, j]
                if row[i] == orow:
                    if row_only:
                        continue
                    cmd = _access_cmd(kind[i])
                else:
                    if col_only or j != 0:
                        continue
                    if pending_hit and (hitcap <= 0 or BS[b, B_HITS] < hitcap):
                        continue
                    cmd = PRE
                e = _earliest(ready, nodes, b, cmd, faw, faw_head, faw_cnt, nfaw, True)
                if e <= t:
                    sel[0] = i
                    sel[1] = cmd
                    sel[2] = b
                    S[S_RR] = b
                    return next_e
                if e < next_e:
                    next_e = e
        elif not col_only:
            i = bq[b, 0]
            lim = not (broadcast and kind[i] == K_OP)
            e = _earliest(ready, nodes, b, ACT, faw, faw_head, faw_cnt, nfaw, lim)
            if e <= t:
                sel[0] = i
                sel[1] = ACT
                sel[2] = b
                S[S_RR] = b
                return next_e
            if e < next_e:
                next_e = e
    return next_e


@numba.njit(cache=True)
def select_shared(
    t,
    S,
    sel,
    BS,
    bq,
    bqn,
    stage,
    refq,
    row,
    kind,
    bank,
    ready,
    nodes,
    faw,
    faw_head,
    faw_cnt,
    nfaw,
    nb,
    bpr,
    nrank,
    rk0,
    pc0,
    wqsize,
    naad,
    wck,
    broadcast,
    col_only,
    row_only,
):
    """Ramulator-2-like: an access waiting behind its CAS; an ACT-2 at its deadline; else the oldest ready
    access of a request whose own ACT opened its row (active buffer); else the pending refresh (PREA, then
    REF), which holds back the buffer; else the oldest ready request of the read (or write) buffer, never a
    PRE that would close a row an active request needs and no ACT-1 while an ACT-2 is owed; else an owed
    ACT-2. An access with WCK off first takes a CAS slot (LPDDR5)."""
    next_e = INF
    # an access waiting behind its CAS: nothing else this tick
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
    if naad > 0:
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
    wm = S[S_WMODE] == 1
    if not wm:
        if S[S_WBN] > 0.8 * wqsize or S[S_RBN] == 0:
            wm = True
    elif S[S_WBN] < 0.2 * wqsize and S[S_RBN] != 0:
        wm = False
    S[S_WMODE] = 1 if wm else 0
    refq_n = S[S_REFQN]
    best_act_i = -1
    best_act_cmd = -1
    best_buf_i = -1
    best_buf_cmd = -1
    for b in range(nb):
        if bqn[b] == 0 or BS[b, B_A2DL] >= 0:
            continue
        orow = BS[b, B_OPEN]
        got_hit = False
        got_act_hit = False
        got_other = False
        for j in range(bqn[b]):
            i = bq[b, j]
            kd = kind[i]
            st = stage[i]
            if orow >= 0 and row[i] == orow:
                if row_only:
                    continue
                if st == 2:
                    if got_act_hit:
                        continue
                    got_act_hit = True
                else:
                    if got_hit or ((kd == K_WRITE) != wm):
                        continue
                    got_hit = True
                cmd = _access_cmd(kd)
                e = _earliest(ready, nodes, b, cmd, faw, faw_head, faw_cnt, nfaw, True)
                if e > t:
                    if e < next_e and (st == 2 or refq_n == 0):
                        next_e = e
                    continue
                if st == 2:
                    if best_act_i < 0 or i < best_act_i:
                        best_act_i = i
                        best_act_cmd = cmd
                elif best_buf_i < 0 or i < best_buf_i:
                    best_buf_i = i
                    best_buf_cmd = cmd
            else:
                if col_only or got_other or st != 0 or ((kd == K_WRITE) != wm):
                    continue
                got_other = True
                if orow >= 0:
                    if BS[b, B_ACTN] > 0:
                        continue  # would close a row an active request needs
                    cmd = PRE
                    lim = True
                else:
                    if has_act2:
                        continue  # no ACT-1 while an ACT-2 is owed
                    cmd = ACT
                    lim = not (broadcast and kd == K_OP)
                e = _earliest(ready, nodes, b, cmd, faw, faw_head, faw_cnt, nfaw, lim)
                if e > t:
                    if e < next_e and refq_n == 0:
                        next_e = e
                    continue
                if best_buf_i < 0 or i < best_buf_i:
                    best_buf_i = i
                    best_buf_cmd = cmd
    if best_act_i >= 0:
        sel[0] = best_act_i
        sel[1] = best_act_cmd
        sel[2] = bank[best_act_i]
    elif refq_n > 0 and not col_only:
        r = refq[0]
        any_open = False
        blocked = False
        for bb in range(bpr):
            b = r * bpr + bb
            if BS[b, B_OPEN] >= 0:
                any_open = True
            if BS[b, B_ACTN] > 0 or BS[b, B_A2DL] >= 0:
                blocked = True
        cmd = PREA if any_open else REF
        if not (any_open and blocked):
            e = _earliest_rank(ready, rk0 + r, pc0 + r // nrank, cmd)
            if e <= t:
                sel[1] = cmd
                sel[3] = r
            elif e < next_e:
                next_e = e
    elif best_buf_i >= 0:
        sel[0] = best_buf_i
        sel[1] = best_buf_cmd
        sel[2] = bank[best_buf_i]
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
