"""Where cemsim may write outside the repo: one cache directory, nowhere else."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$CEMSIM_CACHE`` when set, else ``~/.cache/cemsim``; created on demand."""
    root = Path(os.environ.get("CEMSIM_CACHE") or Path.home() / ".cache" / "cemsim")
    root.mkdir(parents=True, exist_ok=True)
    return root


def repo_root() -> Path | None:
    """The source checkout that holds this package, when cemsim runs from one (for traces/ and hwconfigs/)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "hwconfigs").is_dir() else None
