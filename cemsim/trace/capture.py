"""Capture key-access traces from a model run: dense prefill of a long text, then decode steps per policy.

Decode is teacher-forced on the text's own continuation (the tokens right after the prompt), so every
policy of one capture decodes exactly the same tokens over exactly the same KV cache: the simulator then
compares algorithms on the same text. The prefill runs once; after each policy the cache is cropped back
to the prompt. Per decode step, layer and KV head the attention code's observer reports the sparse region,
the SCF survivors (or the selected keys) and each query head's top-k; this module folds them into
StepRecords (survivors per position block, values fetched = the group's union of top-k positions) and
streams them to one trace per policy.

Thresholds: ``--thresholds FILE`` (from ``cemsim tune``: JSON ``[[T, ...], ...]`` per layer and KV head, or
``{"thresholds": ...}``, or a .npy, or a LongSight trace (.parquet) whose header's thresholds are reused). Without a file, each (layer, KV head) threshold is calibrated so that
about 1 in ``target_ratio`` sparse keys survive on the ITQ training window (the last 1024 prompt tokens);
that is a filter-ratio calibration, not the perplexity-budget tuning of the paper, and the header says so.

Long contexts (docs/projection.md, "Capture at scale"): ``device="cuda"`` runs the model in bf16 with the KV
cache in GPU memory; the prompt is prefilled in chunks of ``prefill_chunk`` tokens through the DynamicCache
(bottom-right causal SDPA, no mask; see :mod:`cemsim.attention.hf_attention`). Prompts beyond the model's
trained positions need ``allow_extrapolation`` (recorded in the header): RoPE is computed for any position,
but the model was never trained there, so statistics beyond ``max_position_embeddings`` come from an
extrapolating model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cemsim import __version__
from cemsim.errors import CemsimError
from cemsim.trace.format import TraceWriter
from cemsim.trace.records import SCHEMA_VERSION, StepRecord, TraceHeader

ALL_POLICIES = ("longsight", "dense", "window", "oracle-topk", "quest")
QUEST_PAGE = 16
CALIBRATION_TOKENS = 1024


@dataclass
class CaptureSpec:
    model: str = "smollm2-135m"
    tokens: int = 4096
    decode_steps: int = 32
    policies: tuple[str, ...] = ("longsight",)
    thresholds_file: Path | None = None
    target_ratio: float = 20.0
    itq: bool = True
    k: int | None = None  # None: the published schedule for the context
    window: int = 1024
    sinks: int = 16
    block_size: int = 128
    topk_per: str = "head"
    text: Path | str | None = (
        None  # a file, or a named text: pydoc-topics (default), pydoc-topics-3.11.7, stdlib-docs, stdlib-source
    )
    device: str = "cpu"
    dtype: str | None = None  # None: fp32 on CPU, bf16 on CUDA
    prefill_chunk: int | None = None  # None: one shot on CPU, DEFAULT_CUDA_CHUNK on CUDA
    allow_extrapolation: bool = False  # prompt + decode beyond the model's trained positions
    repeat_text: bool = False  # cycle a text shorter than tokens + decode_steps
    itq_file: Path | None = None  # ITQ rotations to use (default: the model's cached file, trained if absent)
    # Also a LongSight trace without ITQ, with these thresholds, over the same prefill (``<stem>.no-itq``):
    # one prefill serves both, which at 32K tokens on a CPU is most of the capture's time.
    no_itq_thresholds_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


DEFAULT_CUDA_CHUNK = 8192


def prefill_chunk_for(spec: CaptureSpec) -> int:
    """Prefill chunk length: the spec's, else one shot on CPU and DEFAULT_CUDA_CHUNK on CUDA."""
    if spec.prefill_chunk is not None:
        if spec.prefill_chunk < 1:
            raise CemsimError(
                f"--prefill-chunk must be >= 1, got {spec.prefill_chunk}", where="--prefill-chunk"
            )
        return spec.prefill_chunk
    return DEFAULT_CUDA_CHUNK if spec.device.startswith("cuda") else max(spec.tokens, 1)


