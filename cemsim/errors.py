"""User-facing errors: one clear paragraph, exit code 1, never a traceback; bugs leave their traceback in a file."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path


class CemsimError(Exception):
    """An error caused by the user's input (a file, a flag, a missing model); the CLI prints it and exits 1."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def one_line(exc: BaseException) -> str:
    """``KeyError: 'x'``: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def write_traceback_report(exc: BaseException, argv: list[str]) -> Path:
    """Write the command line and the full traceback of an unexpected exception to
    ``<cache>/crashes/<time>-<pid>.txt`` (the cache dir of cemsim.paths); return that path.

    Falls back to the system temp folder when the cache cannot be written, so the report is never lost."""
    import tempfile

    from cemsim import __version__
    from cemsim.atomic import atomic_write_text
    from cemsim.paths import cache_dir

    text = f"cemsim {__version__}\ncommand: {' '.join(argv)}\ncwd: {os.getcwd()}\n\n" + "".join(
        traceback.format_exception(exc)
    )
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        target = cache_dir() / "crashes" / name
        atomic_write_text(target, text)
    except OSError:
        target = Path(tempfile.gettempdir()) / f"cemsim-crash-{name}"
        atomic_write_text(target, text)
    return target
