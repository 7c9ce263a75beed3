"""The ``--model`` help shared by eval, tune and capture (kept free of torch imports: the CLI starts fast).
tests/cli/test_model_help.py checks it against the loader's registry, so the two cannot drift apart."""

from __future__ import annotations

MODEL_HELP = (
    "Bundled model: smollm2-135m (Llama architecture, trained to 8K positions) or gemma3-270m (Gemma 3, "
    "32K positions, sliding-window and full-attention layers); or a local HuggingFace checkpoint folder or "
    ".gguf file of a Llama or Gemma 3 text model (model_type llama or gemma3_text)."
)
