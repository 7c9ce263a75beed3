"""Check an output path before a long command starts, so a typo fails in a second with one clear message."""

from __future__ import annotations

import os
from pathlib import Path

from cemsim.errors import CemsimError


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (the folder `mkdir -p` would start from)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(folder: Path, flag: str, shown: Path) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise CemsimError(f"cannot write {shown}: {base} is a file, not a folder", where=flag)
    if not os.access(base, os.W_OK | os.X_OK):
        raise CemsimError(f"cannot write {shown}: no permission to write in {base}", where=flag)


def check_output_file(path: Path, flag: str) -> None:
    """``path`` must name a file that can be (re)written: not a folder, inside a folder that can be made."""
    if path.is_dir():
        raise CemsimError(f"{path} is a folder; name a file to write (in it or elsewhere)", where=flag)
    _check_creatable(path.parent, flag, path)


def check_output_dir(path: Path, flag: str) -> None:
    """``path`` must be a folder, or a path where one can be made."""
    if path.exists() and not path.is_dir():
        raise CemsimError(f"{path} exists and is not a folder; name a folder for the outputs", where=flag)
    _check_creatable(path, flag, path)
