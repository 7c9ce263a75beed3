"""The real Gemma 3 270M and a token span of it, shared by the Gemma tests and loaded once per run."""

from __future__ import annotations

import pytest

from cemsim.attention.model_loader import load_model
from cemsim.attention.text import load_text, token_ids

GEMMA_SPAN = 640  # longer than Gemma's 512-key window, so sliding layers really slide


@pytest.fixture(scope="session")
def gemma():
    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_ids(gemma):
    return token_ids(gemma.tokenizer, load_text(), GEMMA_SPAN, bos=gemma.bos_id)
