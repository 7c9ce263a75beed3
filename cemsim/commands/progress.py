"""The progress bar long-running commands share: description, bar, done/total, elapsed time, on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def step_progress() -> Progress:
    """A transient bar on stderr, so stdout stays clean for tables and JSON; off when stderr is not a
    terminal (a log file or a pipe would get only the blank line a stopped bar leaves)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
