"""User-facing errors: one clear paragraph, exit code 1, never a traceback."""

from __future__ import annotations


class CemsimError(Exception):
    """An error caused by the user's input (a file, a flag, a missing model); the CLI prints it and exits 1."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)
