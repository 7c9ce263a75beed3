"""Constants shared by the chart tests (not in conftest.py, which is not reliably importable by name)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SYSTEMS = ["h100", "h100x2", "h100-host-offload", "h100-host-offload-sparse", "h100-sparse-hbm", "h100-drex"]
