"""Constants and helpers shared by the sweep tests (a uniquely named module: `conftest` is not importable
reliably when several test folders each have one)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EVAL = "roofline_eval:evaluate"


def write_spec(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
