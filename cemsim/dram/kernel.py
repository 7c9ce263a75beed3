"""The command-level DRAM engine loop: one Numba call replays a whole request stream on one or more channels.

Per tick where something can happen (kernel_state.py explains the event-driven scheme): the client offers at
most one request; the controller issues at most one command (a row and a column command with
``dual_command``), chosen by schedule.py; the per-bank profile moves at most one transaction into a bank
queue. Then the loop jumps to the next tick where an offer, a command, a refresh or a closed-loop release
can happen.
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from cemsim.dram.cache_guard import drop_stale_cache
from cemsim.dram.kernel_state import (
    B_A2DL,
    B_A2REQ,
    B_ACTN,
    B_HITS,
    B_OPEN,
    B_TQ,
    B_WQ,
    C_AUTO_PRE,
    C_END,
    C_EVENTS,
    C_RANK_ACTIVE,
    C_READ_HITS,
    C_READS,
    C_STATUS,
    INF,
    K_OP,
    K_READ,
    K_WRITE,
    NBSTATE,
    NCOL,
    NFIELD,
    NSLOT,
    NSTATE,
    NW,
    P_BANKQ,
    P_BROADCAST,
    P_DEPTH,
    P_DUAL,
    P_EVERY,
    P_HITCAP,
    P_NAAD,
    P_NBG,
    P_NBPG,
    P_NFAW,
    P_NPC,
    P_NRANK,
    P_NREFI,
    P_QSIZE,
    P_QUEUE,
    P_RDDELAY,
    P_REF,
    P_REFGROUP,
    P_ROWPOL,
    P_WCK,
    P_WCKRD,
    P_WCKWR,
    P_WQSIZE,
    P_WRDELAY,
    RW,
    S_CAS,
    S_DRAIN,
    S_FIN,
    S_HN,
    S_NA2,
    S_NBUSY,
    S_NDIRTY,
    S_RBN,
    S_REFQN,
    S_REST,
    S_TQN,
    S_WBN,
    S_WCKEXP,
    S_WMODE,
    S_WQN,
    _apply,
    _earliest,
    _heap_pop,
    _heap_push,
    _hi,
    _issue_bank,
    _nd,
    _remove_at,
    _rx,
    prefetch,
)
from cemsim.dram.schedule import (
    _ctz,
    next_tick_rest,
    rebuild_per_bank,
    rebuild_shared,
    refpb_banks,
    select_per_bank,
    select_shared,
    update_ticks,
)
from cemsim.dram.timing import ACT, ACT2, CAS, OP, PRE, PREA, RD, REF, REFPB, WR

_HERE = Path(__file__).parent
# Before any of the loop's functions is loaded from Numba's cache (they load on their first call).
drop_stale_cache(
    _HERE / "__pycache__", "kernel", [_HERE / f for f in ("kernel_state.py", "schedule.py", "timing.py")]
)


@numba.njit(cache=True, inline="always")
def _mark(b, bdirty, dstack, S):
    """Queue bank b for a candidate rebuild (once)."""
    if not bdirty[b]:
        bdirty[b] = True
        dstack[S[S_NDIRTY]] = b
        S[S_NDIRTY] += 1


@numba.njit(cache=True, inline="always")
def _row_state(ract, counts, r, t, opening):
    """Rank r's open-bank count changes at t (a row opened or closed); the time it had at least one open bank
    accumulates in counts[C_RANK_ACTIVE] (DRAMsim3's rank_active_cycles, for active/precharge standby energy)."""
    if opening:
        if ract[r, 0] == 0:
            ract[r, 1] = t
        ract[r, 0] += 1
    else:
        ract[r, 0] -= 1
        if ract[r, 0] == 0:
            counts[C_RANK_ACTIVE] += t - ract[r, 1]


@numba.njit(cache=True, inline="always")
def _issue(dev, tabs, nrank, b, cmd, t, limited):
    """Issue cmd on bank b at t: raise the ready ticks of its nodes (and the other ranks' on a data access)."""
    nodes, rank_nodes_of_pc, ready, faw, faw_head, faw_cnt, rspan = dev
    cl_n, cl_nx, cl_l = tabs
    _issue_bank(ready, rspan, nodes, b, cmd, t, cl_n, cl_nx, cl_l, rank_nodes_of_pc, nrank, faw, faw_head, faw_cnt,
                limited)  # fmt: skip


@numba.njit(cache=True, inline="always")
def _retire(t, i, b, P, per_bank, tabs, req, out, dev, ctl, cli):
    """Bookkeeping after request i's access (its final command) issued at t on bank b."""
    row, kind, hold, key = req[1], req[2], req[3], req[5]
    done, counts = out[2], out[4]
    nodes, ready = dev[0], dev[2]
    S, BS, bq, bqn, stage, mv = ctl[0], ctl[1], ctl[2], ctl[3], ctl[4], ctl[7]
    key_left, key_done, heap = cli[2], cli[3], cli[4]
    kd = kind[i]
    if kd == K_READ:
        counts[C_READS] += 1
        if BS[b, B_HITS] > 0:
            counts[C_READ_HITS] += 1
        done[i] = t + P[P_RDDELAY]
    elif kd == K_WRITE:
        done[i] = t + P[P_WRDELAY]
    else:
        hv = hold[i]
        done[i] = t + hv
        node = _nd(nodes, b, 4)
        for cx in range(NCOL):
            if (cx in (PRE, RD, WR, OP)) and t + hv > ready[_rx(node, cx)]:
                ready[_rx(node, cx)] = t + hv
    BS[b, B_HITS] += 1
    if P[P_WCK] == 1 and kd != K_OP:
        ex = t + (P[P_WCKWR] if kd == K_WRITE else P[P_WCKRD])
        if ex > S[S_WCKEXP]:
            S[S_WCKEXP] = ex
    pos = 0
    for j in range(bqn[b]):
        if bq[b, j] == i:
            pos = j
            break
    for j in range(pos, bqn[b] - 1):
        bq[b, j] = bq[b, j + 1]
    if per_bank:
        bqn[b] -= 1
        _track(b, BS, bqn, P[P_BANKQ], mv)
        if bqn[b] == 0:
            S[S_NBUSY] -= 1
    else:
        bqn[b] -= 1
    if not per_bank:
        if stage[i] == 0:
            if kd == K_WRITE:
                S[S_WBN] -= 1
            else:
                S[S_RBN] -= 1
        else:
            BS[b, B_ACTN] -= 1
    S[S_FIN] += 1
    if P[P_DEPTH] > 0 and kd != K_WRITE:
        k = key[i]
        key_left[k] -= 1
        if done[i] > key_done[k]:
            key_done[k] = done[i]
        if key_left[k] == 0:
            S[S_HN] = _heap_push(heap, S[S_HN], key_done[k] + 1)
    if P[P_ROWPOL] == 1:
        more = False
        for j in range(bqn[b]):
            if row[bq[b, j]] == BS[b, B_OPEN]:
                more = True
                break
        if not more:
            # closed page: auto-precharge as soon as it is legal (no command-bus slot)
            tp = _earliest(ready, nodes, b, PRE, dev[3], dev[4], dev[5], P[P_NFAW], True)
            _issue(dev, tabs, P[P_NRANK], b, PRE, tp, True)
            _row_state(ctl[15], counts, np.int64(_nd(nodes, b, 2)) - 1 - P[P_NPC], tp, False)
            BS[b, B_OPEN] = -1
            BS[b, B_HITS] = 0
            counts[PRE] += 1
            counts[C_AUTO_PRE] += 1


@numba.njit(cache=True, inline="always")
def _track(b, BS, bqn, bankq, mv):
    """Per-bank profile: bank b's bits in the masks of banks a waiting read (``mv[:nw]``) or write
    (``mv[nw:]``) could move to (waiting transactions and room in the bank queue); called after every change
    of its waiting counts or queue length."""
    nw = mv.shape[0] // 2
    w = b >> 6
    bit = np.int64(1) << (b & 63)
    room = bqn[b] < bankq
    if room and BS[b, B_TQ] > 0:
        mv[w] |= bit
    else:
        mv[w] &= ~bit
    if room and BS[b, B_WQ] > 0:
        mv[nw + w] |= bit
    else:
        mv[nw + w] &= ~bit


@numba.njit(cache=True, inline="always")
def _any_set(mv, base, nw):
    acc = np.int64(0)
    for w in range(base, base + nw):
        acc |= mv[w]
    return acc != 0


@numba.njit(cache=True, inline="always")
def _move_one(S, BS, fq, fh, mv, bq, bqn, stage, nb, bankq, wqsize, bdirty, dstack, stream_end):
    """Per-bank profile, end of tick: move the first waiting transaction whose bank queue has room (writes
    while draining). Returns whether one moved: the loop then visits the next tick, where its bank's new
    candidates may already be legal and another transaction may move.

    The waiting transactions are kept per bank (``fq`` rows: reads of bank b at row b, writes at nb + b,
    rings with heads ``fh``). They were accepted in request order, so the first in queue order whose bank has
    room is the smallest request index at the head of a bank in the movable mask (``mv``, see _track).

    DRAMsim3 drains its write buffer when it is full, or above 8 writes with every command queue empty, so a
    stream ending with 1-8 writes and nothing else would wait forever; once the whole stream is accepted
    (``stream_end``) and no read waits, such a remainder drains once the queues are empty (DRAMsim3 just
    stops there)."""
    if S[S_DRAIN] == 0 and (
        S[S_WQN] >= wqsize
        or ((S[S_WQN] > 8 or (stream_end and S[S_TQN] == 0)) and S[S_NBUSY] == 0 and S[S_WQN] > 0)
    ):
        S[S_DRAIN] = S[S_WQN]
    use_w = S[S_DRAIN] > 0
    nw = mv.shape[0] // 2
    base = nw if use_w else 0
    roff = nb if use_w else 0
    ringm = fq.shape[1] - 1
    i = INF
    b = -1
    for w in range(nw):
        m = mv[base + w]
        while m != 0:
            bb = (w << 6) + _ctz(m)
            m &= m - 1
            head = fq[roff + bb, fh[roff + bb]]
            if head < i:
                i = head
                b = bb
    if b < 0:
        return False
    if bqn[b] == 0:
        S[S_NBUSY] += 1
    bq[b, bqn[b]] = i
    bqn[b] += 1
    _mark(b, bdirty, dstack, S)
    stage[i] = 1
    fh[roff + b] = (fh[roff + b] + 1) & ringm
    if use_w:
        BS[b, B_WQ] -= 1
        S[S_WQN] -= 1
        S[S_DRAIN] -= 1
    else:
        BS[b, B_TQ] -= 1
        S[S_TQN] -= 1
    _track(b, BS, bqn, bankq, mv)
    return True  # its bank's new candidates may be legal next tick, and another may move then


@numba.njit(cache=True, _nrt=False, error_model="numpy")
def _run(P, nkeys, tabs, req, out, dev, ctl, cli, profile):
    """The event loop (no allocation, so compiled without reference counting). The arrays come grouped:
    timing tables, requests, outputs, device state, controller state, client state (see _simulate_channel).
    ``profile``: ``(1,)`` for the per-bank profile, ``()`` for the shared one. A tuple's length is known when
    Numba compiles, so each profile gets its own loop with the other profile's code folded away (fewer live
    values, less spilling in the hot path)."""
    cl_n, cl_nx, cl_l = tabs[0], tabs[1], tabs[2]
    bank, row, kind, arrival, key = req[0], req[1], req[2], req[4], req[5]
    acc, first, done, cls, counts, elig = out[0], out[1], out[2], out[3], out[4], out[5]
    nodes, ready, faw, faw_head, faw_cnt, rspan = dev[0], dev[2], dev[3], dev[4], dev[5], dev[6]
    S, BS, bq, bqn, stage, fq, fh, mv, refq, sel, slots, nslot, bmin, bdirty, dstack, ract = ctl
    pend, key_first, key_left, key_done, heap = cli
    n = bank.shape[0]
    npc, nrank, nbg, nbpg = P[P_NPC], P[P_NRANK], P[P_NBG], P[P_NBPG]
    nrk = npc * nrank
    bpr = nbg * nbpg
    nb = nrk * bpr
    per_bank = len(profile) == 1
    qsize, wqsize, bankq, hitcap = P[P_QSIZE], P[P_WQSIZE], P[P_BANKQ], P[P_HITCAP]
    refmode = P[P_REF]
    naad, wck, dual, broadcast = P[P_NAAD], P[P_WCK] == 1, P[P_DUAL] == 1, P[P_BROADCAST] == 1
    nfaw, nrefi, depth = P[P_NFAW], P[P_NREFI], P[P_DEPTH]

    pc0 = 1
    rk0 = pc0 + npc
    rgroup = P[P_REFGROUP]
    nunits = nrk // rgroup  # refresh units: ranks, or pseudo-channels
    ref_interval = max(nrefi // nunits, 1) if refmode == 1 else max(nrefi, 1)
    ref_next = ref_interval
    ref_rank = 0
    npairs = bpr // 2  # per-bank refresh: bank pairs per rank
    nxt = 0
    ph = 0
    pt = 0
    next_key = 0
    inflight = 0
    last_acc = np.int64(-1)
    naccepted = 0
    t = np.int64(0)

    while S[S_FIN] < n:
        counts[C_EVENTS] += 1
        # ---- refresh falling due
        # the loop never jumps past ref_next (see "next tick"), so at most one refresh falls due per tick
        if refmode != 0 and ref_next <= t:
            if refmode == 1:
                refq[S[S_REFQN]] = ref_rank
                S[S_REFQN] += 1
                ref_rank += 1
                if ref_rank >= nunits:
                    ref_rank = 0
            elif refmode == 2:
                for r in range(nunits):
                    refq[S[S_REFQN]] = r
                    S[S_REFQN] += 1
            elif (
                S[S_REFQN] + nrk < refq.shape[0]
            ):  # per bank: every rank's next pair (none dropped in practice)
                for r in range(nrk):
                    refq[S[S_REFQN]] = r * npairs + ref_rank
                    S[S_REFQN] += 1
                ref_rank += 1
                if ref_rank >= npairs:
                    ref_rank = 0
            ref_next += ref_interval
        # ---- client: releases, key starts, one offer
        if depth > 0:
            while S[S_HN] > 0 and heap[0] <= t:
                _, hn = _heap_pop(heap, S[S_HN])
                S[S_HN] = hn
                inflight -= 1
            while inflight < depth and next_key < nkeys:
                i = key_first[next_key]
                while i < n and key[i] == next_key:
                    elig[i] = t
                    pend[pt] = i
                    pt += 1
                    i += 1
                next_key += 1
                inflight += 1
            cand = pend[ph] if ph < pt else -1
        else:
            cand = nxt if nxt < n else -1
        offer_wait = False
        if cand >= 0 and elig[cand] <= t and t > last_acc:
            kd = kind[cand]
            if per_bank:
                space = (S[S_WQN] < wqsize) if kd == K_WRITE else (S[S_TQN] < qsize)
            else:
                space = (S[S_WBN] < wqsize) if kd == K_WRITE else (S[S_RBN] < qsize)
            if space:
                acc[cand] = t
                # the lines this request's command and retirement and the next offers will touch (see prefetch)
                prefetch(first, cand, True)
                prefetch(done, cand, True)
                prefetch(cls, cand, True)
                ahead = cand + 8  # one cache line of int64s ahead
                prefetch(kind, ahead, False)
                prefetch(bank, ahead, False)
                prefetch(row, ahead, False)
                prefetch(elig, ahead, False)
                prefetch(acc, ahead, True)
                naccepted += 1
                last_acc = t
                if depth > 0:
                    ph += 1
                else:
                    nxt += 1
                if per_bank:
                    b = bank[cand]
                    ringm = fq.shape[1] - 1
                    if kd == K_WRITE:
                        fq[nb + b, (fh[nb + b] + BS[b, B_WQ]) & ringm] = cand
                        BS[b, B_WQ] += 1
                        S[S_WQN] += 1
                    else:
                        fq[b, (fh[b] + BS[b, B_TQ]) & ringm] = cand
                        BS[b, B_TQ] += 1
                        S[S_TQN] += 1
                    _track(b, BS, bqn, bankq, mv)
                else:
                    b = bank[cand]
                    bq[b, bqn[b]] = cand
                    bqn[b] += 1
                    _mark(b, bdirty, dstack, S)
                    if kd == K_WRITE:
                        S[S_WBN] += 1
                    else:
                        S[S_RBN] += 1
                if kd == K_WRITE and depth > 0:
                    # posted write: the client counts it done when accepted (reference driver semantics)
                    k = key[cand]
                    key_left[k] -= 1
                    if t > key_done[k]:
                        key_done[k] = t
                    if key_left[k] == 0:
                        S[S_HN] = _heap_push(heap, S[S_HN], key_done[k] + 1)
            else:
                offer_wait = True

        # ---- controller: one command, or a row and a column command with dual buses
        issued = 0
        next_e = INF
        last_col = -1
        S[S_REST] = 0
        for slot in range(2 if dual else 1):
            sel[0] = -1
            sel[1] = -1
            sel[2] = -1
            sel[3] = -1
            # Ramulator 2 HBM: a column-bus slot, then a row-bus slot (DRAMsim3's dual command: see below)
            col_only = dual and not per_bank and slot == 0
            row_only = dual and not per_bank and slot == 1
            if not per_bank:
                wm = S[S_WMODE] == 1
                if not wm:
                    wm = S[S_WBN] > 0.8 * wqsize or S[S_RBN] == 0
                elif S[S_WBN] < 0.2 * wqsize and S[S_RBN] != 0:
                    wm = False
                if wm != (S[S_WMODE] == 1):
                    S[S_WMODE] = 1 if wm else 0
                    for b in range(nb):
                        _mark(b, bdirty, dstack, S)
            claims = np.int64(0)
            if nb <= 64:
                # banks whose cached tick claims t, before the rebuilds below store fresh ticks (a vector pass
                # over bmin right after those scalar stores waits for them); the rebuilt banks are patched in
                for b in range(nb):  # branch-free: a bank's bit is as often set as not
                    claims |= np.int64(bmin[b] <= t) << b
            for k in range(S[S_NDIRTY]):
                b = dstack[k]
                if per_bank:
                    rebuild_per_bank(b, BS, bq, bqn, row, kind, hitcap, broadcast, slots, nslot)
                else:
                    rebuild_shared(b, BS, bq, bqn, stage, row, kind, S[S_WMODE] == 1, broadcast, slots, nslot)
                m = update_ticks(b, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt, nfaw)
                if nb <= 64:
                    bit = np.int64(1) << (b & 63)
                    claims = (claims | bit) if m <= t else (claims & ~bit)
                bdirty[b] = False
            S[S_NDIRTY] = 0
            if per_bank:
                e = select_per_bank(t, S, sel, BS, refq, slots, nslot, bmin, ready, nodes, faw, faw_head, faw_cnt,
                                    nfaw, nb, bpr, nrank, rk0, pc0, rgroup, slot == 1, refmode, claims)  # fmt: skip
            else:
                e = select_shared(t, S, sel, BS, refq, slots, nslot, bmin, kind, bank, ready, nodes, faw, faw_head,
                                  faw_cnt, nfaw, nb, bpr, nrank, rk0, pc0, rgroup, naad, wck, col_only, row_only,
                                  refmode, claims)  # fmt: skip
            if e < next_e:
                next_e = e
            cmd = sel[1]
            if per_bank and slot == 1 and cmd >= 0 and (cmd in (RD, WR, OP)) == (last_col == 1):
                break  # DRAMsim3 dual command: a second command of the first's kind is not issued
            if cmd < 0:
                if per_bank:
                    break
                continue
            issued += 1
            counts[cmd] += 1
            i = sel[0]
            b = sel[2]
            if cmd != CAS and b >= 0:
                _mark(b, bdirty, dstack, S)
            if cmd in (REF, PREA):
                u = sel[3]  # refresh unit
                _apply(ready, rspan, 0, 0, cmd, t, cl_n, cl_nx, cl_l, False, True)
                for rr in range(u * rgroup, (u + 1) * rgroup):
                    _apply(ready, rspan, pc0 + rr // nrank, 1, cmd, t, cl_n, cl_nx, cl_l, False, True)
                    _apply(ready, rspan, rk0 + rr, 2, cmd, t, cl_n, cl_nx, cl_l, False, False)
                for bb in range(rgroup * bpr):
                    b = u * rgroup * bpr + bb
                    _mark(b, bdirty, dstack, S)
                    if cmd == PREA:
                        if BS[b, B_OPEN] >= 0:
                            _row_state(ract, counts, b // bpr, t, False)
                        BS[b, B_OPEN] = -1
                        BS[b, B_HITS] = 0
                if cmd == REF:
                    S[S_REFQN] = _remove_at(refq, S[S_REFQN], 0)
                break
            if cmd == REFPB:
                b1, b2 = refpb_banks(sel[3], bpr)
                for bb in (b1, b2):
                    _issue(dev, tabs, nrank, bb, REFPB, t, True)
                    _mark(bb, bdirty, dstack, S)
                S[S_REFQN] = _remove_at(refq, S[S_REFQN], 0)
                break
            if cmd == CAS:
                break
            if cmd == ACT2:
                BS[b, B_A2DL] = -1
                BS[b, B_A2REQ] = -1
                S[S_NA2] -= 1
                stage[i] = 2
                break
            if i >= 0 and first[i] < 0:
                first[i] = t
                cls[i] = 0 if (cmd in (RD, WR, OP)) else (1 if cmd == ACT else 2)
            lim = not (cmd == ACT and broadcast and kind[i] == K_OP)
            _issue(dev, tabs, nrank, b, cmd, t, lim)
            if cmd == ACT:
                _row_state(ract, counts, b // bpr, t, True)
                BS[b, B_OPEN] = row[i]
                BS[b, B_HITS] = 0
                if not per_bank:
                    if stage[i] == 0:
                        if kind[i] == K_WRITE:
                            S[S_WBN] -= 1
                        else:
                            S[S_RBN] -= 1
                    BS[b, B_ACTN] += 1
                    if naad > 0:
                        stage[i] = 1
                        BS[b, B_A2DL] = t + naad
                        S[S_NA2] += 1
                        BS[b, B_A2REQ] = i
                    else:
                        stage[i] = 2
                last_col = 0
            elif cmd == PRE:
                _row_state(ract, counts, b // bpr, t, False)
                BS[b, B_OPEN] = -1
                BS[b, B_HITS] = 0
                last_col = 0
            else:
                _retire(t, i, b, P, per_bank, tabs, req, out, dev, ctl, cli)
                last_col = 1

        # ---- per-bank profile: one transaction into its bank queue at the end of the tick
        more_moves = False
        if per_bank:
            more_moves = _move_one(S, BS, fq, fh, mv, bq, bqn, stage, nb, bankq, wqsize, bdirty, dstack,
                                   naccepted == n)  # fmt: skip

        # ---- next tick where something can happen
        if S[S_FIN] >= n:
            break
        nt = t + 1 if (issued > 0 or more_moves or S[S_CAS] >= 0) else next_e
        if S[S_NA2] > 0:
            nt = t + 1
        if refmode != 0 and ref_next < nt:
            nt = ref_next
        if depth > 0:
            if ph < pt and not offer_wait:
                v = _hi(_hi(elig[pend[ph]], last_acc + 1), t + 1)
                if v < nt:
                    nt = v
            if S[S_HN] > 0 and heap[0] < nt and next_key < nkeys:
                nt = _hi(heap[0], t + 1)
        elif nxt < n and not offer_wait:
            v = _hi(_hi(arrival[nxt], last_acc + 1), t + 1)
            if v < nt:
                nt = v
        if offer_wait and nt > t + 1:
            # a refused offer is retried every cycle: if this tick freed room for it, it goes in at t + 1
            kd = kind[cand]
            if per_bank:
                room = (S[S_WQN] < wqsize) if kd == K_WRITE else (S[S_TQN] < qsize)
            else:
                room = (S[S_WBN] < wqsize) if kd == K_WRITE else (S[S_RBN] < qsize)
            if room:
                nt = t + 1
        if nt > t + 1 and S[S_REST] == 1:
            # nothing issued (else nt = t + 1): the banks the selector left out still hold their ticks
            e = next_tick_rest(S, ctl[12], nb)
            if e < nt:
                nt = e
        if nt >= INF:
            counts[C_STATUS] = 1
            break
        t = t + 1 if P[P_EVERY] == 1 else nt


@numba.njit(cache=True)
def _simulate_channel(
    P, cl_n, cl_nx, cl_l, bank, row, kind, hold, arrival, key, nkeys, acc, first, done, cls, counts, elig, ws
):
    """One channel. ``ws``: 6 rows of at least n + 1 scratch entries (request stages, the closed loop's pending
    offers, its keys' first request, requests left, last done tick, release heap), given by the caller so a
    large stream's scratch comes from one block (replay.py)."""
    n = bank.shape[0]
    npc, nrank, nbg, nbpg = P[P_NPC], P[P_NRANK], P[P_NBG], P[P_NBPG]
    nrk = npc * nrank
    bpr = nbg * nbpg
    nb = nrk * bpr
    qsize, wqsize, bankq = P[P_QSIZE], P[P_WQSIZE], P[P_BANKQ]
    depth = P[P_DEPTH]

    # device tree nodes: 0 channel, then pseudo-channels, ranks, bank groups, banks
    pc0 = 1
    rk0 = pc0 + npc
    bg0 = rk0 + nrk
    bk0 = bg0 + nrk * nbg
    nnodes = bk0 + nb
    rgroup = P[P_REFGROUP]
    # unsigned, so indexing ``ready`` by a node skips Numba's negative-index wraparound in the hot loop
    # flat tables (kernel_state._nd, _rx): bank b's nodes at b * NW + level
    nodes = np.zeros(nb * NW, dtype=np.uint64)
    for b in range(nb):
        r = b // bpr
        nodes[b * NW + 0] = 0
        nodes[b * NW + 1] = pc0 + r // nrank
        nodes[b * NW + 2] = rk0 + r
        nodes[b * NW + 3] = bg0 + b // nbpg
        nodes[b * NW + 4] = bk0 + b
        nodes[b * NW + 5] = nodes[b * NW + 1] if rgroup > 1 else nodes[b * NW + 2]
    rank_nodes_of_pc = np.empty((npc, nrank), dtype=np.int64)
    for p in range(npc):
        for k in range(nrank):
            rank_nodes_of_pc[p, k] = rk0 + p * nrank + k
    ready = np.zeros(nnodes * RW, dtype=np.int64)
    rspan = np.zeros(nnodes * 2, dtype=np.int64)  # rank rows below the channel and each pseudo-channel
    rspan[0], rspan[1] = rk0, rk0 + nrk
    for p in range(npc):
        rspan[2 * (pc0 + p)], rspan[2 * (pc0 + p) + 1] = rk0 + p * nrank, rk0 + (p + 1) * nrank
    faw = np.zeros(nnodes * 4, dtype=np.int64)
    faw_head = np.zeros(nnodes, dtype=np.int64)
    faw_cnt = np.zeros(nnodes, dtype=np.int64)

    S = np.zeros(NSTATE, dtype=np.int64)
    S[S_CAS] = -1
    S[S_WCKEXP] = -1
    BS = np.zeros((nb, NBSTATE), dtype=np.int64)
    for b in range(nb):
        BS[b, B_OPEN] = -1
        BS[b, B_A2DL] = -1
        BS[b, B_A2REQ] = -1
    width = max(qsize + wqsize, bankq) + 1
    bq = np.empty((nb, width), dtype=np.int64)
    bqn = np.zeros(nb, dtype=np.int64)
    stage = ws[0]  # whole rows (1-D C arrays, as the loop was compiled for); only the used part is cleared
    stage[:n] = 0
    # per-bank profile: waiting transactions per bank (reads, then writes), rings of a power-of-two size
    ring = 1
    while ring < max(qsize, wqsize) + 1:
        ring *= 2
    fq = np.empty((2 * nb, ring), dtype=np.int64)
    fh = np.zeros(2 * nb, dtype=np.int64)
    mv = np.zeros(2 * ((nb + 63) // 64), dtype=np.int64)  # movable-bank masks (see _track)
    refq = np.empty(4 * nb + 16, dtype=np.int64)
    sel = np.empty(4, dtype=np.int64)
    slots = np.zeros((nb, NSLOT, NFIELD), dtype=np.int64)
    nslot = np.zeros(nb, dtype=np.int64)
    bmin = np.full(nb, INF, dtype=np.int64)
    bdirty = np.ones(nb, dtype=np.bool_)
    dstack = np.arange(nb + 1, dtype=np.int64)
    S[S_NDIRTY] = nb
    # client
    pend = ws[1]
    key_first = ws[2]
    key_left = ws[3]
    key_done = ws[4]
    key_first[: nkeys + 1] = 0
    key_left[: nkeys + 1] = 0
    key_done[: nkeys + 1] = 0
    for i in range(n):
        if key_left[key[i]] == 0:
            key_first[key[i]] = i
        key_left[key[i]] += 1
    heap = ws[5]
    if depth == 0:
        for i in range(n):
            elig[i] = arrival[i]
    tabs = (cl_n.reshape(cl_n.size), cl_nx.reshape(cl_nx.size), cl_l.reshape(cl_l.size))  # flat (see _apply)
    req = (bank, row, kind, hold, arrival, key)
    out = (acc, first, done, cls, counts, elig)
    dev = (nodes, rank_nodes_of_pc, ready, faw, faw_head, faw_cnt, rspan)
    ract = np.zeros((nrk, 2), dtype=np.int64)  # per rank: open banks, tick the first of them opened
    ctl = (S, BS, bq, bqn, stage, fq, fh, mv, refq, sel, slots, nslot, bmin, bdirty, dstack, ract)
    cli = (pend, key_first, key_left, key_done, heap)
    if P[P_QUEUE] == 1:
        _run(P, nkeys, tabs, req, out, dev, ctl, cli, (1,))
    else:
        _run(P, nkeys, tabs, req, out, dev, ctl, cli, ())
    end = np.int64(0)
    for i in range(n):
        if done[i] > end:
            end = done[i]
    counts[C_END] = end
    for r in range(nrk):  # rows still open at the end stay active to the run's last tick
        if ract[r, 0] > 0:
            counts[C_RANK_ACTIVE] += end + 1 - ract[r, 1]


@numba.njit(cache=True)
def simulate(P, cl_n, cl_nx, cl_l, seg, bank, row, kind, hold, arrival, key, nkeys, acc, first, done, cls, counts,
             elig, ws):  # fmt: skip
    """Replay each channel's segment ``seg[c]:seg[c+1]`` of the (channel-sorted) stream on its own controller.
    ``ws``: scratch, 6 rows of n + 1 (see _simulate_channel)."""
    n = bank.shape[0]
    if seg.shape[0] == 2 and seg[0] == 0 and seg[1] == n:
        # one channel: the whole arrays are its segment (the outputs come initialised by the caller)
        _simulate_channel(P, cl_n, cl_nx, cl_l, bank, row, kind, hold, arrival, key, nkeys[0], acc, first,
                          done, cls, counts[0], elig, ws)  # fmt: skip
        return
    for c in range(seg.shape[0] - 1):
        a, z = seg[c], seg[c + 1]
        if z <= a:
            continue
        m = z - a
        o_acc = np.full(m, -1, dtype=np.int64)
        o_first = np.full(m, -1, dtype=np.int64)
        o_done = np.full(m, -1, dtype=np.int64)
        o_cls = np.full(m, -1, dtype=np.int64)
        o_elig = np.zeros(m, dtype=np.int64)
        _simulate_channel(
            P,
            cl_n,
            cl_nx,
            cl_l,
            bank[a:z].copy(),
            row[a:z].copy(),
            kind[a:z].copy(),
            hold[a:z].copy(),
            arrival[a:z].copy(),
            key[a:z].copy(),
            nkeys[c],
            o_acc,
            o_first,
            o_done,
            o_cls,
            counts[c],
            o_elig,
            np.empty((6, m + 1), dtype=np.int64),
        )
        acc[a:z] = o_acc
        first[a:z] = o_first
        done[a:z] = o_done
        cls[a:z] = o_cls
        elig[a:z] = o_elig
