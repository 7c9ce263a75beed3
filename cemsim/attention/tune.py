"""Per-(layer, KV head) SCF threshold tuning under a perplexity budget (the LongSight procedure).

LongSight: start with every threshold at 0; repeatedly raise the threshold of the KV head with the lowest
filter ratio; stop when perplexity would rise more than the budget over dense; keep the last setting under
budget. Run literally, that is one perplexity evaluation per move (thousands). cemsim keeps the procedure's
order of moves and its stopping rule but makes it affordable on 2 CPU cores:

1. *Filter ratios from cached dense attention.* Post-RoPE queries and keys of one dense forward pass over
   the tuning span are captured once; for every (layer, KV head) a histogram of the group's best sign
   agreement per (query position, sparse-region key) gives the filter ratio at every threshold at once.
   The greedy move sequence (lowest filter ratio first, ``step`` per move) is therefore fixed in advance.
2. *Bisection instead of a linear scan.* Perplexity along that sequence only grows as thresholds rise
   (filters only remove keys), so the last setting under budget is found with about log2(moves) sparse
   evaluations (:func:`last_under_budget`; the all-start setting only when nothing else fits); the dense
   perplexity is cached on disk.
3. *A shorter span.* The default tuning span is 2,048 tokens with a 256-token window (the same share of
   sparse positions as 8K tokens with W = 1024 has at its end); thresholds are per query/key pair, so they
   carry over to longer spans, at the cost of tuning noise. Use ``--tokens 8192 --window 1024`` for the
   paper's setting when time allows.
4. *One dense pass, and the layers before the first full-attention layer computed once.* The dense NLL,
   the tables' queries and keys and the input of the first full-attention layer come from one pass; every
   sparse evaluation starts from that layer (:mod:`cemsim.attention.prefix`: Gemma 3's layers 0-4 are
   sliding-window layers, which no threshold changes).
"""

from __future__ import annotations

import heapq
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cemsim.attention.model_loader import load_model
from cemsim.attention.policies import PolicyConfig, published_k
from cemsim.attention.prefix import DensePass, dense_pass, replaying_prefix
from cemsim.attention.runner import (
    dense_nll_cached,
    make_policy,
    new_state,
    perplexity,
    token_nll,
)
from cemsim.attention.signs import pack_signs
from cemsim.attention.text import load_text, token_ids
from cemsim.attention.thresholds import ThresholdFile
from cemsim.errors import CemsimError
from cemsim.kernels import _popcount64


@numba.njit(parallel=True, cache=True)
def _match_histogram(qs, ks, d, window, sinks):
    """hist[m] = (query position, sparse-region key) pairs whose best group match count is m.
    qs [n, G, W] and ks [n, W] packed signs of one KV group; region: sinks <= j <= p - window."""
    n, g_n, w_n = qs.shape
    hist = np.zeros((n, d + 1), dtype=np.int64)
    for p in numba.prange(n):
        for j in range(sinks, p - window + 1):
            best = 0
            for g in range(g_n):
                pc = 0
                for w in range(w_n):
                    pc += _popcount64(qs[p, g, w] ^ ks[j, w])
                best = max(best, d - pc)
            hist[p, best] += 1
    return hist.sum(axis=0)


def survivor_tables(
    keys: np.ndarray, queries: np.ndarray, rotations: np.ndarray | None, window: int, sinks: int
) -> np.ndarray:
    """[layers, kv_heads, D + 2] keys surviving at each threshold T = 0..D+1 (index T), from captured
    post-RoPE ``keys [L, Hkv, n, D]`` and ``queries [L, Hq, n, D]``."""
    layers, hkv, _n, d = keys.shape
    group = queries.shape[1] // hkv
    out = np.zeros((layers, hkv, d + 2), dtype=np.int64)
    for layer in range(layers):
        for h in range(hkv):
            k = keys[layer, h]
            q = queries[layer, h * group : (h + 1) * group]  # [G, n, D]
            if rotations is not None:
                r = rotations[layer, h]
                k, q = k @ r, q @ r
            hist = _match_histogram(
                np.ascontiguousarray(pack_signs(q).transpose(1, 0, 2)), pack_signs(k), d, window, sinks
            )
            out[layer, h, : d + 1] = np.cumsum(hist[::-1])[::-1]  # survivors at T = sum_{m >= T} hist[m]
    return out


