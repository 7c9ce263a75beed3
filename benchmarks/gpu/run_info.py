"""Where a GPU benchmark ran: the fields every results file's provenance block starts with."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess


def smi(query: str) -> str:
    """One nvidia-smi field of GPU 0 ("unknown" where nvidia-smi is absent)."""
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except OSError:
        return "unknown"


def host_info() -> dict:
    """GPU, driver, memory, torch / CUDA / CuPy versions, Python and the UTC time."""
    import torch

    try:
        import cupy

        cupy_version = cupy.__version__
    except ImportError:
        cupy_version = None
    return {
        "gpu": torch.cuda.get_device_name(0),
        "driver": smi("driver_version"),
        "memory": smi("memory.total"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cupy": cupy_version,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
