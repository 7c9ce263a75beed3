"""Every name the benchmark scripts import from cemsim exists. The GPU benchmarks import inside their functions
(CuPy and the device are only there), so a renamed helper breaks them only on the device, minutes into a run:
bench_fused.py's graph_overhead imported `_launch_programmatic` for a day after it became `_launch_ex`."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.rglob("*.py"))


def cemsim_imports(path: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) of every `from cemsim... import name` anywhere in the file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cemsim":
            out.extend((node.module, alias.name, node.lineno) for alias in node.names)
    return out


def test_the_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"bench_fused.py", "bench_layer.py", "profile_layer.py"} <= names
    assert cemsim_imports(BENCHMARKS / "gpu" / "bench_fused.py")  # the nested imports are seen


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_every_cemsim_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = []
    for module, name, line in cemsim_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"line {line}: from {module} import {name}")
    assert not missing, f"{path.name}: " + "; ".join(missing)
