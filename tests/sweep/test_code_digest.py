"""Stored sweep points are keyed on the code that computed them: an edit of cemsim's sources, or of an
evaluate function's own module, gives new point ids, so a rerun evaluates again instead of reusing points an
older simulator computed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cemsim import code_digest as cd
from cemsim.sweep import expand
from cemsim.sweep.runner import run_sweep


@pytest.fixture
def fresh_caches():
    for fn in (cd.package_digest, cd.module_file, cd.code_digest):
        fn.cache_clear()
    yield
    for fn in (cd.package_digest, cd.module_file, cd.code_digest):
        fn.cache_clear()


def test_package_digest_covers_every_source_file(fresh_caches, monkeypatch, tmp_path: Path) -> None:
    first = cd.package_digest()
    assert len(first) == 64 and first == cd.package_digest()
    # the same files with one byte changed in one of them give another digest
    copy = tmp_path / "cemsim"
    for src in cd.PACKAGE.rglob("*.py"):
        if "__pycache__" in src.parts:
            continue
        dst = copy / src.relative_to(cd.PACKAGE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    monkeypatch.setattr(cd, "PACKAGE", copy)
    cd.package_digest.cache_clear()
    assert cd.package_digest() == first
    target = copy / "sim" / "simulate.py"
    target.write_bytes(target.read_bytes() + b"\n# edited\n")
    cd.package_digest.cache_clear()
    assert cd.package_digest() != first


def test_evaluate_module_outside_cemsim_is_part_of_the_digest(
    fresh_caches, monkeypatch, tmp_path: Path
) -> None:
    mod = tmp_path / "my_eval_mod.py"
    mod.write_text("def evaluate(task):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = cd.code_digest("my_eval_mod:evaluate")
    assert before != cd.package_digest()
    # a module inside cemsim is already covered by the package digest
    assert cd.code_digest("cemsim.sweep.evaluate:simulate_point") == cd.package_digest()
    # an unknown module does not raise here (the worker reports it), it just adds nothing
    assert cd.code_digest("no_such_module_xyz:f") == cd.package_digest()
    mod.write_text("def evaluate(task):\n    return {'x': 1}\n")
    cd.module_file.cache_clear()
    cd.code_digest.cache_clear()
    assert cd.code_digest("my_eval_mod:evaluate") != before
    sys.modules.pop("my_eval_mod", None)


def test_a_code_change_re_evaluates_the_stored_points(small_spec: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    assert run_sweep(small_spec, out, workers=1, progress=False).evaluated == 12
    assert run_sweep(small_spec, out, workers=1, progress=False).skipped == 12
    monkeypatch.setattr(expand, "code_digest", lambda evaluate: "a newer simulator")
    again = run_sweep(small_spec, out, workers=1, progress=False)
    assert again.evaluated == 12 and again.skipped == 0