def move_sequence(
    surv: np.ndarray, start: int, step: int, max_moves: int = 100_000
) -> list[tuple[int, int, int]]:
    """The greedy order: (layer, head, new threshold) moves, always raising the head whose filter ratio
    at its current threshold is lowest (ties: lowest layer, then head)."""
    layers, hkv, tmax = surv.shape
    d1 = tmax - 1  # D + 1 filters everything
    total = surv[:, :, 0].astype(float)
    th = np.full((layers, hkv), start, dtype=np.int64)

    def fr(layer: int, h: int) -> float:
        s = surv[layer, h, th[layer, h]]
        return float("inf") if s == 0 else total[layer, h] / s

    heap = [(fr(i, h), i, h) for i in range(layers) for h in range(hkv) if total[i, h] > 0]
    heapq.heapify(heap)
    moves: list[tuple[int, int, int]] = []
    while heap and len(moves) < max_moves:
        _, i, h = heapq.heappop(heap)
        th[i, h] = min(d1, th[i, h] + step)
        moves.append((i, h, int(th[i, h])))
        if th[i, h] < d1:
            heapq.heappush(heap, (fr(i, h), i, h))
    return moves


def thresholds_after(
    moves: list[tuple[int, int, int]], n: int, shape: tuple[int, int], start: int
) -> np.ndarray:
    th = np.full(shape, start, dtype=np.int64)
    for i, h, t in moves[:n]:
        th[i, h] = t
    return th


def last_under_budget(
    run: Callable[[int], float],
    n_moves: int,
    limit: float,
    max_evals: int,
    after: Callable[[int, float, bool], None] | None = None,
) -> int:
    """The largest number of moves whose perplexity ``run(n)`` is within ``limit``, by bisection over
    0..n_moves, perplexity being non-decreasing along the move order (filters only remove keys).

    Setting 0 is evaluated only if the search ends there (then once, for the record and the warning):
    when the search ends above 0, 0 would have passed; when it ends at 0, 0 is the answer whether or not it
    passes. So the result is that of bisecting after a first check of setting 0, with one evaluation fewer
    whenever some move fits. ``after(n, ppl, ok)`` is called after each evaluation."""
    lo, hi = (
        0,
        n_moves,
    )  # invariant: settings past `hi` are over budget, `lo` is (or, for 0, is taken as) under
    evals = 0
    while lo < hi and evals < max_evals:
        mid = (lo + hi + 1) // 2
        ppl = run(mid)
        evals += 1
        ok = ppl <= limit
        if after is not None:
            after(mid, ppl, ok)
        if ok:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        ppl = run(0)
        if after is not None:
            after(0, ppl, ppl <= limit)
    return lo


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"