def device_info(device: str) -> dict[str, Any]:
    """What ran: device kind and name, torch / transformers / CuPy versions (for the header)."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        try:
            import cupy

            info["cupy"] = cupy.__version__
        except Exception as exc:  # CuPy absent or broken: recorded, not fatal
            info["cupy"] = f"unavailable ({type(exc).__name__})"
    else:
        import platform

        info["device_name"] = platform.processor() or platform.machine()
    return info


def parse_policies(text: str) -> tuple[str, ...]:
    names = ALL_POLICIES if text.strip() == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in ALL_POLICIES]
    if bad or not names:
        raise CemsimError(
            f"unknown policy {bad or text!r}; valid: {', '.join(ALL_POLICIES)} or 'all'", where="--policy"
        )
    return tuple(dict.fromkeys(names))


def output_paths(out: Path, policies: tuple[str, ...]) -> dict[str, Path]:
    """One policy: ``out`` itself. Several: ``out`` for the first, ``<stem>.<policy><suffix>`` for the rest."""
    paths = {policies[0]: out}
    for p in policies[1:]:
        paths[p] = out.with_name(f"{out.stem}.{p}{out.suffix or '.parquet'}")
    return paths


def load_thresholds(path: Path, layers: int, kv_heads: int, head_dim: int) -> np.ndarray:
    where = str(path)
    try:
        if path.suffix == ".parquet":
            from cemsim.trace.format import TraceReader

            with TraceReader(path) as r:
                if r.header.thresholds is None:
                    raise ValueError("that trace's header holds no thresholds (not a LongSight trace)")
                arr = np.asarray(r.header.thresholds)
        elif path.suffix == ".npy":
            arr = np.load(path)
        else:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(path.read_text())
            else:
                data = json.loads(path.read_text())
            if isinstance(data, dict):
                if "thresholds" not in data:
                    raise ValueError("a JSON object needs a 'thresholds' key")
                data = data["thresholds"]
            arr = np.asarray(data)
    except FileNotFoundError:
        raise CemsimError("no such thresholds file", where=where) from None
    except CemsimError:
        raise
    except Exception as exc:  # JSON, YAML and NumPy each raise their own kinds
        raise CemsimError(f"cannot read thresholds: {exc}", where=where) from None
    if arr.shape != (layers, kv_heads) or not np.issubdtype(arr.dtype, np.integer):
        raise CemsimError(
            f"thresholds must be integers shaped [layers={layers}][kv_heads={kv_heads}], got shape {arr.shape} "
            f"of {arr.dtype}",
            where=where,
        )
    if arr.min() < 0 or arr.max() > head_dim + 1:
        raise CemsimError(f"thresholds must lie in 0..{head_dim + 1} (matches out of head_dim)", where=where)
    return arr.astype(np.int64)


def calibrate_thresholds(
    keys: np.ndarray,
    queries: np.ndarray,
    rotations: np.ndarray | None,
    target_ratio: float,
    min_distance: int = 512,
) -> np.ndarray:
    """Per (layer, KV head): the smallest T with P(max over the group of matches >= T) <= 1 / target_ratio,
    over causal (query, key) pairs at least ``min_distance`` apart. keys [L, Hkv, n, D], queries [L, Hq, n, D]."""
    L, hkv, n, d = keys.shape
    g = queries.shape[1] // hkv
    nq = min(n, 256)  # the last queries only: they see the most keys, and 4x less work than all of them
    queries = queries[:, :, n - nq :]
    qi = np.arange(n - nq, n)[:, None]
    kj = np.arange(n)[None, :]
    far = kj <= qi - min_distance
    out = np.zeros((L, hkv), dtype=np.int64)
    for layer in range(L):
        for h in range(hkv):
            r = np.eye(d, dtype=np.float32) if rotations is None else rotations[layer, h]
            ks = (keys[layer, h] @ r >= 0).astype(np.float32)
            best = np.zeros((nq, n), dtype=np.float32)
            for q in range(g):
                qs = (queries[layer, h * g + q] @ r >= 0).astype(np.float32)
                m = qs @ ks.T + (1 - qs) @ (1 - ks).T
                np.maximum(best, m, out=best)
            vals = best[far].astype(np.int64)
            counts = np.bincount(vals, minlength=d + 2)
            tail = np.cumsum(counts[::-1])[::-1] / max(vals.size, 1)  # tail[T] = P(matches >= T)
            ok = np.nonzero(tail <= 1.0 / target_ratio)[0]
            out[layer, h] = int(ok[0]) if ok.size else d + 1
    return out


class StepAssembler:
    """Folds one decode step's DecodeRecords (from the attention observer) into a StepRecord."""

    def __init__(self, header: TraceHeader, policy: str, dtype_bytes: int) -> None:
        self.h = header
        self.policy = policy
        self.dtype_bytes = dtype_bytes
        self.records: list[Any] = []

    def __call__(self, rec: Any) -> None:
        self.records.append(rec)

    def build(self, step: int, context_len: int) -> StepRecord:
        h = self.h
        L, H, G, bs = h.layers, h.kv_heads, h.group_size, h.block_size
        nb = -(-context_len // bs)
        dense = self.policy == "dense"
        window = context_len if dense else min(h.window, context_len)
        sinks = 0 if dense else min(h.sinks, context_len - window)
        kc = np.zeros((L, H), np.int64)
        surv = np.zeros((L, H), np.int64)
        blocks = np.zeros((L, H, nb), np.uint16)
        fetched = np.zeros((L, H), np.int64)
        topk = np.full((L, H, G, h.k), -1, np.int32) if self.policy not in ("dense", "window") else None
        for r in self.records:
            if r.context != context_len:
                raise CemsimError(
                    f"observer reported context {r.context} at step {step}, expected {context_len}"
                )
            union = np.unique(np.concatenate(r.topk)) if r.topk else np.zeros(0, np.int64)
            # LongSight: the filter's survivors; other policies: what the selection actually chose.
            chosen = np.asarray(r.survivors) if self.policy == "longsight" else union
            kc[r.layer, r.kv_head] = r.considered
            surv[r.layer, r.kv_head] = chosen.size
            blocks[r.layer, r.kv_head] = np.bincount(chosen // bs, minlength=nb)[:nb]
            fetched[r.layer, r.kv_head] = union.size
            window, sinks = r.window, r.sinks
            if topk is not None:
                for q, pos in enumerate(r.topk):
                    topk[r.layer, r.kv_head, q, : min(pos.size, h.k)] = np.sort(pos)[: h.k]
        self.records = []
        meta = None
        if self.policy == "quest":
            # Page bounds (min and max vectors) of every page of the sparse region.
            meta = -(-kc // QUEST_PAGE) * 2 * h.head_dim * self.dtype_bytes
        return StepRecord(
            step=step,
            context_len=context_len,
            keys_considered=kc,
            survivors=surv,
            survivor_blocks=blocks,
            values_fetched=fetched,
            window=window,
            sinks=sinks,
            metadata_bytes=meta,
            topk_positions=topk,
        )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def capture(
    spec: CaptureSpec,
    out: Path,
    progress: Callable[[str, int, int], None] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Run the capture and write one trace per policy; returns {policy: path}. ``timings``, when given, is
    filled with seconds per phase (load, text, itq_thresholds, prefill, decode_<policy>), the GPU synchronised
    at each boundary."""
    import torch

    from cemsim import kernels
    from cemsim.attention.model_loader import load_model
    from cemsim.attention.policies import PolicyConfig, published_k
    from cemsim.attention.runner import capture_qk, load_or_train_itq, new_state
    from cemsim.attention.text import load_text, long_token_ids

    times = timings if timings is not None else {}

    def tick(what: str, done: int, total: int) -> None:
        if progress:
            progress(what, done, total)

    def phase(name: str, t0: float) -> float:
        _sync(spec.device)
        t1 = time.perf_counter()
        times[name] = round(t1 - t0, 3)
        return t1

    if spec.tokens < 2 or spec.decode_steps < 1:
        raise CemsimError(
            f"need --tokens >= 2 and --decode-steps >= 1 (got {spec.tokens}, {spec.decode_steps})"
        )
    if spec.device not in ("cpu", "cuda") and not spec.device.startswith("cuda:"):
        raise CemsimError(f"--device must be cpu or cuda, got {spec.device!r}", where="--device")
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise CemsimError("--device cuda asked for, but torch sees no CUDA GPU", where="--device")
    chunk = prefill_chunk_for(spec)
    paths = output_paths(out, spec.policies)
    tick("loading model", 0, 1)
    t = time.perf_counter()
    lm = load_model(spec.model, dtype=spec.dtype, device=spec.device)
    t = phase("load", t)
    total = spec.tokens + spec.decode_steps
    extrapolating = total > lm.max_positions
    if extrapolating and not spec.allow_extrapolation:
        raise CemsimError(
            f"{spec.tokens} prompt + {spec.decode_steps} decode tokens exceed the model's {lm.max_positions} "
            "positions; project to longer contexts with `cemsim trace project`, or pass --allow-extrapolation "
            "to run the model past its trained positions (statistics then come from an extrapolating model)",
            where="--tokens",
        )
    tick("text", 0, 1)
    text = load_text(spec.text)
    ids, text_tokens = long_token_ids(lm.tokenizer, text, total, repeat=spec.repeat_text, bos=lm.bos_id)
    prompt, continuation = ids[: spec.tokens], ids[spec.tokens :]
    t = phase("text", t)
    k = spec.k or published_k(spec.tokens)
    rotations = thresholds = None
    itq_file = threshold_source = None
    if "longsight" in spec.policies:
        tick("ITQ and thresholds", 0, 1)
        if spec.itq:
            rot, itq_path, _ = load_or_train_itq(lm, text, tokens=CALIBRATION_TOKENS, path=spec.itq_file)
            rotations, itq_file = rot.rotations, str(itq_path)
        if spec.thresholds_file is not None:
            thresholds = load_thresholds(spec.thresholds_file, lm.num_layers, lm.num_kv_heads, lm.head_dim)
            threshold_source = f"file {spec.thresholds_file}"
        else:
            calib = prompt[-CALIBRATION_TOKENS:]
            if lm.bos_id is not None:  # a model that needs its BOS first gets it here too
                calib = [lm.bos_id, *prompt[-(CALIBRATION_TOKENS - 1) :]]
            keys, queries = capture_qk(lm, calib)
            thresholds = calibrate_thresholds(keys, queries, rotations, spec.target_ratio)
            thresholds[[i for i in range(lm.num_layers) if i not in lm.full_layers]] = 0  # no filter there
            threshold_source = (
                f"calibrated to filter ratio {spec.target_ratio:g}x on the last {len(calib)} prompt tokens "
                "(not perplexity-tuned; pass --thresholds from `cemsim tune`)"
            )
        t = phase("itq_thresholds", t)
    info = device_info(spec.device)
    repeats = total / text_tokens
    text_note = (
        f"; the text has {text_tokens} tokens, cycled {repeats:.2f} times (--repeat-text)"
        if repeats > 1
        else ""
    )
    model = lm.model
    dev = torch.device(spec.device)
    with torch.inference_mode():
        from transformers import DynamicCache

        # A full cache for every layer, sliding ones included: the attention function applies their window
        # from positions, and the cache must crop back to the prompt after each policy (transformers'
        # sliding layers cannot once past their window).
        cache = DynamicCache()
        prompt_t = torch.tensor([prompt], dtype=torch.long)
        nchunks = -(-spec.tokens // chunk)
        for c, a in enumerate(range(0, spec.tokens, chunk)):
            tick("prefill", c, nchunks)
            model.model(input_ids=prompt_t[:, a : a + chunk].to(dev), past_key_values=cache, use_cache=True)
        tick("prefill", nchunks, nchunks)
        t = phase("prefill", t)
        if spec.device.startswith("cuda"):
            info["max_memory_allocated_gb_after_prefill"] = round(
                torch.cuda.max_memory_allocated(dev) / 2**30, 2
            )
        policy_runs = [
            (p, paths[p], thresholds, rotations, itq_file, threshold_source) for p in spec.policies
        ]
        if spec.no_itq_thresholds_file is not None and "longsight" in spec.policies:
            th2 = load_thresholds(spec.no_itq_thresholds_file, lm.num_layers, lm.num_kv_heads, lm.head_dim)
            no_itq = out.with_name(f"{out.stem}.no-itq{out.suffix or '.parquet'}")
            policy_runs.append(("longsight", no_itq, th2, None, None, f"file {spec.no_itq_thresholds_file}"))
            paths["longsight-no-itq"] = no_itq
        for policy, path, thresholds, rotations, itq_file, threshold_source in policy_runs:
            cfg = PolicyConfig(
                kind=policy,  # type: ignore[arg-type]
                window=spec.window,
                sinks=spec.sinks,
                k=k,
                topk_per=spec.topk_per,  # type: ignore[arg-type]
                thresholds=thresholds if policy == "longsight" else None,
                rotations=rotations if policy == "longsight" else None,
                backend=kernels.resolve_backend("auto", device=spec.device),
            )
            header = TraceHeader(
                schema_version=SCHEMA_VERSION,
                model=lm.name,
                layers=lm.num_layers,
                q_heads=lm.num_heads,
                kv_heads=lm.num_kv_heads,
                head_dim=lm.head_dim,
                dtype=lm.dtype,
                policy=policy,
                window=spec.window,
                sinks=spec.sinks,
                k=k,
                topk_scope="query_head" if spec.topk_per == "head" else "kv_group",
                block_size=spec.block_size,
                itq=bool(policy == "longsight" and rotations is not None),
                thresholds=thresholds.tolist()
                if (policy == "longsight" and thresholds is not None)
                else None,
                text_source=f"{text.provenance}; sha256 {text.sha256[:16]}; first {spec.tokens} tokens, "
                f"decode teacher-forced on the next {spec.decode_steps}{text_note}",
                cemsim_version=__version__,
                layer_types=list(lm.layer_types) if lm.sliding_window is not None else None,
                local_window=lm.sliding_window,
                extra={
                    **spec.extra,
                    "prompt_tokens": spec.tokens,
                    "decode_steps": spec.decode_steps,
                    "itq_file": itq_file if policy == "longsight" else None,
                    "thresholds_source": threshold_source if policy == "longsight" else None,
                    **info,
                    "prefill_chunk": chunk,
                    "model_max_positions": lm.max_positions,
                    "rope_theta": lm.rope_theta,
                    "allow_extrapolation": spec.allow_extrapolation,
                    "extrapolated": extrapolating,
                    "text_sha256": text.sha256,
                    "text_tokens": text_tokens,
                    "text_repeats": round(max(repeats, 1.0), 4),
                    "timings_s": dict(times),
                    "policies_in_capture": list(spec.policies),
                },
            )
            asm = StepAssembler(header, policy, dtype_bytes=2)
            state = new_state(lm, cfg, observer=asm)
            with TraceWriter(path, header) as w:
                for s in range(spec.decode_steps):
                    state.step = s
                    model.model(
                        input_ids=torch.tensor([[continuation[s]]], device=dev),
                        past_key_values=cache,
                        use_cache=True,
                        cemsim_state=state,
                    )
                    w.write(asm.build(s, spec.tokens + s + 1))
                    tick(f"decode {policy}", s + 1, spec.decode_steps)
            cache.crop(-spec.decode_steps)  # back to the prompt for the next policy
            t = phase(f"decode_{policy}", t)
    return paths
