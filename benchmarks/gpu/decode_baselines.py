"""GPU decode-step baselines and their energy, measured on one GPU (issue 16, items 2 and 3).

Two ways of running one decode step of Llama-3.2-1B and Llama-3-8B geometry (bf16, randomly initialised
weights: timing and power do not depend on the values, and nothing can be downloaded on the device machine):

  hf_generate  Hugging Face transformers ``LlamaForCausalLM.generate()`` (greedy) over a ``DynamicCache``
             pre-filled with random keys and values to the context; each token timed by a stopping criterion's
             host clock (generate syncs once per token): the LongSight paper's kind of GPU baseline. (Part
             ``hf``, a hand-written forward loop, ran slower than generate() on the same machine for a host-side
             reason not established; it is kept to reproduce run 1 and is not the baseline.)
  serving    the same layers written out as a serving engine runs decode: fused QKV and gate/up weights, a
             static KV cache written in place at the new position, RoPE, SDPA over the cache, LM head and argmax,
             the whole step captured in one CUDA graph and replayed.

Plus the pieces the GPU model's presets need: HBM copy bandwidth, the bf16 GEMM ceiling, per-launch costs
(eager dispatch, graph replay, host sync), the linear layers' time against batch, decode attention's time
against context and batch. Energy through NVML: a child process polls the total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ) and samples ``nvmlDeviceGetPowerUsage``; a window's power is
the counter's change between its first and last update inside the window, over the time between them, while
the GPU runs the same work back to back. Idle power is read before CUDA is initialised and again at the end.

Everything goes to one JSON file with provenance, rewritten (temp file + rename) after every point, so a run
cut short keeps what it measured. Run on the device machine:
    python3 benchmarks/gpu/decode_baselines.py --out $OUT/h200-decode.json --parts idle,micro,serving,generate
    python3 benchmarks/gpu/decode_baselines.py --out $OUT/h200-hf-generate.json --parts hf_generate,generate
(cemsim/calibration/h200-*-2026-12-02.json hold the three runs and their commands; runs 1 and 2 polled NVML from
a thread, run 3 from a process: a polling thread competes for the GIL with generate's host-bound Python loop;
run 3's steps are a median 11% shorter than run 2's (16 of 20 points), small beside the 1.6-3x that
generate() moved between machine starts with no poller running at all: run 1 against run 3, 4K, batch 1.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import torch

# Hugging Face config.json numbers (meta-llama/Llama-3.2-1B, meta-llama/Meta-Llama-3-8B); the same numbers as
# cemsim/config/presets/model/llama3-1b.yaml and llama3-8b.yaml.
GEOMETRIES: dict[str, dict] = {
    "llama3-8b": {
        "layers": 32,
        "hidden": 4096,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 128,
        "intermediate": 14336,
        "vocab": 128256,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tied_embeddings": False,
        "source": "meta-llama/Meta-Llama-3-8B config.json",
    },
    "llama3-1b": {
        "layers": 16,
        "hidden": 2048,
        "q_heads": 32,
        "kv_heads": 8,
        "head_dim": 64,
        "intermediate": 8192,
        "vocab": 128256,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tied_embeddings": True,
        "source": "meta-llama/Llama-3.2-1B config.json (llama3 rope scaling omitted: it changes the "
        "inverse frequencies' values, not the work)",
    },
}
CONTEXTS = (1024, 4096, 16384, 32768, 65536, 131072)
BATCHES = (1, 4, 16, 64)
KV_LIMIT_BYTES = 72 * 2**30  # what each step's KV cache may take; weights and activations need the rest
BF = torch.bfloat16
DEV = "cuda"


# --------------------------------------------------------------------------------------------- NVML power
def _poll_nvml(conn) -> None:
    """Child process: between "start" and "stop", record every change of the total-energy counter and a power
    sample every 10 ms; answer "stop" with both lists. A process, not a thread: a polling thread would compete
    for the GIL with the host-bound Python loop of HF eager decode that it measures."""
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    while conn.recv() == "start":
        changes: list[tuple[float, float]] = []
        samples: list[tuple[float, float]] = []
        last, next_sample = None, 0.0
        while not conn.poll():
            now = time.perf_counter()  # CLOCK_MONOTONIC: the same clock as the parent's
            e = pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3
            if e != last:
                changes.append((now, e))
                last = e
            if now >= next_sample:
                samples.append((now, pynvml.nvmlDeviceGetPowerUsage(h) / 1e3))
                next_sample = now + 0.01
            time.sleep(0.0005)
        conn.recv()
        conn.send((changes, samples))


class PowerMonitor:
    """NVML's total-energy counter and power, polled by a child process only inside measurement windows."""

    def __init__(self) -> None:
        import multiprocessing as mp

        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.changes: list[tuple[float, float]] = []  # (time, joules) at each counter update
        self.samples: list[tuple[float, float]] = []  # (time, watts)
        ctx = mp.get_context("fork")  # forked before CUDA is initialised; the child uses NVML only
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_poll_nvml, args=(child,), daemon=True)
        self._proc.start()

    def start(self) -> None:
        self._conn.send("start")
        time.sleep(0.005)

    def stop(self) -> None:
        self._conn.send("stop")
        changes, samples = self._conn.recv()
        self.changes += changes
        self.samples += samples

    def window(self, t0: float, t1: float) -> dict:
        """Mean power over [t0, t1] from the counter's first and last update inside it, and from samples."""
        inside = [c for c in self.changes if t0 <= c[0] <= t1]
        out: dict = {"window_s": t1 - t0, "counter_updates": len(inside)}
        if len(inside) >= 2:
            (ta, ea), (tb, eb) = inside[0], inside[-1]
            out["power_w"] = (eb - ea) / (tb - ta)
            out["counter_span_s"] = tb - ta
        sam = [w for t, w in self.samples if t0 <= t <= t1]
        if sam:
            out["sampled_power_w_mean"] = statistics.fmean(sam)
            out["sampled_power_w_median"] = statistics.median(sam)
        return out

    def update_interval_s(self) -> float | None:
        ts = [t for t, _ in self.changes]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        return statistics.median(gaps) if gaps else None

    def state(self) -> dict:
        nv, h = self.nv, self.h

        def q(fn: Callable, *a: object) -> object:
            try:
                return fn(h, *a)
            except Exception as e:
                return f"unavailable: {e}"

        return {
            "sm_clock_mhz": q(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": q(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
            "temperature_c": q(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
            "pstate": q(nv.nvmlDeviceGetPerformanceState),
            "power_limit_w": (lambda v: v / 1e3 if isinstance(v, int) else v)(
                q(nv.nvmlDeviceGetEnforcedPowerLimit)
            ),
        }

    def close(self) -> None:
        self._conn.send("quit")
        self._proc.join(timeout=5)


def busy_window(mon: PowerMonitor, step: Callable[[], None], seconds: float, in_flight: int = 3) -> dict:
    """Run ``step`` back to back for ``seconds`` (at most ``in_flight`` steps queued on the GPU) and read the
    mean power; per-step wall time from the same loop (throughput, queue kept full)."""
    events: list[torch.cuda.Event] = []
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    mon.start()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        step()
        ev = torch.cuda.Event()
        ev.record()
        events.append(ev)
        if len(events) > in_flight:
            events.pop(0).synchronize()
        n += 1
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    time.sleep(0.05)  # let the poller see the counter update that closes the window
    mon.stop()
    out = mon.window(t0 + 0.1, t1)  # skip the first 100 ms: clocks and power settle
    out["steps"] = n
    out["loop_s_per_step"] = (t1 - t0) / n
    out["state_after"] = mon.state()
    return out


# ------------------------------------------------------------------------------------------------ timing
def event_times_ms(run: Callable[[], None], reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def capture(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    for _ in range(2):
        g.replay()
    torch.cuda.synchronize()
    return g


def stats_ms(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1], "reps": len(times)}


# ----------------------------------------------------------------------------------------- byte/FLOP counts
def linear_params(g: dict) -> dict[str, int]:
    h, qd, kvd, inter = (
        g["hidden"],
        g["q_heads"] * g["head_dim"],
        g["kv_heads"] * g["head_dim"],
        g["intermediate"],
    )
    per_layer = h * (qd + 2 * kvd) + qd * h + 3 * h * inter
    return {"per_layer": per_layer, "layers": per_layer * g["layers"], "lm_head": g["vocab"] * h}


def kv_bytes(g: dict, context: int, batch: int) -> int:
    return 2 * g["layers"] * batch * g["kv_heads"] * context * g["head_dim"] * 2


def step_counts(g: dict, context: int, batch: int) -> dict:
    p = linear_params(g)
    weight_bytes = 2 * (p["layers"] + p["lm_head"])
    attn_flops = 4 * g["layers"] * batch * g["q_heads"] * g["head_dim"] * context
    return {
        "weight_bytes": weight_bytes,
        "kv_bytes": kv_bytes(g, context, batch),
        "linear_flops": 2 * batch * (p["layers"] + p["lm_head"]),
        "attention_flops": attn_flops,
    }


# ------------------------------------------------------------------------------------------- microbenchmarks
def hbm_copy(mon: PowerMonitor, energy_s: float) -> dict:
    n = 4 * 2**30 // 2
    src = torch.randn(n, dtype=BF, device=DEV)
    dst = torch.empty_like(src)
    t = event_times_ms(lambda: dst.copy_(src), 20)
    moved = 2 * n * 2
    out = {"bytes_read_plus_written": moved, **stats_ms(t)}
    out["bandwidth_bytes_per_s"] = moved / (out["median_ms"] / 1e3)
    out["energy"] = busy_window(mon, lambda: dst.copy_(src), energy_s)
    return out  # the 8 GiB are freed on return


def matmul_peak(mon: PowerMonitor, energy_s: float) -> dict:
    n = 8192
    a = torch.randn(n, n, dtype=BF, device=DEV)
    b = torch.randn(n, n, dtype=BF, device=DEV)
    c = torch.empty(n, n, dtype=BF, device=DEV)
    t = event_times_ms(lambda: torch.matmul(a, b, out=c), 20)
    out = {"n": n, **stats_ms(t)}
    out["flops_per_s"] = 2 * n**3 / (out["median_ms"] / 1e3)
    out["energy"] = busy_window(mon, lambda: torch.matmul(a, b, out=c), energy_s)
    return out


def spin_power(mon: PowerMonitor, energy_s: float) -> dict:
    """One thread spinning on the GPU: clocks up, almost nothing computed or moved (the active floor)."""
    cycles = 2_000_000  # ~1 ms at ~2 GHz

    def run() -> None:
        torch.cuda._sleep(cycles)

    t = event_times_ms(run, 5)
    return {"cycles": cycles, **stats_ms(t), "energy": busy_window(mon, run, energy_s)}


def launch_overheads() -> dict:
    x = torch.zeros(16, device=DEV)
    n = 2000
    for _ in range(50):
        x.add_(1.0)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        x.add_(1.0)
    torch.cuda.synchronize()
    eager_us = (time.perf_counter() - t0) / n * 1e6

    def many() -> None:
        for _ in range(n):
            x.add_(1.0)

    g = capture(many)
    graph_us = statistics.median(event_times_ms(g.replay, 10)) * 1e3 / n
    syncs = []
    for _ in range(200):
        t0 = time.perf_counter()
        torch.cuda.synchronize()
        syncs.append(time.perf_counter() - t0)
    # one tiny kernel launched and waited for: the round trip a per-step host sync costs
    rt = []
    for _ in range(200):
        t0 = time.perf_counter()
        x.add_(1.0)
        torch.cuda.synchronize()
        rt.append(time.perf_counter() - t0)
    return {
        "eager_launch_us": eager_us,
        "graph_kernel_us": graph_us,
        "empty_sync_us": statistics.median(syncs) * 1e6,
        "launch_and_sync_us": statistics.median(rt) * 1e6,
        "kernels": n,
        "what": "x.add_(1) on 16 floats: eager dispatch per launch (host-bound), per kernel inside one CUDA "
        "graph, an empty synchronize, and one launch + synchronize",
    }


def attention_sweep(head_dim: int, deadline: float) -> list[dict]:
    """SDPA decode attention of one layer (32 query heads, 8 KV heads, one query token per user), captured in a
    graph over several layers' worth of distinct KV (at least 512 MB in all) so L2 does not serve it."""
    rows = []
    f = torch.nn.functional.scaled_dot_product_attention
    for batch in BATCHES:
        for ctx in CONTEXTS:
            per_layer = 2 * batch * 8 * ctx * head_dim * 2
            if per_layer > 8 * 2**30 or time.perf_counter() > deadline:
                continue
            copies = max(1, min(32, math.ceil(512 * 2**20 / per_layer)))
            q = torch.randn(batch, 32, 1, head_dim, dtype=BF, device=DEV)
            kv = [
                (
                    torch.randn(batch, 8, ctx, head_dim, dtype=BF, device=DEV),
                    torch.randn(batch, 8, ctx, head_dim, dtype=BF, device=DEV),
                )
                for _ in range(copies)
            ]

            def run(kv: list = kv, q: torch.Tensor = q) -> None:
                for k, v in kv:
                    f(q, k, v, enable_gqa=True)

            g = capture(run)
            graph = stats_ms(event_times_ms(g.replay, 20))
            k0, v0 = kv[0]
            eager = stats_ms(event_times_ms(lambda k0=k0, v0=v0, q=q: f(q, k0, v0, enable_gqa=True), 20))
            ms = graph["median_ms"] / copies
            rows.append(
                {
                    "head_dim": head_dim,
                    "context": ctx,
                    "batch": batch,
                    "copies_in_graph": copies,
                    "median_ms_per_layer_graph": ms,
                    "median_ms_eager_single": eager["median_ms"],
                    "kv_bytes_per_layer": per_layer,
                    "achieved_bytes_per_s": per_layer / (ms / 1e3),
                }
            )
            print(
                "attn",
                {k: rows[-1][k] for k in ("head_dim", "context", "batch", "median_ms_per_layer_graph")},
                flush=True,
            )
            del kv, g
            torch.cuda.empty_cache()
    return rows


# -------------------------------------------------------------------------------------------- serving step
class ServingModel:
    """Llama decode layers as a serving engine runs them: fused QKV and gate/up, static KV cache, RoPE."""

    def __init__(self, g: dict) -> None:
        self.g = g
        h, qd, kvd, inter = (
            g["hidden"],
            g["q_heads"] * g["head_dim"],
            g["kv_heads"] * g["head_dim"],
            g["intermediate"],
        )
        std = 0.02
        self.layers = [
            {
                "ln1": torch.ones(h, dtype=BF, device=DEV),
                "wqkv": torch.randn(qd + 2 * kvd, h, dtype=BF, device=DEV) * std,
                "wo": torch.randn(h, qd, dtype=BF, device=DEV) * std,
                "ln2": torch.ones(h, dtype=BF, device=DEV),
                "wgu": torch.randn(2 * inter, h, dtype=BF, device=DEV) * std,
                "wd": torch.randn(h, inter, dtype=BF, device=DEV) * std,
            }
            for _ in range(g["layers"])
        ]
        self.embed = torch.randn(g["vocab"], h, dtype=BF, device=DEV) * std
        self.head = (
            self.embed if g["tied_embeddings"] else torch.randn(g["vocab"], h, dtype=BF, device=DEV) * std
        )
        self.norm = torch.ones(h, dtype=BF, device=DEV)
        d = g["head_dim"]
        self.inv_freq = 1.0 / (
            g["rope_theta"] ** (torch.arange(0, d, 2, device=DEV, dtype=torch.float32) / d)
        )

    def linear_stack(self, batch: int) -> Callable[[], None]:
        """The non-attention matrix work of all layers plus the LM head, for the linear-vs-batch sweep."""
        g = self.g
        x = torch.randn(batch, g["hidden"], dtype=BF, device=DEV)
        qd, inter = g["q_heads"] * g["head_dim"], g["intermediate"]

        def run() -> None:
            for w in self.layers:
                y = x @ w["wqkv"].T
                y = y[:, :qd] @ w["wo"].T
                gu = y @ w["wgu"].T
                (torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]) @ w["wd"].T
            x @ self.head.T

        return run

    def step_fn(self, context: int, batch: int) -> tuple[Callable[[], torch.Tensor], list]:
        """One decode step at position ``context`` (the cache holds ``context`` tokens plus the new one)."""
        g = self.g
        hq, hk, d, h, inter = g["q_heads"], g["kv_heads"], g["head_dim"], g["hidden"], g["intermediate"]
        qd, kvd, eps = hq * d, hk * d, g["rms_norm_eps"]
        total = context + 1
        caches = [
            (
                torch.randn(batch, hk, total, d, dtype=BF, device=DEV),
                torch.randn(batch, hk, total, d, dtype=BF, device=DEV),
            )
            for _ in range(g["layers"])
        ]
        ids = torch.randint(0, g["vocab"], (batch,), device=DEV)
        pos = torch.full((1,), context, dtype=torch.long, device=DEV)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        rms = torch.nn.functional.rms_norm

        def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
            x1, x2 = x[..., : d // 2], x[..., d // 2 :]
            return x * cos + torch.cat((-x2, x1), dim=-1) * sin

        def step() -> torch.Tensor:
            freqs = pos.float()[:, None] * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos().to(BF), emb.sin().to(BF)
            x = self.embed[ids]
            for w, (kc, vc) in zip(self.layers, caches, strict=True):
                qkv = rms(x, (h,), w["ln1"], eps) @ w["wqkv"].T
                q = rope(qkv[:, :qd].view(batch, hq, d), cos, sin)
                k = rope(qkv[:, qd : qd + kvd].view(batch, hk, d), cos, sin)
                v = qkv[:, qd + kvd :].view(batch, hk, d)
                kc.index_copy_(2, pos, k.unsqueeze(2))
                vc.index_copy_(2, pos, v.unsqueeze(2))
                a = sdpa(q.unsqueeze(2), kc, vc, enable_gqa=True).reshape(batch, qd)
                x = x + a @ w["wo"].T
                gu = rms(x, (h,), w["ln2"], eps) @ w["wgu"].T
                x = x + (torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]) @ w["wd"].T
            logits = rms(x, (h,), self.norm, eps) @ self.head.T
            return logits.argmax(-1)

        return step, caches


def serving_sweep(
    model: ServingModel, name: str, mon: PowerMonitor, energy_s: float, deadline: float
) -> list[dict]:
    rows = []
    g = model.g
    for batch in BATCHES:
        for ctx in CONTEXTS:
            if kv_bytes(g, ctx, batch) > KV_LIMIT_BYTES or time.perf_counter() > deadline:
                continue
            step, caches = model.step_fn(ctx, batch)
            graph = capture(step)
            t = stats_ms(event_times_ms(graph.replay, 30))
            energy = busy_window(mon, graph.replay, energy_s)
            row = {
                "model": name,
                "context": ctx,
                "batch": batch,
                **t,
                **step_counts(g, ctx, batch),
                "energy": energy,
            }
            if "power_w" in energy:
                row["energy_per_step_j"] = energy["power_w"] * energy["loop_s_per_step"]
                row["energy_per_token_j"] = row["energy_per_step_j"] / batch
            rows.append(row)
            print(
                f"serving {name} ctx={ctx} b={batch} {t['median_ms']:.3f} ms "
                f"P={energy.get('power_w', float('nan')):.0f} W",
                flush=True,
            )
            del graph, caches, step
            torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------- HF eager step
def hf_model(g: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=g["vocab"],
        hidden_size=g["hidden"],
        intermediate_size=g["intermediate"],
        num_hidden_layers=g["layers"],
        num_attention_heads=g["q_heads"],
        num_key_value_heads=g["kv_heads"],
        head_dim=g["head_dim"],
        rms_norm_eps=g["rms_norm_eps"],
        rope_theta=g["rope_theta"],
        max_position_embeddings=131072 + 4096,
        tie_word_embeddings=g["tied_embeddings"],
    )
    prev = torch.get_default_dtype()
    torch.set_default_dtype(BF)
    try:
        with torch.device(DEV):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


@torch.inference_mode()
def filled_cache(g: dict, context: int, batch: int):
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer in range(g["layers"]):
        k = torch.randn(batch, g["kv_heads"], context, g["head_dim"], dtype=BF, device=DEV)
        cache.update(k, torch.randn_like(k), layer)
    return cache


def hf_sweep(model, name: str, g: dict, mon: PowerMonitor, energy_s: float, deadline: float) -> list[dict]:
    rows = []
    for batch in BATCHES:
        for ctx in CONTEXTS:
            if kv_bytes(g, ctx, batch) > KV_LIMIT_BYTES or time.perf_counter() > deadline:
                continue
            cache = filled_cache(g, ctx, batch)
            state = {"ids": torch.randint(0, g["vocab"], (batch, 1), device=DEV), "pos": ctx}

            @torch.inference_mode()
            def step(cache=cache, state=state, batch=batch) -> None:
                pos = torch.full((batch, 1), state["pos"], dtype=torch.long, device=DEV)
                out = model(
                    input_ids=state["ids"],
                    past_key_values=cache,
                    position_ids=pos,
                    use_cache=True,
                    logits_to_keep=1,
                )
                nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
                bool((nxt < 0).all().item())  # generate's stopping check: one host sync per step
                state["ids"], state["pos"] = nxt, state["pos"] + 1

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
            t = stats_ms(times)
            energy = busy_window(mon, step, energy_s, in_flight=1)
            row = {
                "model": name,
                "context": ctx,
                "batch": batch,
                **t,
                **step_counts(g, ctx, batch),
                "context_after": state["pos"],
                "energy": energy,
            }
            if "power_w" in energy:
                row["energy_per_step_j"] = energy["power_w"] * energy["loop_s_per_step"]
                row["energy_per_token_j"] = row["energy_per_step_j"] / batch
            rows.append(row)
            print(
                f"hf_eager {name} ctx={ctx} b={batch} {t['median_ms']:.3f} ms "
                f"P={energy.get('power_w', float('nan')):.0f} W",
                flush=True,
            )
            del cache, step, state
            torch.cuda.empty_cache()
    return rows


def hf_generate_check(model, name: str, g: dict, context: int = 4096, new: int = 24) -> dict:
    """``model.generate`` itself over a pre-filled cache, to check the hand-written step loop against it."""
    cache = filled_cache(g, context, 1)
    ids = torch.randint(0, g["vocab"], (1, context + 1), device=DEV)
    kw = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "past_key_values": cache}
    with torch.inference_mode():
        model.generate(
            ids,
            **{
                **kw,
                "max_new_tokens": 2,
                "min_new_tokens": 2,
                "past_key_values": filled_cache(g, context, 1),
            },
        )
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return {
        "model": name,
        "context": context,
        "batch": 1,
        "new_tokens": int(out.shape[1] - ids.shape[1]),
        "ms_per_token": wall * 1e3 / max(1, int(out.shape[1] - ids.shape[1])),
        "what": "wall time of one generate() call over a pre-filled DynamicCache (first token included) / tokens",
    }


class _StepClock:
    """A stopping criterion that never stops and stamps the host clock once per generated token."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.t.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _generate(model, ids: torch.Tensor, cache, new: int, clock: _StepClock) -> torch.Tensor:
    from transformers import StoppingCriteriaList

    with torch.inference_mode():
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            past_key_values=cache,
            max_new_tokens=new,
            do_sample=False,
            stopping_criteria=StoppingCriteriaList([clock]),
        )


def hf_generate_sweep(
    model, name: str, g: dict, mon: PowerMonitor, energy_s: float, deadline: float
) -> list[dict]:
    """The paper's baseline as users run it: ``model.generate`` (greedy) over a DynamicCache pre-filled to the
    context; each token's time from a stopping criterion's clock stamps (generate syncs the host every token),
    power over the same call."""
    model.generation_config.eos_token_id = None  # random weights: never stop early
    model.generation_config.pad_token_id = 0
    rows = []
    for batch in BATCHES:
        for ctx in CONTEXTS:
            if kv_bytes(g, ctx, batch) > KV_LIMIT_BYTES or time.perf_counter() > deadline:
                continue
            cache = filled_cache(g, ctx, batch)
            ids = torch.randint(0, g["vocab"], (batch, ctx + 1), device=DEV)
            warm = _StepClock()
            ids = _generate(model, ids, cache, 4, warm)
            est = statistics.median(b - a for a, b in itertools.pairwise(warm.t))
            new = int(min(400, max(16, math.ceil((energy_s + 0.3) / est))))
            clock = _StepClock()
            torch.cuda.synchronize()
            mon.start()
            ids = _generate(model, ids, cache, new, clock)
            time.sleep(0.05)
            mon.stop()
            gaps = [(b - a) * 1e3 for a, b in itertools.pairwise(clock.t[1:])]
            t = stats_ms(gaps)
            energy = mon.window(clock.t[1] + 0.1, clock.t[-1])
            energy["steps"] = len(gaps)
            energy["loop_s_per_step"] = (clock.t[-1] - clock.t[1]) / len(gaps)
            energy["state_after"] = mon.state()
            row = {
                "model": name,
                "context": ctx,
                "batch": batch,
                **t,
                **step_counts(g, ctx, batch),
                "context_after": int(cache.get_seq_length()),
                "energy": energy,
            }
            if "power_w" in energy:
                row["energy_per_step_j"] = energy["power_w"] * energy["loop_s_per_step"]
                row["energy_per_token_j"] = row["energy_per_step_j"] / batch
            rows.append(row)
            print(
                f"hf_generate {name} ctx={ctx} b={batch} {t['median_ms']:.3f} ms "
                f"P={energy.get('power_w', float('nan')):.0f} W",
                flush=True,
            )
            del cache, ids
            torch.cuda.empty_cache()
    return rows


def hf_profile(model, g: dict) -> dict:
    """Where the host time of one step goes: the hand-written forward loop against generate (cProfile)."""
    import cProfile
    import io
    import pstats

    out = {}
    cache = filled_cache(g, 4096, 1)
    ids = torch.randint(0, g["vocab"], (1, 1), device=DEV)
    with torch.inference_mode():
        for _ in range(2):
            model(
                input_ids=ids,
                past_key_values=cache,
                position_ids=torch.full((1, 1), 4096, device=DEV),
                use_cache=True,
                logits_to_keep=1,
            ).logits.argmax(-1).item()
        pr = cProfile.Profile()
        pr.enable()
        for i in range(5):
            model(
                input_ids=ids,
                past_key_values=cache,
                position_ids=torch.full((1, 1), 4100 + i, device=DEV),
                use_cache=True,
                logits_to_keep=1,
            ).logits.argmax(-1).item()
        pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(25)
    out["manual_forward_5_steps"] = buf.getvalue()[-6000:]
    cache = filled_cache(g, 4096, 1)
    full = torch.randint(0, g["vocab"], (1, 4097), device=DEV)
    full = _generate(model, full, cache, 2, _StepClock())
    pr = cProfile.Profile()
    pr.enable()
    _generate(model, full, cache, 5, _StepClock())
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(25)
    out["generate_5_tokens"] = buf.getvalue()[-6000:]
    return out


# ---------------------------------------------------------------------------------------------------- main
def provenance(mon: PowerMonitor | None) -> dict:
    import importlib.metadata as md

    def ver(p: str) -> str | None:
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    out = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": ver("transformers"),
        "nvidia-ml-py": ver("nvidia-ml-py"),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "sm_count": torch.cuda.get_device_properties(0).multi_processor_count,
        "memory_bytes": torch.cuda.get_device_properties(0).total_memory,
        "method": "CUDA events (graph replays, microbenchmarks) or host clock around a synced step (HF eager); "
        "medians after warm-up; random bf16 weights and KV; NVML total-energy counter for power",
    }
    if mon is not None:
        nv = mon.nv
        for key, fn in (
            ("driver", nv.nvmlSystemGetDriverVersion),
            ("nvml_gpu_name", lambda: nv.nvmlDeviceGetName(mon.h)),
        ):
            try:
                out[key] = fn()
            except Exception as e:
                out[key] = f"unavailable: {e}"
    return out


def write(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new points after this long")
    ap.add_argument("--energy-s", type=float, default=1.0, help="busy window per point for the power reading")
    ap.add_argument("--models", default="llama3-8b,llama3-1b")
    ap.add_argument("--parts", default="idle,micro,serving,hf_generate,generate")
    ap.add_argument("--contexts", default="1024,4096,16384,32768,65536,131072")
    ap.add_argument("--batches", default="1,4,16,64")
    args = ap.parse_args()
    global CONTEXTS, BATCHES
    CONTEXTS = tuple(int(c) for c in args.contexts.split(","))
    BATCHES = tuple(int(b) for b in args.batches.split(","))
    start = time.perf_counter()
    deadline = start + args.budget_s
    parts = set(args.parts.split(","))
    models = args.models.split(",")
    torch.manual_seed(0)
    result: dict = {"schema_version": 1, "dtype": "bf16", "geometries": {m: GEOMETRIES[m] for m in models}}
    result["errors"] = []
    mon = PowerMonitor()

    def guarded(key: str, fn: Callable[[], object]) -> None:
        try:
            result[key] = fn()
        except Exception as e:
            result["errors"].append({"part": key, "error": repr(e), "trace": traceback.format_exc()[-3000:]})
            print("FAILED", key, repr(e), flush=True)
        write(args.out, result)

    if "idle" in parts:  # before CUDA is initialised in this process
        mon.start()
        time.sleep(4.0)
        mon.stop()
        t1 = time.perf_counter()
        result["idle_before_cuda"] = {**mon.window(t1 - 3.5, t1), "state": mon.state()}
        print("idle", result["idle_before_cuda"], flush=True)
    torch.cuda.init()
    result["provenance"] = provenance(mon)
    write(args.out, result)
    if "micro" in parts:
        guarded("launch_overheads", launch_overheads)
        guarded("spin_power", lambda: spin_power(mon, args.energy_s))
        guarded("hbm_copy", lambda: hbm_copy(mon, args.energy_s))
        guarded("matmul_peak", lambda: matmul_peak(mon, args.energy_s))
        print({k: result.get(k) for k in ("launch_overheads",)}, flush=True)
        attn: list = []
        result["attention"] = attn
        for m in models:
            try:
                attn.extend(attention_sweep(GEOMETRIES[m]["head_dim"], deadline))
            except Exception as e:
                result["errors"].append(
                    {"part": f"attention {m}", "error": repr(e), "trace": traceback.format_exc()[-3000:]}
                )
            write(args.out, result)
    result.setdefault("linear_vs_batch", [])
    result.setdefault("serving_step", [])
    result.setdefault("hf_eager_step", [])
    result.setdefault("hf_generate", [])
    result.setdefault("hf_generate_step", [])
    for m in models:
        g = GEOMETRIES[m]
        if "serving" in parts or "micro" in parts:
            try:
                sm = ServingModel(g)
                if "micro" in parts:
                    for batch in (1, 4, 16, 64, 256, 1024):
                        run = sm.linear_stack(batch)
                        graph = capture(run)
                        t = stats_ms(event_times_ms(graph.replay, 15))
                        p = linear_params(g)
                        nbytes = 2 * (p["layers"] + p["lm_head"])
                        row = {
                            "model": m,
                            "batch": batch,
                            **t,
                            "weight_bytes": nbytes,
                            "flops": 2 * batch * nbytes // 2,
                        }
                        row["achieved_bytes_per_s"] = nbytes / (t["median_ms"] / 1e3)
                        row["achieved_flops_per_s"] = row["flops"] / (t["median_ms"] / 1e3)
                        if batch == 1:
                            row["energy"] = busy_window(mon, graph.replay, args.energy_s)
                        result["linear_vs_batch"].append(row)
                        print("linear", m, batch, round(t["median_ms"], 3), flush=True)
                        del graph
                    del run
                    write(args.out, result)
                if "serving" in parts:
                    result["serving_step"].extend(serving_sweep(sm, m, mon, args.energy_s, deadline))
                del sm
            except Exception as e:
                result["errors"].append(
                    {"part": f"serving {m}", "error": repr(e), "trace": traceback.format_exc()[-3000:]}
                )
            torch.cuda.empty_cache()
            write(args.out, result)
        if parts & {"hf", "generate", "hf_generate", "hf_profile"}:
            try:
                model = hf_model(g)
                result["provenance"]["attn_implementation"] = model.config._attn_implementation
                if "hf" in parts:
                    result["hf_eager_step"].extend(hf_sweep(model, m, g, mon, args.energy_s, deadline))
                if "hf_profile" in parts:
                    result.setdefault("hf_profile", {})[m] = hf_profile(model, g)
                    print(result["hf_profile"][m]["manual_forward_5_steps"][:3000], flush=True)
                if "hf_generate" in parts:
                    result["hf_generate_step"].extend(
                        hf_generate_sweep(model, m, g, mon, args.energy_s, deadline)
                    )
                if "generate" in parts and time.perf_counter() < deadline + 30:
                    result["hf_generate"].append(hf_generate_check(model, m, g))
                    print("generate", result["hf_generate"][-1], flush=True)
                del model
            except Exception as e:
                result["errors"].append(
                    {"part": f"hf {m}", "error": repr(e), "trace": traceback.format_exc()[-3000:]}
                )
            torch.cuda.empty_cache()
            write(args.out, result)
    if "idle" in parts:
        torch.cuda.synchronize()
        mon.start()
        time.sleep(5.0)
        mon.stop()
        t1 = time.perf_counter()
        result["idle_end"] = {
            **mon.window(t1 - 3.0, t1),
            "state": mon.state(),
            "note": "CUDA context open, no work",
        }
    result["nvml_counter_update_interval_s"] = mon.update_interval_s()
    result["elapsed_s"] = time.perf_counter() - start
    mon.close()
    write(args.out, result)
    print("errors:", [e["part"] + ": " + e["error"] for e in result["errors"]])
    print("wrote", args.out, "in", round(result["elapsed_s"]), "s")


if __name__ == "__main__":
    main()
