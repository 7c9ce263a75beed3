"""Dense vs sparse perplexity and the sparse-attention metrics of one policy on one text span.

Metrics (all from the prefill-evaluation pass, where every position applies the policy causally):

- ``ppl_dense`` / ``ppl_sparse``: perplexity of tokens 2..N; ``ppl_increase`` = sparse / dense - 1.
- ``filter_ratio`` [layers][kv_heads]: keys considered (the sparse region, summed over positions) / keys
  surviving SCF; the scalar ``filter_ratio`` in JSON is over all layers and heads together.
- ``topk_recall``: share of the oracle top-k (exact scores over the whole sparse region) that the policy
  also chose, sampled every 16th position.
- ``kv_load_reduction``: the LongSight artifact's metric (ae-micro-scf-attn ``src/example.py``) at context N:
  per layer FR_min is the worst head's filter ratio, keys read = (N - W) / FR_min,
  values read = min(keys read, k), reduction = sum 2(N - W) / sum(keys read + values read).
- ``bytes_per_token``: bytes one decode step at context ~N reads over all layers and KV heads (keys,
  values, metadata: sign bits or page bounds), averaged over the last 256 positions, against
  ``dense_bytes_per_token`` = 2 N D bytes per (layer, KV head).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cemsim.attention.model_loader import LoadedModel
from cemsim.attention.policies import AttentionState, PolicyConfig
from cemsim.attention.runner import dense_nll_cached, new_state, perplexity, token_nll
from cemsim.attention.text import EvalText, token_ids


@dataclass
class EvalReport:
    model: str
    policy: str
    tokens: int
    window: int
    sinks: int
    k: int
    itq: bool
    backend: str
    text: str
    ppl_dense: float
    ppl_sparse: float
    ppl_increase: float
    filter_ratio: float
    filter_ratio_per_head: list[list[float | None]]  # None for sliding-window layers (no sparse stage)
    topk_recall: float | None
    topk_recall_per_layer: list[float | None]
    kv_load_reduction: float | None
    bytes_per_token: float
    dense_bytes_per_token: float
    bytes_breakdown: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    dense_cached: bool = False
    device: str = "cpu fp32"  # where the model ran and in which dtype
    layer_types: list[str] = field(default_factory=list)  # "full" | "sliding" per layer

    def to_json(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float("inf") if den == 0 else float(num / den)


def filter_ratios(state: AttentionState) -> np.ndarray:
    """[layers, kv_heads] keys considered / keys surviving (inf where nothing survived)."""
    return np.array(
        [[_ratio(s.considered[h], s.survivors[h]) for h in range(len(s.survivors))] for s in state.stats]
    )


def kv_load_reduction(fr: np.ndarray, n: int, window: int, k: int) -> float | None:
    """The artifact's KV-load reduction at context ``n`` from per-(layer, head) filter ratios."""
    sparse = n - window
    if sparse <= 0:
        return None
    num = den = 0.0
    for layer in fr:
        fr_min = float(np.min(layer))
        keys = 0.0 if np.isinf(fr_min) else sparse / fr_min
        den += keys + min(keys, k)
        num += 2 * sparse
    return None if den == 0 else num / den


