"""Model-level operations under a sparse-attention policy: perplexity, ITQ capture, decode with an observer.

The API the trace-capture code uses::

    from cemsim.attention import load_model, PolicyConfig, run_decode, DecodeRecord

    lm = load_model("smollm2-135m")                   # or a local Llama checkpoint folder
    cfg = policy_for(lm, kind="longsight", k=256, thresholds=th, itq=True, text=...)
    records: list[DecodeRecord] = []
    run = run_decode(lm, prompt_ids, steps=8, config=cfg, observer=records.append)

``run_decode`` prefills the prompt densely (the paper sparsifies decode only), then runs ``steps`` greedy
decode steps under the policy. For every decode step, layer and KV head the observer receives a
:class:`~cemsim.attention.policies.DecodeRecord`: ``context`` (keys in the cache, current token included),
``considered`` (keys in the sparse region), ``survivors`` (int32 positions that passed SCF; for other
policies the eligible positions), ``topk`` (one int32 array of chosen positions per query head of the
group), ``window`` and ``sinks`` (dense keys). Records arrive in (step, layer, kv_head) order.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cemsim import kernels
from cemsim.attention.itq import ITQ_FILE, ItqRotations, train_all
from cemsim.attention.model_loader import LoadedModel
from cemsim.attention.policies import AttentionState, DecodeRecord, PolicyConfig
from cemsim.attention.text import EvalText, token_ids
from cemsim.errors import CemsimError
from cemsim.paths import cache_dir

LOGIT_CHUNK = 1024  # rows of the LM head at a time: 8K x 49K fp32 logits would be 1.6 GB
LOGIT_CHUNK_ELEMS = 1 << 26  # and at most this many logits (256 MB fp32): Gemma's vocabulary is 262K


def new_state(lm: LoadedModel, config: PolicyConfig, **kw) -> AttentionState:
    return AttentionState(config=config, num_layers=lm.num_layers, num_kv_heads=lm.num_kv_heads, **kw)


@torch.inference_mode()
def token_nll(
    lm: LoadedModel, ids: list[int] | torch.Tensor, state: AttentionState | None = None
) -> np.ndarray:
    """Negative log-likelihood of tokens 1..N-1 given their prefix, under ``state``'s policy (None: dense)."""
    x = torch.as_tensor(ids, dtype=torch.long, device=lm.device).reshape(1, -1)
    kwargs = {} if state is None else {"cemsim_state": state}
    hidden = lm.model.model(input_ids=x, use_cache=False, **kwargs).last_hidden_state[0]
    return nll_from_hidden(lm, hidden, x)


