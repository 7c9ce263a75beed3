"""DReX phase times on the DRAM engine against hand bounds from the device's timings (docs/validation.md, 1).

The bounds are worked from JEDEC-style reasoning on the preset's own numbers (tCK, burst, tRCD, tFAW ...),
independently of how the engine schedules: a phase can be no faster than its busiest resource (data bus,
command bus, a rank's activation window, one bank's row cycles) and, with the NMA keeping its queue full, no
slower than that plus a pipeline fill.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from cemsim.sim.cem import DReX, drex_shape
from cemsim.sim.stats import Recorder
from cemsim.sim.work import StepWork
from tests.sim.conftest import REPO, load

DREX = REPO / "hwconfigs" / "h100-drex.yaml"
SLICE_KEYS = 131_072  # 8 channels x 128 banks x 128 keys


def drex(**overrides: object):
    cfg = load(DREX, **overrides).cem
    env, rec = simpy.Environment(), Recorder()
    return env, rec, DReX(env, cfg, drex_shape(cfg, head_dim=128, group=4, dtype_bytes=2), rec, kv_heads=8)


def slice_row_miss_bounds() -> tuple[float, float, float]:
    """2,048 survivors, the first key of each of a slice's rows (column 0 under the preset's key mapping):
    every key is a row miss; the rows rotate over bank groups, ranks and banks, 16 per bank.
    Returns (lower bound, engine time, upper bound), seconds."""
    _, _, d = drex()
    t = d.timer
    s, tck = t.spec, t.tck
    tm = s.timing
    coords = t.layout.data_coordinates(np.arange(SLICE_KEYS))
    first = np.flatnonzero(coords["column"] == 0)
    keys = len(first)
    assert keys == 2048
    (fetch,) = t.fetch_times([first])
    # Every key needs ACT-1 and ACT-2 (LPDDR5's two-part activate), a RD and, but for the first row of a
    # bank or one a refresh closed, a PRE: one command-bus slot each (nCMD_ACT = nCMD_CAS = 1), on one
    # command bus per channel. That bus is the busiest resource:
    act_slots = tm["nCMD_ACT"] * (2 if tm["nAAD"] else 1)
    command_bus = keys * (act_slots + tm["nCMD_CAS"]) * tck  # without the PREs
    data_bus = keys * tm["nBL"] * tck
    faw = keys / s.ranks / 4 * tm["nFAW"] * tck  # four ACTs per tFAW per rank (die), ranks in parallel
    row_cycles = keys / 128 * tm["nRC"] * tck  # 16 row cycles per bank
    lower = max(command_bus, data_bus, faw, row_cycles)
    # upper: a PRE for every key too, every all-bank refresh that falls in the fetch blocking it for
    # tRPab + tRFC, and the first key's unloaded latency
    busy = keys * (act_slots + tm["nCMD_CAS"] + 1) * tck
    refreshes = np.ceil(busy / (tm["nREFI"] * tck)) + 1
    upper = busy + refreshes * (tm["nRPab"] + tm["nRFC"]) * tck + (tm["nRCD"] + tm["nCL"] + tm["nBL"]) * tck
    return lower, fetch, upper


def drex_slice_failures() -> list[str]:
    """The hand-bounded DReX fetch (test_mutation.py runs it against mutated cost functions)."""
    lower, fetch, upper = slice_row_miss_bounds()
    if lower <= fetch <= upper:
        return []
    return [
        f"DReX slice fetch {fetch * 1e9:.1f} ns outside the hand bounds [{lower * 1e9:.1f}, {upper * 1e9:.1f}]"
    ]


def test_one_survivor_per_row_is_bound_by_the_command_bus():
    assert drex_slice_failures() == []
    _, fetch, _ = slice_row_miss_bounds()
    # the closed form this replaces charged every survivor tRP + tRCD one after another: 2,048 x 36 ns
    assert fetch < 0.2 * 2048 * 36e-9


@pytest.mark.parametrize("mapping", ["RoBaRaCoCh", "RoBaRaCoBgCh"])
def test_a_full_slice_streams_at_its_column_bound(mapping):
    # Every key of one slice (131,072 x 256 B = 32 MiB per package, 2,048 rows of 64 keys per channel).
    # No faster than the columns allow: one burst per key per channel, and back-to-back reads of one bank
    # group only tCCD_L apart (RoBaRaCoCh keeps a row's consecutive keys in one bank group; RoBaRaCoBgCh
    # alternates them, so the pins bound it). No slower than that plus every row's PRE + ACT + RD latency
    # exposed one after another; in fact close to the column bound, stretched by all-bank refresh (tRPab +
    # tRFC of every tREFI) and a few percent of row turns.
    _, _, d = drex(**{"cem.layout.key_mapping": mapping})
    t = d.timer
    tm, tck = t.spec.timing, t.tck
    c = t.layout.data_coordinates(np.arange(2))
    spacing = tm["nCCD_L"] if c["bankgroup"][0] == c["bankgroup"][1] else tm["nBL"]
    (fetch,) = t.fetch_times([np.arange(SLICE_KEYS)])
    columns = SLICE_KEYS * max(tm["nBL"], spacing) * tck
    rows = SLICE_KEYS / 64
    exposed = rows * (tm["nRP"] + tm["nRCD"] + tm["nCL"]) * tck
    assert columns <= fetch <= columns + exposed
    refresh = (tm["nRPab"] + tm["nRFC"]) / tm["nREFI"]
    assert fetch < columns / (1 - refresh) * 1.05


def slice_work(block_survivors: np.ndarray, values: np.ndarray) -> StepWork:
    a = lambda v: np.array([[v]], dtype=np.int64)  # noqa: E731
    surv = int(block_survivors.sum())
    return StepWork(
        step=0,
        context=SLICE_KEYS + 1040,
        window=1024,
        sinks=16,
        considered=a(SLICE_KEYS),
        survivors=a(surv),
        values=a(int(values.sum())),
        epoch_survivors=np.array([[[surv]]]),
        epoch_rows=np.array([[[0.0]]]),
        epoch_blocks=np.array([[[SLICE_KEYS // 128]]]),
        value_rows=np.array([[0.0]]),
        block_survivors=block_survivors.astype(np.uint8)[None, None, :],
        block_values=values.astype(np.uint8)[None, None, :],
    )


def test_a_request_is_filter_then_scoring_then_values_on_the_nma():
    env, rec, d = drex()
    blocks = np.full(1024, 6)  # 6,144 survivors, ~5 %
    values = np.full(1024, 1)
    w = slice_work(blocks, values)
    env.process(d.serve(0, 0, 0, w))
    env.run()
    t = d.timer
    phases = t.request(w, 0, 0)
    gen, read = t.epoch_stages(1024)
    addr = d.cfg.pfu.address_generation_time
    assert phases.increments == [[pytest.approx(gen + read + addr)]]
    macs = 6144 * 128 * 4 / (16 * 68 * 1e9)
    assert phases.scoring[0] >= macs
    assert env.now == pytest.approx(gen + read + addr + phases.scoring[0] + phases.value, rel=1e-12)
    assert rec.busy["nma0"] == pytest.approx(env.now, rel=1e-12)
    # fewer values than survivors, in a subset of their rows: the value fetch is the shorter one
    assert 0 < phases.value < phases.scoring[0]
