"""The most users a system holds at a context: the largest batch the capacity model (cemsim.sim.capacity)
accepts, for sweeps that ask ``workload.batch: max`` (the LongSight paper's "as many users as each system
holds").

Memory need grows with the batch (weights once, KV, sign bits and the window per user), so the fitting
batches form a prefix 1..B: doubling finds a batch that does not fit, bisection finds B. Where even one user
does not fit, the point keeps batch 1 and its "does not fit" report.
"""

from __future__ import annotations

import dataclasses

from cemsim.errors import CemsimError
from cemsim.sim.capacity import FitReport, check_fit
from cemsim.sim.simulate import Prepared

SEARCH_LIMIT = 1 << 24  # users; a system still fitting here has a memory the capacity model does not bound


def _fit(prep: Prepared, batch: int) -> FitReport:
    work = prep.works[0]
    return check_fit(prep.system, prep.kind, prep.sizes, prep.context, batch, work.window, work.sinks)


def most_users(prep: Prepared) -> tuple[int, FitReport, str | None]:
    """(B, the fit report at B, the memory that refuses B + 1) where B is the largest batch that fits;
    (1, the report at 1, None) when one user does not fit."""
    first = _fit(prep, 1)
    if not first.fits:
        return 1, first, None
    lo, hi = 1, 2
    while _fit(prep, hi).fits:  # lo fits, hi does not (once the loop ends)
        lo, hi = hi, hi * 2
        if hi > SEARCH_LIMIT:
            raise CemsimError(
                f"system {prep.system.name!r}: {SEARCH_LIMIT:,} users at {prep.context:,} tokens still fit "
                "in every memory the capacity model checks; give workload.batch a number instead of 'max'"
            )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fit(prep, mid).fits else (lo, mid)
    over = _fit(prep, hi)
    limit = next((name for name, m in over.memory.items() if m["need"] > m["have"]), None)
    return lo, _fit(prep, lo), limit


def with_most_users(prep: Prepared) -> tuple[Prepared, str | None]:
    """``prep`` at the most users that fit, and the memory that limits them (None when none fits)."""
    batch, fit, limit = most_users(prep)
    return dataclasses.replace(prep, batch=batch, fit=fit), limit
