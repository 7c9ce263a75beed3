"""The engine loop's Numba cache is dropped when a module inlined into it changes (cemsim/dram/cache_guard.py)."""

from __future__ import annotations

from pathlib import Path

from cemsim.dram.cache_guard import STAMP, drop_stale_cache


def _cache(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    src = tmp_path / "schedule.py"
    src.write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    entries = [cache / "kernel._run-284.py311.nbi", cache / "kernel._run-284.py311.1.nbc"]
    for f in entries:
        f.write_bytes(b"compiled")
    return cache, [src], entries


def test_first_sight_stamps_and_later_edits_drop_only_the_kernel_entries(tmp_path: Path) -> None:
    cache, sources, entries = _cache(tmp_path)
    other = cache / "schedule.select-10.py311.nbi"  # another module's entry stays
    other.write_bytes(b"x")
    assert drop_stale_cache(cache, "kernel", sources)  # no stamp yet: the cache may be stale
    assert not any(f.exists() for f in entries) and other.exists() and (cache / STAMP).is_file()
    for f in entries:
        f.write_bytes(b"recompiled")
    assert not drop_stale_cache(cache, "kernel", sources)  # nothing changed: kept
    assert all(f.exists() for f in entries)
    sources[0].write_text("x = 2\n")
    assert drop_stale_cache(cache, "kernel", sources)
    assert not any(f.exists() for f in entries) and other.exists()


def test_a_stamp_that_cannot_be_written_never_raises(tmp_path: Path) -> None:
    cache, sources, entries = _cache(tmp_path)
    (cache / STAMP).mkdir()  # the stamp can be neither read nor replaced
    assert drop_stale_cache(cache, "kernel", sources)  # stale entries still go
    assert not any(f.exists() for f in entries) and (cache / STAMP).is_dir()


def test_the_engine_stamps_its_own_cache() -> None:
    import cemsim.dram.kernel as kernel

    stamp = Path(kernel.__file__).parent / "__pycache__" / STAMP
    assert stamp.is_file() and len(stamp.read_text().strip()) == 64