def summarize(
    state: AttentionState, lm: LoadedModel, cfg: PolicyConfig, n: int
) -> tuple[float, list[list[float | None]], float | None, list[float | None], float | None, dict[str, float]]:
    full = lm.full_layers  # sparse policies act on full-attention layers only
    fr = filter_ratios(state)[full]
    cons = sum(float(s.considered.sum()) for s in state.stats)
    surv = sum(float(s.survivors.sum()) for s in state.stats)
    if cfg.kind == "window":
        fr_all, fr = float("inf"), np.full_like(fr, np.inf)
    elif cfg.kind == "dense":
        fr_all, fr = 1.0, np.ones_like(fr)
    else:
        fr_all = _ratio(cons, surv)
    per_layer = [None if s.recall_total == 0 else s.recall_hits / s.recall_total for s in state.stats]
    hits = sum(s.recall_hits for s in state.stats)
    tot = sum(s.recall_total for s in state.stats)
    recall = None if tot == 0 else hits / tot
    if cfg.kind == "dense":
        kvr: float | None = 1.0
    else:
        fr_metric = fr
        if cfg.kind in ("oracle-topk", "quest"):
            # Neither filters: the keys they read are their picks (Quest) or everything (oracle).
            fr_metric = np.array(
                [
                    [_ratio(s.considered[h], s.keys_read[h]) for h in range(len(s.keys_read))]
                    for s in state.stats
                ]
            )[full]
        kvr = kv_load_reduction(fr_metric, n, cfg.window, cfg.k)
    elem = lm.head_dim * cfg.bytes_per_element
    keys_b = vals_b = dense_b = meta_b = 0.0
    for s in state.stats:
        rows = np.maximum(s.tail_rows, 1)
        keys_b += float((s.tail_keys_read / rows).sum()) * elem
        vals_b += float((s.tail_values_read / rows).sum()) * elem
        dense_b += float((2 * s.tail_dense / rows).sum()) * elem
        meta_b += float((s.tail_meta_bytes / rows).sum())
    breakdown = {
        "sparse_keys": keys_b,
        "sparse_values": vals_b,
        "dense_window_kv": dense_b,
        "metadata": meta_b,
    }
    per_head: list[list[float | None]] = [[None] * lm.num_kv_heads for _ in range(lm.num_layers)]
    for row, layer in zip(fr.tolist(), full, strict=True):
        per_head[layer] = row
    return fr_all, per_head, recall, per_layer, kvr, breakdown


def evaluate(
    lm: LoadedModel,
    text: EvalText,
    tokens: int,
    cfg: PolicyConfig,
    *,
    itq: bool,
    on_layer=None,
    sparse_path: str = "auto",
) -> EvalReport:
    """Run dense (cached on disk) and sparse prefill evaluation over the first ``tokens`` tokens;
    ``sparse_path`` (see :class:`AttentionState`) lets benchmarks compare LongSight's implementations."""
    ids = token_ids(lm.tokenizer, text, tokens, bos=lm.bos_id)
    t0, c0 = time.perf_counter(), time.process_time()
    nll_dense, cached = dense_nll_cached(lm, ids, text)
    t1, c1 = time.perf_counter(), time.process_time()
    state = new_state(lm, cfg, total_positions=tokens, sparse_path=sparse_path)
    state.on_layer = on_layer
    nll_sparse = token_nll(lm, ids, state)
    t2, c2 = time.perf_counter(), time.process_time()
    fr_all, fr, recall, recall_layers, kvr, breakdown = summarize(state, lm, cfg, tokens)
    ppl_d, ppl_s = perplexity(nll_dense), perplexity(nll_sparse)
    return EvalReport(
        model=lm.name,
        policy=cfg.kind,
        tokens=tokens,
        window=cfg.window,
        sinks=cfg.sinks,
        k=cfg.k,
        itq=itq,
        backend=cfg.backend if cfg.kind == "longsight" else "torch",
        text=text.provenance,
        ppl_dense=ppl_d,
        ppl_sparse=ppl_s,
        ppl_increase=ppl_s / ppl_d - 1.0,
        filter_ratio=fr_all,
        filter_ratio_per_head=fr,
        topk_recall=recall,
        topk_recall_per_layer=recall_layers,
        kv_load_reduction=kvr,
        bytes_per_token=sum(breakdown.values()),
        dense_bytes_per_token=2.0
        * tokens
        * lm.head_dim
        * cfg.bytes_per_element
        * lm.num_layers
        * lm.num_kv_heads,
        bytes_breakdown=breakdown,
        seconds={"dense": t1 - t0, "sparse": t2 - t1, "dense_cpu": c1 - c0, "sparse_cpu": c2 - c1},
        dense_cached=cached,
        device=f"{lm.device} {lm.dtype}",
        layer_types=[lm.layer_type(i) for i in range(lm.num_layers)],
    )