@torch.inference_mode()
def nll_from_hidden(lm: LoadedModel, hidden: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """NLL of tokens ``x[0, 1:]`` from the final hidden states ``[N, hidden]`` of ``x`` (LM head in chunks:
    Gemma's 262K-word vocabulary makes full logits 8.6 GB at 8K tokens)."""
    nll = np.empty(x.shape[1] - 1, dtype=np.float64)
    rows = max(1, min(LOGIT_CHUNK, LOGIT_CHUNK_ELEMS // lm.model.lm_head.out_features))
    for a in range(0, x.shape[1] - 1, rows):
        b = min(x.shape[1] - 1, a + rows)
        logits = lm.model.lm_head(hidden[a:b]).float()
        nll[a:b] = (
            torch.nn.functional.cross_entropy(logits, x[0, a + 1 : b + 1], reduction="none").cpu().numpy()
        )
    return nll


def perplexity(nll: np.ndarray) -> float:
    return float(np.exp(np.mean(nll)))


def _model_key(lm: LoadedModel) -> str:
    w = sorted(lm.folder.glob("*.safetensors")) or sorted(lm.folder.glob("*.bin"))
    stamp = ",".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in w)
    return hashlib.sha256(f"{lm.folder}|{stamp}".encode()).hexdigest()[:16]


def dense_nll_cached(
    lm: LoadedModel, ids: list[int], text: EvalText, compute: Callable[[], np.ndarray] | None = None
) -> tuple[np.ndarray, bool]:
    """Dense NLL, cached on disk per (model weights, text, token count, device kind and dtype): eval and
    tune reuse it. ``compute``: how to get it when it is not cached (default: ``token_nll`` with no policy;
    tune passes the NLL of its one dense pass, which is the same computation)."""
    run = "" if (lm.device, lm.dtype) == ("cpu", "fp32") else f"|{torch.device(lm.device).type}|{lm.dtype}"
    key = hashlib.sha256(f"{_model_key(lm)}|{text.sha256}|{len(ids)}|{ids[:4]}{run}".encode()).hexdigest()[
        :24
    ]
    path = cache_dir() / "eval" / f"dense-nll-{key}.npy"
    if path.is_file():
        try:
            return np.load(path), True
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed
    nll = token_nll(lm, ids, None) if compute is None else compute()
    from cemsim.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, nll)
    return nll, False


# ----------------------------------------------------------------------------------------------- ITQ


def itq_path(lm: LoadedModel, recipe: str) -> Path:
    """Beside the bundled model's converted checkpoint; for user checkpoints, in the cache (never in
    the user's folder). One file per recipe (itq_recipe), so captures on different texts each keep theirs."""
    root = cache_dir().resolve()
    name = f"{Path(ITQ_FILE).stem}-{recipe}.npz"
    if root in lm.folder.resolve().parents:
        return lm.folder / name
    return root / "itq" / f"{lm.name}-{_model_key(lm)}-{name}"


@torch.inference_mode()
def capture_qk(lm: LoadedModel, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Post-RoPE keys ``[L, Hkv, n, D]`` and queries ``[L, Hq, n, D]`` (fp32, host) of a dense forward pass
    on the model's device."""
    state = new_state(lm, PolicyConfig(kind="dense"))
    state.capture = {}
    lm.model.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False, cemsim_state=state)
    keys = np.stack([state.capture[i][1].numpy() for i in range(lm.num_layers)])
    queries = np.stack([state.capture[i][0].numpy() for i in range(lm.num_layers)])
    return keys, queries


def itq_recipe(lm: LoadedModel, ids: list[int], iters: int) -> str:
    """What cached rotations were trained from: the model's weights, the token ids they saw (text, tokenizer
    and BOS all show there), the iterations and the training code (itq.py). It names the cache file and is
    stored in it, so rotations that an older cemsim or another text trained are never reused silently (they
    once moved the demo's results between two runs of the same code)."""
    from cemsim.attention import itq as itq_module
    from cemsim.code_digest import files_digest

    h = hashlib.sha256(f"{_model_key(lm)}|{iters}|{files_digest([Path(itq_module.__file__)])}|".encode())
    h.update(np.asarray(ids, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def load_or_train_itq(
    lm: LoadedModel,
    text: EvalText,
    *,
    tokens: int = 1024,
    iters: int = 50,
    retrain: bool = False,
    path: Path | None = None,
) -> tuple[ItqRotations, Path, bool]:
    """(rotations, file, trained_now). ``path``: a given rotations file, which must exist; otherwise the
    model's cached file, trained on the *last* ``tokens`` tokens of the text when absent."""
    if path is not None:
        if not Path(path).is_file():
            raise CemsimError("no such ITQ file", where=str(path))
        geo = {"layers": lm.num_layers, "kv_heads": lm.num_kv_heads, "head_dim": lm.head_dim}
        return ItqRotations.load(Path(path), **geo), Path(path), False
    ids = token_ids(lm.tokenizer, text, tokens, from_end=True, bos=lm.bos_id)
    recipe = itq_recipe(lm, ids, iters)
    path = itq_path(lm, recipe)
    if path.is_file() and not retrain:
        try:
            cached = ItqRotations.load(
                path, layers=lm.num_layers, kv_heads=lm.num_kv_heads, head_dim=lm.head_dim
            )
        except CemsimError:
            cached = None  # a damaged or foreign cache entry is retrained
        if cached is not None and cached.recipe == recipe:
            return cached, path, False
    keys, queries = capture_qk(lm, ids)
    rot = dataclasses.replace(train_all(keys, queries, iters=iters), recipe=recipe)
    rot.save(path)
    return rot, path, True


# ----------------------------------------------------------------------------------------------- decode


@dataclass
class DecodeRun:
    prompt_tokens: int
    generated: list[int]
    state: AttentionState


@torch.inference_mode()
def run_decode(
    lm: LoadedModel,
    prompt_ids: list[int],
    steps: int,
    config: PolicyConfig,
    observer: Callable[[DecodeRecord], None] | None = None,
) -> DecodeRun:
    """Dense prefill of ``prompt_ids``, then ``steps`` greedy decode steps under ``config``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config)
    x = torch.as_tensor([prompt_ids], dtype=torch.long)
    out = lm.model(input_ids=x, past_key_values=cache, use_cache=True)
    state = new_state(lm, config, observer=observer)
    nxt = int(out.logits[0, -1].argmax())
    generated = [nxt]
    for step in range(steps):
        state.step = step
        out = lm.model(
            input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True, cemsim_state=state
        )
        nxt = int(out.logits[0, -1].argmax())
        generated.append(nxt)
    return DecodeRun(prompt_tokens=len(prompt_ids), generated=generated, state=state)


def make_policy(
    lm: LoadedModel,
    text: EvalText,
    *,
    kind: str,
    context: int,
    window: int = 1024,
    sinks: int = 16,
    k: int | None = None,
    threshold: int | None = None,
    thresholds_file: str | Path | None = None,
    itq: bool = True,
    itq_file: str | Path | None = None,
    topk_per: str = "head",
    backend: str = "auto",
) -> tuple[PolicyConfig, dict]:
    """A PolicyConfig from user-level choices (k defaults to the published schedule for ``context``);
    also returns a provenance dict (ITQ file, threshold source). ``itq_file``: rotations to use instead of
    the model's cached (or freshly trained) ones."""
    from cemsim.attention.policies import published_k
    from cemsim.attention.thresholds import load_thresholds
    from cemsim.errors import CemsimError

    info: dict = {}
    rotations = thresholds = None
    if kind == "longsight":
        if threshold is not None and thresholds_file is not None:
            raise CemsimError("give either --threshold or --thresholds, not both")
        if thresholds_file is not None:
            tf = load_thresholds(
                thresholds_file, layers=lm.num_layers, kv_heads=lm.num_kv_heads, head_dim=lm.head_dim
            )
            thresholds = tf.thresholds
            info["thresholds"] = f"file {thresholds_file}"
            if tf.itq != itq:
                info["warning"] = f"thresholds were tuned with itq={tf.itq}, running with itq={itq}"
        else:
            t = 0 if threshold is None else threshold
            if not 0 <= t <= lm.head_dim + 1:
                raise CemsimError(f"threshold {t} outside 0..{lm.head_dim + 1}", where="--threshold")
            thresholds = np.full((lm.num_layers, lm.num_kv_heads), t, dtype=np.int64)
            info["thresholds"] = f"uniform {t}"
        if itq:
            given = None if itq_file is None else Path(itq_file)
            rot, path, trained = load_or_train_itq(lm, text, path=given)
            rotations = rot.rotations
            info["itq_file"] = str(path)
            info["itq_trained_now"] = trained
    backend = kernels.resolve_backend(backend, device=lm.device)  # SCF runs where the keys are
    cfg = PolicyConfig(
        kind=kind,  # type: ignore[arg-type]
        window=window,
        sinks=sinks,
        k=published_k(context) if k is None else k,
        topk_per=topk_per,  # type: ignore[arg-type]
        thresholds=thresholds,
        rotations=rotations,
        backend=backend,
    )
    return cfg, info
