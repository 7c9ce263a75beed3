"""Properties of the work model and the engine: conservation, bounds, determinism, no shared state."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cemsim.sim.simulate import prepare, simulate
from cemsim.sim.work import RowGeometry, step_work
from tests.sim.conftest import REPO, load, make_header, make_step

TINY = REPO / "tests" / "sim" / "data" / "tiny" / "config.json"
GEO = load(REPO / "hwconfigs" / "h100-drex.yaml", **{"workload.model": str(TINY)}).geometry


@settings(max_examples=40, deadline=None)
@given(
    context=st.integers(1100, 40_000),
    block_size=st.sampled_from([16, 64, 128, 256]),
    survival=st.floats(0.0, 1.0),
    keys_per_row=st.sampled_from([16.0, 64.0, 200.0]),
    slice_keys=st.sampled_from([1024, 4096, 131072]),
    scale_to=st.floats(0.05, 1.0),
)
def test_epochs_and_rows_conserve_and_bound(
    context, block_size, survival, keys_per_row, slice_keys, scale_to
):
    header = make_header(GEO, block_size=block_size, k=64)
    rec = make_step(header, context, survival=survival)
    rows = RowGeometry(slice_keys=slice_keys, keys_per_row=keys_per_row, keys_per_block=128)
    target = max(int(context * scale_to), 1)
    w = step_work(header, rec, target, rows, "t")
    # survivors are conserved across epochs and never exceed the keys considered
    np.testing.assert_array_equal(w.epoch_survivors.sum(-1), w.survivors)
    assert (w.epoch_survivors >= 0).all() and (w.survivors <= w.considered).all()
    # rows opened are never negative, nor more than the survivors or the rows the range spans
    rows_present = np.ceil(w.considered / keys_per_row)
    opened = w.epoch_rows.sum(-1)
    assert (opened >= -1e-9).all()
    assert (opened <= np.minimum(w.survivors, rows_present) + 1e-6).all()
    assert (w.value_rows <= opened + 1e-6).all()
    # key blocks (active PFUs) tile each epoch's part of the considered range
    for n, blocks in zip(w.considered.ravel(), w.epoch_blocks.sum(-1).ravel(), strict=True):
        epochs = -(-int(n) // slice_keys)
        assert blocks == sum(-(-min(slice_keys, int(n) - e * slice_keys) // 128) for e in range(epochs))


def _run(batch: int):
    system = load(REPO / "hwconfigs" / "h100-drex.yaml", **{"workload.model": str(TINY)})
    header = make_header(system.geometry, k=64)
    return simulate(prepare(system, header, [make_step(header, 8192, step=i) for i in range(3)], batch=batch))


def test_runs_are_deterministic_and_independent():
    a = _run(4)
    _run(2)  # another simulation in the same process in between: no state may leak
    b = _run(4)
    assert a.step_latencies_s == b.step_latencies_s
    assert a.energy_breakdown_j == b.energy_breakdown_j and a.events == b.events


def test_more_users_never_finish_sooner():
    lat = [_run(b).latency_per_token_s for b in (1, 2, 4, 8)]
    assert lat == sorted(lat)
