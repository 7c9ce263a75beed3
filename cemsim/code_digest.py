"""A digest of the code that computes a sweep point, so the result store never hands back a point that an
older simulator computed: a stored point is keyed on its resolved config, its trace, its options and this
digest, and any edit of cemsim's Python sources (or of an evaluate function's own module outside cemsim)
gives new keys. Hashing every source file is deliberately coarse: a reused stale point is a silent wrong
result, an extra re-evaluation only costs time."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def files_digest(files: list[Path], root: Path | None = None) -> str:
    """SHA-256 over ``files`` in the order given, each keyed by its path relative to ``root`` (by its name when
    no root is given) and its bytes. The one source digest of the package: sweep points, the DRAM engine's
    Numba cache guard and the ITQ cache recipe all use it."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root) if root else f.name).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@cache
def package_digest() -> str:
    """SHA-256 over cemsim's .py sources (relative path and content, in sorted order)."""
    return files_digest(sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts), PACKAGE)


@cache
def module_file(module_name: str) -> Path | None:
    """The source file of a module outside cemsim, found without importing it; None when it cannot be found
    (the worker reports an unimportable evaluate function) or when it lies inside cemsim (already hashed)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin).resolve()
    return None if PACKAGE in path.parents else path


@cache
def code_digest(evaluate: str) -> str:
    """The package digest, plus the evaluate function's module when it lives outside cemsim."""
    extra = module_file(evaluate.partition(":")[0])
    if extra is None:
        return package_digest()
    return hashlib.sha256(f"{package_digest()}|{files_digest([extra])}".encode()).hexdigest()
