"""The event-driven loop equals a cycle-ticked run of the same rules (kernel_state.py): replaying with
``tick_every_cycle=True`` visits every tick, and every per-request output must be identical. Streams that
exercise what depends on the next visited tick: spaced arrivals, a full queue that refuses offers, write
drains, closed loop, refresh, both controller profiles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cemsim.dram import PROFILES, DramSpec, load_dram_spec, replay
from cemsim.dram import kernel_state as K


def _stream(spec: DramSpec, n_keys: int, seed: int, write_frac: float) -> dict[str, np.ndarray]:
    """Keys of 4 bursts in a random bank, rows drawn from 16 (so hits, misses and conflicts all occur)."""
    rng = np.random.default_rng(seed)
    nb = spec.ranks * spec.pseudo_channels * spec.banks
    b = rng.integers(0, nb, n_keys)
    co = rng.integers(0, spec.columns // 4, n_keys) * 4
    n = 4 * n_keys
    return {
        "rank": np.repeat(b // spec.banks, 4),
        "bankgroup": np.repeat((b % spec.banks) // spec.banks_per_group, 4),
        "bank": np.repeat(b % spec.banks_per_group, 4),
        "row": np.repeat(rng.integers(0, 16, n_keys), 4),
        "column": np.repeat(co, 4) + np.tile(np.arange(4), n_keys),
        "key_id": np.repeat(np.arange(n_keys), 4),
        "is_write": (rng.random(n) < write_frac).astype(np.int64),
    }


SPECS = {
    "dramsim3-lpddr5x": lambda: load_dram_spec("lpddr5x-8533").with_controller("dramsim3"),
    "dramsim3-closed-perbank-ref": lambda: load_dram_spec("ddr5-4800").with_controller(
        replace(PROFILES["dramsim3"], row_policy="closed", refresh="per_bank")
    ),
    "dramsim3-hbm3": lambda: load_dram_spec("hbm3").with_controller("dramsim3"),
    "ramulator-lpddr5x": lambda: load_dram_spec("lpddr5x-8533"),
    "ramulator-hbm3": lambda: load_dram_spec("hbm3"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("loop", ["saturating", "spaced", "closed"])
def test_event_driven_equals_ticking_every_cycle(name: str, loop: str) -> None:
    spec = SPECS[name]()
    s = _stream(spec, 600, seed=11, write_frac=0.3)
    n = s["row"].size
    kw: dict = {}
    if loop == "spaced":  # gaps of 0-7 ticks: the queue fills and drains, offers are refused and retried
        kw["arrival"] = np.cumsum(np.random.default_rng(5).integers(0, 8, n))
    elif loop == "closed":
        kw["depth"] = 6
    ev = replay(spec, **s, **kw)
    tick = replay(spec, **s, **kw, tick_every_cycle=True)
    for field in ("done", "accepted", "issued", "first_command", "row_class"):
        assert np.array_equal(getattr(ev, field), getattr(tick, field)), field
    assert ev.stats["dram_commands"] == tick.stats["dram_commands"]
    # and it skipped ticks to get there (the every-cycle run visits each one)
    assert ev.counts[:, K.C_EVENTS].sum() < tick.counts[:, K.C_EVENTS].sum()