def tune_thresholds(
    *,
    model: str,
    tokens: int,
    window: int,
    sinks: int,
    k: int | None,
    step: int,
    start: int | None,
    max_evals: int,
    ppl_budget: float,
    itq: bool,
    text_path: Path | None,
    itq_file: Path | None = None,
    out: Path,
    device: str = "cpu",
    console: Console | None = None,
) -> ThresholdFile:
    console = console or Console(stderr=True)
    if step < 1:
        raise CemsimError(f"--step must be at least 1, got {step}", where="--step")
    if tokens <= window + sinks:
        raise CemsimError(
            f"--tokens {tokens} leaves no sparse region with W={window}, S={sinks}", where="--tokens"
        )
    t0 = time.perf_counter()
    with console.status("loading model"):
        lm = load_model(model, device=device, dtype="fp32")  # perplexity budgets are judged in fp32
    if tokens > lm.max_positions:
        raise CemsimError(
            f"{tokens} tokens exceed the model's {lm.max_positions} positions", where="--tokens"
        )
    text = load_text(text_path)
    ids = token_ids(lm.tokenizer, text, tokens, bos=lm.bos_id)
    start = 0 if start is None else start
    kk = published_k(tokens) if k is None else k
    setup: dict[str, float] = {"load": round(time.perf_counter() - t0, 1)}
    with console.status("ITQ rotations, dense perplexity, filter-ratio tables (cached dense attention)"):
        t = time.perf_counter()
        base, info = make_policy(
            lm,
            text,
            kind="longsight",
            context=tokens,
            window=window,
            sinks=sinks,
            k=kk,
            itq=itq,
            itq_file=itq_file,
        )
        setup["itq"] = round(time.perf_counter() - t, 1)
        # One dense pass gives the dense NLL (unless cached), Q and K for the tables and the input of the
        # first full-attention layer, which every sparse evaluation then starts from (cemsim.attention.prefix).
        t = time.perf_counter()
        passes: list[DensePass] = []

        def nll_from_pass() -> np.ndarray:
            passes.append(dense_pass(lm, ids, nll=True))
            return passes[0].nll  # type: ignore[return-value]

        nll_dense, _ = dense_nll_cached(lm, ids, text, compute=nll_from_pass)
        ppl_dense = perplexity(nll_dense)
        dp = passes[0] if passes else dense_pass(lm, ids, nll=False)
        setup["dense_pass"] = round(time.perf_counter() - t, 1)
        # Only full-attention layers have a sparse stage; sliding layers keep an empty table, so the greedy
        # order never moves their thresholds (they stay at `start` and are never used).
        t = time.perf_counter()
        full = lm.full_layers
        rot = None if base.rotations is None else base.rotations[full]
        surv = np.zeros((lm.num_layers, lm.num_kv_heads, lm.head_dim + 2), dtype=np.int64)
        surv[full] = survivor_tables(dp.keys[full], dp.queries[full], rot, window, sinks)
        prefix = dp.prefix
        del dp
        passes.clear()  # frees the Q and K copies
        setup["tables"] = round(time.perf_counter() - t, 1)
    moves = move_sequence(surv, start, step)
    shape = (lm.num_layers, lm.num_kv_heads)
    limit = ppl_dense * (1 + ppl_budget)
    results: dict[int, tuple[float, float]] = {}

    def run(n_moves: int) -> float:
        cfg = PolicyConfig(
            kind="longsight",
            window=window,
            sinks=sinks,
            k=kk,
            rotations=base.rotations,
            thresholds=thresholds_after(moves, n_moves, shape, start),
            backend=base.backend,
        )
        state = new_state(lm, cfg, total_positions=tokens)
        t_eval = time.perf_counter()
        with replaying_prefix(lm, prefix):
            ppl = perplexity(token_nll(lm, ids, state))
        cons = sum(float(s.considered.sum()) for s in state.stats)
        sv = sum(float(s.survivors.sum()) for s in state.stats)
        results[n_moves] = (ppl, cons / sv if sv else float("inf"))
        # One line per evaluation: visible above the bar in a terminal and in logs where the bar is not.
        console.print(
            f"evaluation {len(results)}: {n_moves}/{len(moves)} moves, perplexity {ppl:.4f} "
            f"({ppl / ppl_dense - 1:+.2%}), filter ratio {results[n_moves][1]:.2f}x, "
            f"{time.perf_counter() - t_eval:.0f} s"
        )
        return ppl

    expected = int(np.ceil(np.log2(len(moves) + 1)))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} evals"),
        TimeElapsedColumn(),
        console=console,
    ) as prog:
        task = prog.add_task("tuning", total=min(expected, max_evals))

        def after(mid: int, ppl: float, ok: bool) -> None:
            desc = f"moves {mid}/{len(moves)}: ppl {ppl:.3f} {'<=' if ok else '>'} {limit:.3f}"
            prog.update(task, description=desc if mid else f"no move fits: all T={start}")
            prog.advance(task)

        lo = last_under_budget(run, len(moves), limit, max_evals, after)
    if results[lo][0] > limit:
        console.print(
            f"[yellow]even T={start} everywhere exceeds the budget "
            f"({results[0][0]:.3f} > {limit:.3f}): top-k / window alone cost too much[/]"
        )
    best = thresholds_after(moves, lo, shape, start)
    ppl_best, fr_best = results.get(lo, (float("nan"), float("nan")))
    tf = ThresholdFile(
        model=lm.name,
        head_dim=lm.head_dim,
        thresholds=best,
        itq=itq,
        layer_types=[lm.layer_type(i) for i in range(lm.num_layers)] if lm.sliding_window else None,
        provenance={
            "tool": "cemsim tune",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, model on {_device_name(lm.device)}",
            "procedure": "LongSight greedy (lowest filter ratio first) with bisection over the fixed move order",
            "ppl_budget": ppl_budget,
            "tokens": tokens,
            "window": window,
            "sinks": sinks,
            "k": kk,
            "step": step,
            "start": start,
            "text": text.provenance,
            "text_sha256": text.sha256,
            "itq_file": info.get("itq_file"),
            "ppl_dense": ppl_dense,
            "ppl_sparse": ppl_best,
            "filter_ratio": fr_best,
            "moves_accepted": lo,
            "moves_total": len(moves),
            "evaluations": {str(n): {"ppl": p, "filter_ratio": f} for n, (p, f) in sorted(results.items())},
            "seconds": round(time.perf_counter() - t0, 1),
            "setup_seconds": setup,
        },
    )
    tf.save(out)
    table = Table(
        title=f"cemsim tune: {lm.name}, {tokens} tokens, budget {ppl_budget:.1%}", show_header=False
    )
    for a, b in [
        ("dense perplexity", f"{ppl_dense:.4f}"),
        ("tuned perplexity", f"{ppl_best:.4f} ({ppl_best / ppl_dense - 1:+.2%})"),
        ("filter ratio", f"{fr_best:.2f}x"),
        (
            "thresholds (min / mean / max)" + (" of full-attention layers" if lm.sliding_window else ""),
            f"{best[full].min()} / {best[full].mean():.1f} / {best[full].max()}",
        ),
        ("evaluations", str(len(results))),
        ("written", str(out)),
    ]:
        table.add_row(a, b)
    Console().print(table)
    return tf
