# ruff: noqa: B023  (closures are timed inside the loop iteration that made them)
"""GPU-side LongSight per layer: the fused pipeline (kernels/longsight_fused.cu) against today's pipeline
(benchmarks/gpu/calibrate.py sparse_layer: per-head filter + compaction launches, torch gather, scores, topk)
and against the byte floor; the SCF filter alone (popc and b1-MMA bitmaps, issue 7's scf_bitmap) against copy
bandwidth. Issue 18. Run on the device machine:

    python3 benchmarks/gpu/bench_fused.py --out $OUT/fused.json

Method: CUDA events, median of --reps timed replays after warm-up; the fused layer and today's pipeline are
each captured in one CUDA graph; inputs rotate among several sets where one set would fit in L2. Floor = bytes
the step must read (cemsim.gpu.fused.Shape.floor_bytes) / device-to-device copy bandwidth measured in the same
run (bytes read + written). Random data: bf16 N(0, 1) keys and values, random sign bits, thresholds that keep
1-10 % of keys (cemsim.gpu.reference.survival_threshold). Each configuration's survivors, top-k and output on
row 0 are checked against the NumPy reference before it is timed. ``--dry`` builds every configuration's
shapes and byte counts without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from run_info import host_info, smi

from cemsim.atomic import atomic_write_text
from cemsim.gpu import fused
from cemsim.gpu import reference as ref
from cemsim.gpu.fused import Shape, config_key, parse_config_key, survivor_slots

L2 = 60 * 2**20
KV_HEADS, GROUP, D, WINDOW, SINKS = 8, 4, 128, 1024, 16  # Llama-3-8B, LongSight's band
CONTEXTS = (4096, 8192, 32768, 131072, 524288, 1048576)
SURVIVAL = (0.01, 0.02, 0.05, 0.10)


def k_for(ctx: int) -> int:
    """LongSight's k schedule (as the simulator's): 256 up to 32K, 512 at 64K, 1,024 beyond."""
    return 256 if ctx <= 32768 else 512 if ctx <= 65536 else 1024


def shape_for(users: int, ctx: int, survival: float) -> Shape:
    region = ctx - WINDOW - SINKS
    return Shape(
        users, KV_HEADS, GROUP, D, ctx, WINDOW, SINKS, k_for(ctx), cap=survivor_slots(region, survival)
    )


def provenance() -> dict:
    import cupy as cp

    return {
        **host_info(),
        "clocks_sm_mem_mhz": smi("clocks.sm,clocks.mem"),
        "nvrtc": ".".join(map(str, cp.cuda.nvrtc.getVersion())),
        "script": _running_script(),
    }


def _running_script() -> str:
    """The script that made the file (bench_layer.py, bench_gather.py, ... import this module's provenance)."""
    path = Path(sys.argv[0]).resolve()
    root = Path(__file__).resolve().parents[2]
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def use_build(
    defines: str, trace: bool = False, source: str | None = None, lineinfo: bool = False
) -> tuple[object | None, list[str]]:
    """The pipeline's kernels from a variant build (``defines``: comma list of NAME=VALUE; ``trace``: LS_TRACE;
    ``source``: another copy of kernels/longsight_fused.cu; ``lineinfo``: with line tables, for Nsight Compute),
    installed as cemsim.gpu.fused's module for every FusedLongSight made after; (None, []) when nothing is asked,
    the shipped build then."""
    names = [d for d in defines.split(",") if d] + (["LS_TRACE"] if trace else [])
    if not names and not source and not lineinfo:
        return None, []
    mod = fused.build_module(*names, source=Path(source) if source else None, lineinfo=lineinfo)
    fused._module = lambda: mod
    return mod, names


def timer(cp, fn, reps: int, warmup: int = 3, stream=None) -> list[float]:
    """Microseconds of each of ``reps`` calls of ``fn(i)``, CUDA events on ``stream``."""
    s = stream or cp.cuda.get_current_stream()
    for i in range(warmup):
        fn(i)
    s.synchronize()
    out = []
    for i in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(s)
        fn(i)
        b.record(s)
        b.synchronize()
        out.append(cp.cuda.get_elapsed_time(a, b) * 1e3)
    return out


def back_to_back(cp, launch, stream, inner: int = 20, outer: int = 7) -> float:
    """Microseconds per call of ``launch(i)`` issued ``inner`` times back to back between two events (median
    over ``outer`` rounds): the GPU time a layer costs inside a decode step's graph, without the host's launch
    latency that a single synchronised replay also counts."""
    for i in range(3):
        launch(i)
    stream.synchronize()
    per = []
    for _ in range(outer):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        for i in range(inner):
            launch(i)
        b.record(stream)
        b.synchronize()
        per.append(cp.cuda.get_elapsed_time(a, b) * 1e3 / inner)
    return statistics.median(per)


def copy_bandwidth(cp) -> dict:
    src = cp.random.randint(0, 255, 4 * 2**30, dtype=cp.uint8)
    dst = cp.empty_like(src)
    meds = []
    for _ in range(3):
        ts = timer(cp, lambda i: dst.__setitem__(Ellipsis, src), reps=20)
        meds.append(2 * src.nbytes / (statistics.median(ts) * 1e-6))
    cp.get_default_memory_pool().free_all_blocks()
    return {
        "bytes_read_plus_written": 8 * 2**30,
        "repeats_bytes_per_s": meds,
        "bandwidth_bytes_per_s": max(meds),
    }


# ------------------------------------------------------------------------------------------------ filters


def bench_filters(
    cp, bw: float, sizes: list[int], groups: list[int], reps: int, frag_groups: list[int]
) -> list[dict]:
    """Each filter kernel at each (D, N, G), checked bit for bit against the NumPy reference on the first 1M
    keys before it is timed: today's popc / b1-MMA bitmaps and issue 7's scf_bitmap on natural-layout
    signs at ``groups``, the frag-layout b1-MMA filter (kernels/scf_frag.cu) at ``frag_groups``. Times: the
    median of ``reps`` event-timed single launches, and back to back (20 launches between two events)."""
    from cemsim.gpu.fused import FragFilterKernel, bitmap_filter
    from cemsim.gpu.sign_layout import to_frag
    from cemsim.kernels import KERNEL_DIR

    old = cp.RawModule(code=(KERNEL_DIR / "scf_bitmap.cu").read_text(), options=("-std=c++17",))
    rng = np.random.default_rng(0)
    rows = []
    for d in (128, 64):
        w = d // 64
        for n in sizes:
            nbytes = n * w * 8
            nbuf = max(2, -(-4 * L2 // nbytes))
            keys = [
                cp.random.randint(0, 2**63 - 1, size=(n, w), dtype=cp.int64).view(cp.uint64)
                for _ in range(nbuf)
            ]
            for kb in keys:  # the top bit too
                kb ^= cp.random.randint(0, 2, size=(n, w), dtype=cp.int64).view(cp.uint64) << np.uint64(63)
            frag = [to_frag(kb) for kb in keys]
            words = -(-n // 32)
            out = cp.empty(words, dtype=cp.uint32)
            check_n = min(n, 1 << 20)
            khost = cp.asnumpy(keys[0][:check_n])
            for g in sorted(set(groups) | set(frag_groups)):
                qh = rng.integers(0, 2**64, size=(g, w), dtype=np.uint64)
                q = cp.asarray(qh)
                t = ref.survival_threshold(d, g, 0.05)
                want = ref.bitmap(khost, qh, t)
                calls = {}
                if g in groups:
                    for name in ("popc", "mma", "mmax"):
                        calls[name] = (bitmap_filter(name, w), (-(-words // 64),), keys, True)
                    calls["issue7_bitmap"] = (
                        old.get_function(f"scf_bitmap_w{w}"),
                        (-(-n // 256),),
                        keys,
                        True,
                    )
                if g in frag_groups:
                    calls["frag"] = (FragFilterKernel(w, g), None, frag, False)
                for name, (f, grid, bufs, natural) in calls.items():

                    def call(i: int) -> None:
                        if not natural:
                            f(q, bufs[i % nbuf], n, g, t, out)
                            return
                        f(
                            grid,
                            (256,),
                            (q, bufs[i % nbuf], np.int64(n), np.int32(g), np.int32(d), np.int32(t), out),
                        )

                    out.fill(0xDEADBEEF)  # poison: every word must be written
                    call(0)
                    got = cp.asnumpy(out[: len(want)])
                    last = check_n % 32
                    if check_n < n and last:  # a checked prefix ending mid-word: compare whole words only
                        got, want_cmp = got[:-1], want[:-1]
                    else:
                        want_cmp = want
                    ok = bool(np.array_equal(got, want_cmp))
                    us = statistics.median(timer(cp, call, reps))
                    # back to back on one stream: the kernel's own time, without the host's launch latency that
                    # a lone event-timed launch also counts (~10 us of Python here)
                    b2b = back_to_back(cp, call, cp.cuda.get_current_stream())
                    moved = nbytes + words * 4
                    rows.append(
                        {
                            "variant": name,
                            "D": d,
                            "N": n,
                            "G": g,
                            "threshold": t,
                            "correct": ok,
                            "median_us": us,
                            "bytes": moved,
                            "floor_us": moved / bw * 1e6,
                            "fraction_of_copy_bw": moved / bw * 1e6 / us,
                            "b2b_us": b2b,
                            "b2b_fraction_of_copy_bw": moved / bw * 1e6 / b2b,
                        }
                    )
                    print(
                        f"filter {name:16s} D={d} N={n:>9,} G={g:2d} {us:8.1f} us"
                        f" {rows[-1]['fraction_of_copy_bw']:6.1%}"
                        f" b2b {b2b:8.1f} us {rows[-1]['b2b_fraction_of_copy_bw']:6.1%}{'' if ok else '  WRONG'}",
                        flush=True,
                    )
            keys.clear()
            frag.clear()
            cp.get_default_memory_pool().free_all_blocks()
    return rows


def bench_select_methods(cp, torch, ctx: int, users: int, survival: float, group: int) -> list[dict]:
    """ls_select (filter + compaction + survivor scores) alone with each filter method on one layer's rows
    (Llama-3-8B's 8 KV heads, ``group`` query heads each), back to back with its counter reset; every method's
    survivors checked equal to popc's, and row 0's against the NumPy reference."""
    from cemsim.gpu.fused import Config, FusedLongSight
    from cemsim.gpu.sign_layout import to_frag

    data = Data(cp, torch, users, ctx, seed=7)
    rng = np.random.default_rng(group)
    rows_n = users * KV_HEADS
    qsig = cp.asarray(rng.integers(0, 2**64, size=(rows_n, group, D // 64), dtype=np.uint64))
    q = cp.asarray((rng.standard_normal((rows_n, group, D)) / D**0.5).astype(np.float32))
    frag = to_frag(data.ksig)
    base = shape_for(users, ctx, survival)
    s = Shape(users, KV_HEADS, group, D, ctx, WINDOW, SINKS, base.k, cap=base.cap)
    t = ref.survival_threshold(D, group, survival)
    thresholds = cp.full(s.rows, t, dtype=cp.int32)
    stream = cp.cuda.Stream(non_blocking=True)
    row0 = ref.survivors(cp.asnumpy(data.ksig[:1]), cp.asnumpy(qsig[:1]), np.array([t]), s.start, s.region)
    out, first = [], None
    for method in ("popc", "mma", "mmax", "frag"):
        p = FusedLongSight(s, method=method, config=Config(select="fused"))
        args = (frag if method == "frag" else data.ksig, qsig, thresholds, q, data.keys, data.vals)
        p.run(*args)
        cp.cuda.Device().synchronize()
        res = p.results()
        got = [np.sort(res["idx"][r, : res["count"][r]]) for r in range(s.rows)]
        first = first or got
        same = all(np.array_equal(a, b) for a, b in zip(first, got, strict=True))
        with stream:  # the select with the tally reset the layer's merge would do
            stream.begin_capture()
            p.reset()
            p.stages(*args)["select"]()
            graph = stream.end_capture()
        us = back_to_back(cp, lambda i: graph.launch(stream), stream)
        out.append(
            {
                "method": method,
                "context": ctx,
                "users": users,
                "group": group,
                "survival_target": survival,
                "survivors": int(res["count"].sum()),
                "overflowed": p.overflowed(),
                "same_survivors_as_popc": same,
                "row0_matches_reference": bool(np.array_equal(got[0], row0[0])),
                "zero_select_b2b_us": us,
            }
        )
        print(
            f"select {method:5s} B={users} G={group} ctx={ctx:,} surv={survival:.0%}: {us:7.1f} us  same {same}"
            f"  row0 {out[-1]['row0_matches_reference']}",
            flush=True,
        )
        del p
    return out


def mma_rates(cp) -> dict:
    """b1 MMAs per second per SM of each form (benchmarks/gpu/b1_mma_rates.cu), all SMs busy."""
    mod = cp.RawModule(code=(Path(__file__).parent / "b1_mma_rates.cu").read_text())
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    blocks, threads, iters, chains = sms * 8, 128, 4096, 8
    out = cp.empty(blocks * threads, dtype=cp.int32)
    res = {}
    for form in ("and_k128", "and_k256", "xor_k128"):
        f = mod.get_function(f"b1_rate_{form}")
        us = statistics.median(timer(cp, lambda i: f((blocks,), (threads,), (np.int32(iters), out)), 5))
        mmas = blocks * (threads // 32) * iters * chains
        res[form] = {"us": us, "mma_per_s_per_sm": mmas / (us * 1e-6) / sms}
        print(f"b1 mma {form}: {res[form]['mma_per_s_per_sm'] / 1e9:.3f} G/s/SM", flush=True)
    return res


# ------------------------------------------------------------------------------------------------ layer


PLANTED_THRESHOLD = 100  # random signs reach 100 of 128 matches with probability ~2e-10 per query


class Data:
    """One input set on the GPU for ``users`` x 8 rows at ``ctx`` tokens (torch makes the bf16 data).

    ``planted``: that fraction of each row's region keys (exactly, rounded) get the signs of one of the row's
    query heads with each bit flipped with probability 1/16 (~8 of 128 bits), so they reach
    PLANTED_THRESHOLD matches and random keys almost never do: survival at a chosen fraction instead of the
    few that integer thresholds on random signs give."""

    def __init__(self, cp, torch, users: int, ctx: int, seed: int, planted: float | None = None) -> None:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        rows = users * KV_HEADS
        self.tk = torch.randn(rows, ctx, D, dtype=torch.bfloat16, device="cuda", generator=gen)
        self.tv = torch.randn(rows, ctx, D, dtype=torch.bfloat16, device="cuda", generator=gen)

        def bits(*shape: int) -> torch.Tensor:  # uniform random 64-bit words
            w = torch.randint(-(2**62), 2**62, shape, dtype=torch.int64, device="cuda", generator=gen)
            return w ^ (torch.randint(0, 2, shape, dtype=torch.int64, device="cuda", generator=gen) << 63)

        self.tsig = bits(rows, ctx, D // 64)
        self.tqsig = bits(rows, GROUP, D // 64)
        if planted is not None:
            region = ctx - WINDOW - SINKS
            n = round(planted * region)
            pos = torch.stack(
                [torch.randperm(region, device="cuda", generator=gen)[:n] + SINKS for _ in range(rows)]
            )
            head = torch.randint(0, GROUP, (rows, n), device="cuda", generator=gen)
            r = torch.arange(rows, device="cuda")[:, None]
            flips = bits(rows, n, D // 64) & bits(rows, n, D // 64) & bits(rows, n, D // 64)
            flips &= bits(rows, n, D // 64)
            self.tsig[r, pos] = self.tqsig[r, head] ^ flips
        self.tq = torch.randn(rows, GROUP, D, dtype=torch.float32, device="cuda", generator=gen) / D**0.5
        self.keys = cp.from_dlpack(self.tk.view(torch.int16)).view(cp.uint16)
        self.vals = cp.from_dlpack(self.tv.view(torch.int16)).view(cp.uint16)
        self.ksig = cp.from_dlpack(self.tsig).view(cp.uint64)
        self.qsig = cp.from_dlpack(self.tqsig).view(cp.uint64)
        self.q = cp.from_dlpack(self.tq)

    @cached_property
    def frag(self):
        """The key signs in frag layout (the frag filter's input), made once when first asked for."""
        from cemsim.gpu.sign_layout import to_frag

        return to_frag(self.ksig)

    def signs(self, method: str):
        """The key signs in the layout ``method``'s filter reads."""
        return self.frag if method == "frag" else self.ksig


def check_row0(cp, s: Shape, data: Data, thresholds, p) -> dict:
    """Row 0 (user 0, KV head 0) against the NumPy reference: survivors, scores, top-k, output."""
    x = {
        "ksig": cp.asnumpy(data.ksig[:1]),
        "qsig": cp.asnumpy(data.qsig[:1]),
        "thresholds": cp.asnumpy(thresholds[:1]),
        "q": cp.asnumpy(data.q[:1]),
        "keys": cp.asnumpy(data.keys[:1]),
        "vals": cp.asnumpy(data.vals[:1]),
    }
    got = {k: v[:1] for k, v in p.results().items()}
    s1 = Shape(1, 1, s.group, s.head_dim, s.ctx, s.window, s.sinks, s.k, s.cap)
    try:
        ref.check_pipeline(s1, x, got)
        return {"row0_checked": True, "row0_error": None}
    except AssertionError as e:
        return {"row0_checked": False, "row0_error": str(e)[:500]}


def old_pipeline(torch, cp, data: Data, s: Shape, threshold: int, survival: float):
    """Today's pipeline, as benchmarks/gpu/calibrate.py sparse_layer measured it (generalised to users x heads
    rows and a given threshold): per row one scf_compact_w2 launch, torch gather of a padded survivor list,
    bmm scores, topk per query head, gather of the picks' values, SDPA over the band, a merge."""
    from cemsim.kernels import KERNEL_DIR

    mod = cp.RawModule(code=(KERNEL_DIR / "scf_bitmap.cu").read_text(), options=("-std=c++17",))
    compact = mod.get_function("scf_compact_w2")
    hk, grp, d, k = s.rows, s.group, s.head_dim, s.k
    sparse_n = s.region
    keys, vals = data.tk, data.tv
    signs = data.tsig[:, s.start : s.start + sparse_n].contiguous()
    qsig, q = data.tqsig, data.tq.to(torch.bfloat16)
    cap = max(k, int(sparse_n * survival * 3))
    idx = torch.zeros(hk, cap, dtype=torch.int32, device="cuda")
    count = torch.zeros(hk, dtype=torch.int64, device="cuda")
    ar = torch.arange(cap, device="cuda")
    block, kpt = 256, 8
    grid = (-(-sparse_n // (block * kpt)),)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    dense_k = torch.cat([keys[:, : s.sinks], keys[:, s.ctx - s.window :]], 1)[None]
    dense_v = torch.cat([vals[:, : s.sinks], vals[:, s.ctx - s.window :]], 1)[None]

    def layer() -> torch.Tensor:
        stream = cp.cuda.Stream.from_external(torch.cuda.current_stream())
        count.zero_()
        with stream:
            for hh in range(hk):
                compact(
                    grid,
                    (block,),
                    (qsig[hh].data_ptr(), signs[hh].data_ptr(), np.int64(sparse_n), np.int32(grp), np.int32(d),
                     np.int32(threshold), idx[hh].data_ptr(), count[hh : hh + 1].data_ptr()),
                )  # fmt: skip
        valid = ar[None, :] < count[:, None]
        pos = torch.where(valid, idx.long() + s.start, 0)
        ks = torch.gather(keys, 1, pos[:, :, None].expand(-1, -1, d))
        sc = torch.bmm(ks, q.transpose(1, 2)).float()
        sc = sc.masked_fill(~valid[:, :, None], float("-inf"))
        top, ti = torch.topk(sc, k, dim=1)
        vpos = torch.gather(pos, 1, ti.reshape(hk, -1)).reshape(hk, k * grp)
        vs = torch.gather(vals, 1, vpos[:, :, None].expand(-1, -1, d)).view(hk, k, grp, d)
        o_dense = sdpa(q.view(1, hk * grp, 1, d), dense_k, dense_v, enable_gqa=True)
        w = torch.softmax(top, dim=1)
        o_sparse = torch.einsum("hkg,hkgd->hgd", w.to(torch.bfloat16), vs)
        return o_dense.view(hk, grp, d) * 0.5 + o_sparse * 0.5

    return layer, count, cap


def torch_graph_time(torch, fn, reps: int) -> tuple[list[float], float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        fn()
    torch.cuda.current_stream().wait_stream(st)
    with torch.cuda.graph(g):
        fn()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1e3)
    per = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(10):
            g.replay()
        b.record()
        b.synchronize()
        per.append(a.elapsed_time(b) * 1e3 / 10)
    return out, statistics.median(per)


def graph_overhead(cp) -> dict:
    """Back-to-back time of graphs of empty kernels (ls_nop) shaped like the layer: one kernel; band on a side
    branch beside select -> top-k (fork and join), plain and with the top-k launched programmatically. What a
    layer pays for its launches whatever its kernels do."""
    from cemsim.gpu.fused import _launch_ex, _module

    nop = _module().get_function("ls_nop")
    sink = cp.zeros(1, dtype=cp.int32)
    stream = cp.cuda.Stream(non_blocking=True)
    side = cp.cuda.Stream(non_blocking=True)
    out = {}

    def one() -> None:
        nop((1,), (32,), (sink,))

    def layer(pdl: bool) -> None:
        fork, join = cp.cuda.Event(disable_timing=True), cp.cuda.Event(disable_timing=True)
        fork.record(stream)
        side.wait_event(fork)
        with side:
            nop((136,), (256,), (sink,))
        join.record(side)
        nop((512,), (256,), (sink,))
        if pdl:
            _launch_ex(nop, (32,), (1024,), (sink,), pdl=True)
        else:
            nop((32,), (1024,), (sink,))
        stream.wait_event(join)

    for name, fn in (("one_kernel", one), ("layer_topology", lambda: layer(False)),
                     ("layer_topology_pdl", lambda: layer(True))):  # fmt: skip
        try:
            g = capture(cp, stream, [fn])
            out[name] = back_to_back(cp, lambda i: g.launch(stream), stream)
        except Exception as e:
            out[name] = f"{type(e).__name__}: {e}"[:300]
            traceback.print_exc()
    print(f"graph overhead b2b: {out}", flush=True)
    return out


def capture(cp, stream, fns) -> object:
    with stream:
        stream.begin_capture()
        try:
            for f in fns:
                f()
        except Exception:
            stream.end_capture()
            raise
        return stream.end_capture()


def graph_of_layers(cp, s, data, thresholds, pipes, args, stream, n: int) -> dict:
    """``n`` layers recorded into one graph, the pipelines (and their input sets) in turn, replayed back to back:
    the time per layer, and row 0 of the first layer checked after one replay."""
    graph = capture(
        cp,
        stream,
        [lambda i=i: pipes[i % len(pipes)].record(*args[i % len(pipes)], stream=stream) for i in range(n)],
    )
    pipes[0].out.fill(np.nan)
    graph.launch(stream)
    stream.synchronize()
    checked = check_row0(cp, s, data, thresholds, pipes[0])["row0_checked"]
    per_layer = back_to_back(cp, lambda i: graph.launch(stream), stream) / n
    return {
        "graph_layers": n,
        "graph_layers_row0_checked": checked,
        "graph_layers_b2b_us_per_layer": per_layer,
    }


def bench_layers(
    cp,
    torch,
    bw: float,
    configs: list[tuple[int, int]],
    reps: int,
    old_for,
    deadline: float,
    planted: bool,
    survival_points: tuple[float, ...] = SURVIVAL,
    method: str | None = None,
    graph_layers: int = 0,
) -> list[dict]:
    """``method``: the filter method (None: choose_method's); frag reads frag-layout signs. ``graph_layers``: also
    time the chosen kernels as that many layers in one graph (:func:`graph_of_layers`), per layer."""
    from cemsim.gpu.fused import MULTI_BLOCK_CTAS, TOPK_VARIANTS, Config, FusedLongSight, choose_config

    points: list[tuple[float, bool]] = [(x, False) for x in survival_points] + (
        [(0.05, True)] if planted else []
    )
    rows = []
    for users, ctx in configs:
        if time.time() > deadline:
            print(f"deadline: skipping users={users} ctx={ctx} and later", flush=True)
            break
        s0 = shape_for(users, ctx, 0.05)
        set_bytes = 2 * s0.rows * ctx * D * 2
        hot = s0.floor_bytes(s0.rows * s0.region * 0.05, s0.rows * s0.group * s0.k)
        free = cp.cuda.Device().mem_info[0]
        nsets = int(max(1, min(4, -(-4 * L2 // hot), (0.5 * free) // set_bytes)))
        for survival, plant in points:
            if plant or survival == survival_points[0]:  # planted points need their own signs
                sets = args = thresholds = None
                torch.cuda.empty_cache()
                cp.get_default_memory_pool().free_all_blocks()
                sets = [
                    Data(cp, torch, users, ctx, seed=1000 * users + ctx + i, planted=0.05 if plant else None)
                    for i in range(nsets)
                ]
            s = shape_for(users, ctx, survival)
            t = PLANTED_THRESHOLD if plant else ref.survival_threshold(D, GROUP, survival)
            thresholds = cp.full(s.rows, t, dtype=cp.int32)
            pipes = [FusedLongSight(s, method=method) for _ in sets]  # type: ignore[arg-type]
            args = [(d.signs(pipes[0].method), d.qsig, thresholds, d.q, d.keys, d.vals) for d in sets]
            row: dict = {"users": users, "context": ctx, "survival_target": survival, "planted": plant,
                         "threshold": t, "k": s.k, "window": WINDOW, "sinks": SINKS, "kv_heads": KV_HEADS,
                         "group": GROUP, "head_dim": D, "method": pipes[0].method, "input_sets": nsets}  # fmt: skip
            try:
                p0 = pipes[0]
                p0.run(*args[0])
                cp.cuda.Device().synchronize()
                if p0.overflowed():
                    raise RuntimeError("survivor capacity overflowed")
                first = check_row0(cp, s, sets[0], thresholds, p0)
                res = p0.results()
                survivors = int(res["count"].sum())
                picks = int(res["pick_count"].sum())
                stream = cp.cuda.Stream(non_blocking=True)
                # top-k kernels alone (selection only) on the survivors one select left in the tally (all
                # exact; tests/gpu checks each), then every select form x attention chunk x where the picks'
                # attention runs (in the top-k blocks or a launch of its own) as a whole layer with the best one
                p0.config.fold = False
                for name, f in p0.stages(*args[0]).items():
                    if name in ("select", "filter", "score"):
                        f()
                row["topk_variant_b2b_us"] = {}
                for v in TOPK_VARIANTS:
                    # the spread and fan kernels' selection alone is the sample top-k's (the same kernel)
                    if v in MULTI_BLOCK_CTAS:
                        continue
                    p0.config.topk = v
                    g1 = capture(cp, stream, [p0.stages(*args[0])["topk"]])
                    row["topk_variant_b2b_us"][v] = back_to_back(cp, lambda i: g1.launch(stream), stream)
                p0.reset()
                best_topk = min(row["topk_variant_b2b_us"], key=row["topk_variant_b2b_us"].get)
                row["layer_variant_b2b_us"] = {}
                row["layer_variant_errors"] = {}
                # the fastest top-k alone, the sample top-k (its fold is cheap where the cluster's is not), the
                # spread ones (the sample top-k over a cluster) and fan2 (two blocks a head, linear bins): folded
                # only, apart each is sample;
                # ls_select (rows 0) and ls_select2 (rows 4; 16: the rows' scores by MMA) for the fused form, each
                # with and without programmatic launch of what follows it (pdl), and with it the band beside the
                # top-k (late)
                forms = [
                    ("fused", r, pdl, late)
                    for r in (0, *fused.SELECT_ROWS)
                    for pdl, late in ((0, 0), (1, 0), (1, 1))
                ]
                forms.append(("split", 0, False, False))
                for topk in sorted({best_topk, "sample", *MULTI_BLOCK_CTAS}):
                    for form, rows_, pdl, late in forms:
                        for chunk in (64, 128):
                            for fold in (True, False) if topk not in MULTI_BLOCK_CTAS else (True,):
                                cfg = Config(  # type: ignore[arg-type]
                                    form, topk, chunk, fold, rows_, bool(pdl), band_late=bool(late)
                                )
                                key = config_key(cfg)
                                try:
                                    for p in pipes:
                                        p.config = cfg
                                    gs = [
                                        p.capture(*a, stream=stream) for p, a in zip(pipes, args, strict=True)
                                    ]
                                    row["layer_variant_b2b_us"][key] = back_to_back(
                                        cp, lambda i: gs[i % nsets].launch(stream), stream
                                    )
                                except Exception as e:  # one variant's failure must not cost the point
                                    row["layer_variant_errors"][key] = f"{type(e).__name__}: {e}"[:300]
                                    traceback.print_exc()
                                    cp.cuda.Device().synchronize()
                                    for p in pipes:
                                        p.reset()
                best_staged = parse_config_key(
                    min(row["layer_variant_b2b_us"], key=row["layer_variant_b2b_us"].get)
                )
                # the whole layer in one launch (ls_layer), as many blocks per row as run at once
                try:
                    cfg = Config(layer=True)
                    for p in pipes:
                        p.config = cfg
                    g = p0.layer_geometry()
                    row["layer_geometry"] = {"ctas": g.ctas, "scap": g.scap, "bcap": g.bcap, "smem": g.smem,
                                             "resident": g.resident}  # fmt: skip
                    p0.run(*args[0])
                    cp.cuda.Device().synchronize()
                    if p0.overflowed():  # a block's list too short: not an answer, so not a time
                        raise RuntimeError(f"survivor lists overflowed ({int(p0.lost.max())} lost in a row)")
                    gs = [p.capture(*a, stream=stream) for p, a in zip(pipes, args, strict=True)]
                    row["layer_variant_b2b_us"]["layer"] = back_to_back(
                        cp, lambda i: gs[i % nsets].launch(stream), stream
                    )
                except Exception as e:
                    row["layer_variant_errors"]["layer"] = f"{type(e).__name__}: {e}"[:300]
                    traceback.print_exc()
                    cp.cuda.Device().synchronize()
                best = min(row["layer_variant_b2b_us"], key=row["layer_variant_b2b_us"].get)
                chosen = parse_config_key(best)
                row["default_config"] = dict(vars(choose_config(s)))
                row["config"] = dict(vars(chosen))
                for p in pipes:
                    p.config = replace(chosen)
                p0.run(*args[0])  # the chosen kernels' results, checked too
                again = check_row0(cp, s, sets[0], thresholds, p0)
                # and the new kernels together (ls_select2, the sample top-k folded or spread, programmatic
                # launch; ls_layer) whatever was chosen, eager then replayed in a graph
                row["row0_new_kernels_checked"], row["row0_new_kernels_error"] = True, None
                for topk_new in ("sample", *MULTI_BLOCK_CTAS, "layer"):
                    try:
                        p0.config = (
                            Config(layer=True)
                            if topk_new == "layer"
                            else Config("fused", topk_new, 64, True, 4, True)  # type: ignore[arg-type]
                        )
                        p0.run(*args[0])
                        new = check_row0(cp, s, sets[0], thresholds, p0)
                        gnew = p0.capture(*args[0], stream=stream)
                        gnew.launch(stream)
                        stream.synchronize()
                        new_graph = check_row0(cp, s, sets[0], thresholds, p0)
                        ok = bool(new["row0_checked"] and new_graph["row0_checked"])
                        err = new["row0_error"] or new_graph["row0_error"]
                    except Exception as e:
                        ok, err = False, f"{type(e).__name__}: {e}"[:300]
                        traceback.print_exc()
                        cp.cuda.Device().synchronize()
                        p0.reset()
                    row["row0_new_kernels_checked"] = row["row0_new_kernels_checked"] and ok
                    row["row0_new_kernels_error"] = row["row0_new_kernels_error"] or err
                p0.config = replace(chosen)
                row["row0_checked"] = bool(first["row0_checked"] and again["row0_checked"])
                row["row0_error"] = first["row0_error"] or again["row0_error"]
                # eager, per launch (launch gaps included)
                stages = p0.stages(*args[0])
                st_times: dict[str, list[float]] = {n: [] for n in stages}
                for _ in range(10):
                    ev = [cp.cuda.Event() for _ in range(len(stages) + 1)]
                    ev[0].record()
                    for j, f in enumerate(stages.values()):
                        f()
                        ev[j + 1].record()
                    ev[-1].synchronize()
                    for j, n in enumerate(stages):
                        st_times[n].append(cp.cuda.get_elapsed_time(ev[j], ev[j + 1]) * 1e3)
                row["eager_stage_median_us"] = {n: statistics.median(v) for n, v in st_times.items()}
                graphs = [p.capture(*a, stream=stream) for p, a in zip(pipes, args, strict=True)]
                ts = timer(cp, lambda i: graphs[i % nsets].launch(stream), reps, stream=stream)
                row["fused_b2b_us"] = back_to_back(cp, lambda i: graphs[i % nsets].launch(stream), stream)
                if graph_layers > 0:
                    row.update(graph_of_layers(cp, s, sets[0], thresholds, pipes, args, stream, graph_layers))
                    # the same with each layer's select launched programmatically after the kernels ahead of it
                    # (Config.chain), as a decode step launched with programmatic dependencies throughout would
                    for p in pipes:
                        p.config = replace(chosen, chain=True)
                    chained = graph_of_layers(cp, s, sets[0], thresholds, pipes, args, stream, graph_layers)
                    row.update(
                        {k.replace("graph_layers", "graph_layers_chain"): v for k, v in chained.items()}
                    )
                    for p in pipes:
                        p.config = replace(chosen)
                # each stage alone, back to back, in its unfolded form (a folded top-k alone would finish the
                # merges and zero the tally it reads): the select with a reset in front (what the layer's
                # merge does), the top-k's selection on the survivors it left, the attention (band, then
                # picks: the merge counters need both)
                p0.config = replace(best_staged, fold=False, pdl=False)  # (ls_layer has no stages)
                stages = p0.stages(*args[0])
                sel = [stages[n] for n in ("select", "filter", "score") if n in stages]
                parts = {
                    "reset+select": [p0.reset, *sel],
                    "topk": [stages["topk"]],
                    "attention": [stages["band"], stages["picks"]],
                }
                if len(sel) == 2:
                    parts["reset+filter"] = [p0.reset, sel[0]]
                row["stage_b2b_us"] = {}
                for name, fs in parts.items():
                    g1 = capture(cp, stream, fs)
                    row["stage_b2b_us"][name] = back_to_back(cp, lambda i: g1.launch(stream), stream)
                    if name == "reset+select":
                        p0.reset()
                        for f in sel:  # leave one select's survivors for the top-k alone
                            f()
                p0.reset()
                p0.config = chosen
                p0.run(*args[0])  # leave set 0's results consistent for the checks below
                if p0.overflowed():
                    raise RuntimeError("survivor capacity overflowed in the graph")
                floor = s.floor_bytes(survivors, picks)
                row.update(
                    {
                        "survivors_per_layer": survivors,
                        "survival": survivors / (s.rows * s.region),
                        "picks_per_layer": picks,
                        "fused_median_us": statistics.median(ts),
                        "fused_min_us": min(ts),
                        "fused_p90_us": float(np.percentile(ts, 90)),
                        "floor_bytes": floor,
                        "floor_us": floor / bw * 1e6,
                    }
                )
                row["fused_over_floor"] = row["fused_b2b_us"] / row["floor_us"]
            except Exception as e:  # record and go on: one bad configuration must not cost the run
                row["error"] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            del pipes
            if "error" not in row and not plant and old_for(users, ctx, survival):
                try:
                    layer, count, cap = old_pipeline(torch, cp, sets[0], s, t, survival)
                    ts, b2b = torch_graph_time(torch, layer, max(10, reps // 3))
                    row["old_median_us"] = statistics.median(ts)
                    row["old_b2b_us"] = b2b
                    row["old_cap"] = cap
                    row["old_overflowed"] = bool(int(count.max()) > cap)
                    row["old_over_fused"] = row["old_b2b_us"] / row["fused_b2b_us"]
                except Exception as e:
                    row["old_error"] = f"{type(e).__name__}: {e}"
                    traceback.print_exc()
                torch.cuda.empty_cache()
            rows.append(row)
            label = "planted 5%" if plant else f"{survival:.0%}"
            print(
                f"layer B={users} ctx={ctx:>8,} surv={label} ({row.get('survival', float('nan')):.2%}):"
                f" b2b {row.get('fused_b2b_us', float('nan')):7.1f} us"
                f" floor {row.get('floor_us', float('nan')):6.1f} ({row.get('fused_over_floor', float('nan')):.2f}x)"
                f" {row.get('config')}"
                f" stages {json.dumps({k: round(v, 1) for k, v in row.get('stage_b2b_us', {}).items()})}"
                f" topk {json.dumps({k: round(v, 1) for k, v in row.get('topk_variant_b2b_us', {}).items()})}"
                f" layer {json.dumps({k: round(v, 1) for k, v in row.get('layer_variant_b2b_us', {}).items()})}"
                f" old {row.get('old_b2b_us', float('nan')):7.1f} check {row.get('row0_checked')}"
                f" {row.get('error', '')}",
                flush=True,
            )
        del sets
        torch.cuda.empty_cache()
        cp.get_default_memory_pool().free_all_blocks()
    return rows


def dry() -> None:
    for users in (1, 8):
        for ctx in CONTEXTS:
            for survival in SURVIVAL:
                s = shape_for(users, ctx, survival)
                surv = s.rows * s.region * survival
                print(
                    f"B={users} ctx={ctx:>8,} surv={survival:.0%} T={ref.survival_threshold(D, GROUP, survival)} "
                    f"k={s.k} cap={s.cap} items={s.items_for(64)}/{s.items_for(128)} "
                    f"floor {s.floor_bytes(surv, s.rows * s.group * s.k) / 4.28e12 * 1e6:7.1f} us"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--dry", action="store_true", help="shapes and floors only, no GPU")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--filter-sizes", default="1048576,4194304,16777216")
    ap.add_argument("--filter-groups", default="1,2,4,8,16", help="G for today's filter kernels")
    ap.add_argument("--frag-groups", default=",".join(map(str, range(1, 17))), help="G for the frag filter")
    ap.add_argument("--filter-only", action="store_true", help="the filters alone (as --skip layers)")
    ap.add_argument("--mma-rates", action="store_true", help="also time the b1 MMA forms alone")
    ap.add_argument(
        "--select-methods", action="store_true", help="also time ls_select with each filter method"
    )
    ap.add_argument("--skip", default="", help="comma list of sections to skip: filters,layers")
    ap.add_argument("--batches", default="1,8", help="comma list of batch sizes for the layer section")
    ap.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    ap.add_argument("--method", help="the layers' filter method (default: choose_method's)")
    ap.add_argument("--no-planted", action="store_true", help="skip the planted 5 %% survival points")
    ap.add_argument(
        "--no-old",
        action="store_true",
        help="skip today's pipeline (the old_* times, measured in earlier runs)",
    )
    ap.add_argument("--survival", default=",".join(map(str, SURVIVAL)), help="random-sign survival targets")
    ap.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new layer configs after this"
    )
    ap.add_argument(
        "--graph-layers",
        type=int,
        default=0,
        help="also time each point's chosen kernels as N layers in one graph, per layer (a decode step's graph "
        "pays one launch for all its layers)",
    )
    ap.add_argument(
        "--defines",
        default="",
        help="comma list of NAME=VALUE for the kernels' build (a variant swept whole, e.g. LS_SIGN_BULK=1)",
    )
    args = ap.parse_args()
    if args.dry:
        dry()
        return
    t0 = time.time()
    import cupy as cp
    import torch

    _, defines = use_build(args.defines)
    result: dict = {"schema_version": 1, "provenance": provenance()}
    if defines:
        result["defines"] = defines
    result["hbm_copy"] = copy_bandwidth(cp)
    bw = result["hbm_copy"]["bandwidth_bytes_per_s"]
    print(f"copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    out = Path(args.out) if args.out else None

    def save() -> None:
        if out:
            atomic_write_text(out, json.dumps(result, indent=1))

    skip = set(args.skip.split(",")) | ({"layers"} if args.filter_only else set())
    if args.mma_rates:
        result["b1_mma_rates"] = mma_rates(cp)
    if "filters" not in skip:
        try:
            result["filters"] = bench_filters(
                cp,
                bw,
                [int(x) for x in args.filter_sizes.split(",")],
                [int(x) for x in args.filter_groups.split(",")],
                50,
                [int(x) for x in args.frag_groups.split(",")],
            )
        except Exception as e:
            result["filters_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        save()
    if args.select_methods:
        try:
            result["select_methods"] = [
                r
                for ctx in (131072, 1048576)
                for g in (4, 8)
                for r in bench_select_methods(cp, torch, ctx, 1, 0.05, g)
            ]
        except Exception as e:
            result["select_methods_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        save()
    result["graph_overhead_b2b_us"] = graph_overhead(cp)
    if "layers" not in skip:
        contexts = [int(c) for c in args.contexts.split(",")]
        configs = [(int(b), c) for b in args.batches.split(",") for c in contexts]

        def old_for(users: int, ctx: int, survival: float) -> bool:
            return not args.no_old and (survival == 0.05 or (users == 1 and ctx in (32768, 1048576)))

        result["layers"] = bench_layers(
            cp,
            torch,
            bw,
            configs,
            args.reps,
            old_for,
            t0 + args.budget_s,
            not args.no_planted,
            tuple(float(x) for x in args.survival.split(",") if x),
            args.method,
            args.graph_layers,
        )
        save()
    result["wall_s"] = time.time() - t0
    save()
    print(f"done in {result['wall_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
