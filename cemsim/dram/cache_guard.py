"""Drop Numba's cached engine loop when a module compiled into it changed.

Numba keys a cached function on its own source file only. The loop in kernel.py inlines functions of
kernel_state.py, schedule.py and timing.py, so an edit there alone would leave the old loop in the cache
(and running). A stamp of those files' contents beside the cache decides: when it differs, kernel.py's
cache entries are removed and the loop compiles afresh on its next call.
"""

from __future__ import annotations

from pathlib import Path

from cemsim.code_digest import files_digest

STAMP = "cemsim-dram-deps.sha256"


def drop_stale_cache(cache_dir: Path, module: str, sources: list[Path]) -> bool:
    """Remove ``module``'s Numba cache files in ``cache_dir`` if ``sources`` changed since the stamp was
    written (or no stamp is there); returns whether anything was removed. Never raises: a cache folder that
    cannot be written is left as it is."""
    digest = files_digest(sources)
    stamp = cache_dir / STAMP
    try:
        if stamp.read_text().strip() == digest:
            return False
    except OSError:
        pass  # no stamp yet (or unreadable): treat the cache as stale
    removed = False
    try:
        for f in [*cache_dir.glob(f"{module}.*.nbi"), *cache_dir.glob(f"{module}.*.nbc")]:
            f.unlink(missing_ok=True)
            removed = True
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(digest + "\n")
        tmp.replace(stamp)
    except OSError:
        pass  # a cache folder we cannot write: Numba caches elsewhere or not at all
    return removed
