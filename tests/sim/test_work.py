"""Per-step work from trace records: epochs, rows and context scaling."""

from __future__ import annotations

import numpy as np
import pytest

from cemsim.sim.work import RowGeometry, step_work
from tests.sim.conftest import load, make_header, make_step

ROWS = RowGeometry(slice_keys=131072, keys_per_row=64.0, keys_per_block=128)


def test_epochs_conserve_survivors_and_cover_the_range():
    geo = load("hwconfigs/h100-drex.yaml").geometry
    header = make_header(geo)
    rec = make_step(header, 300_000)
    w = step_work(header, rec, None, ROWS, "t")
    assert w.epoch_survivors.shape[-1] == 3  # 298,960 considered keys over 131,072-key slices
    np.testing.assert_array_equal(w.epoch_survivors.sum(-1), rec.survivors)
    assert (w.epoch_blocks.sum(-1) == np.ceil(rec.keys_considered / 128)).all()
    # rows opened never exceed rows present, nor the survivors
    assert (w.epoch_rows.sum(-1) <= np.minimum(rec.survivors, np.ceil(rec.keys_considered / 64)) + 1e-9).all()


def test_scaling_down_keeps_the_survival_fraction():
    geo = load("hwconfigs/h100-drex.yaml").geometry
    header = make_header(geo)
    rec = make_step(header, 131072)
    w = step_work(header, rec, 16384, ROWS, "t")
    assert w.context == 16384 and (w.considered == 16384 - 1024 - 16).all()
    frac_old = rec.survivors / rec.keys_considered
    frac_new = w.survivors / w.considered
    np.testing.assert_allclose(frac_new, frac_old, atol=1e-3)
    np.testing.assert_array_equal(w.epoch_survivors.sum(-1), w.survivors)
    assert (w.values <= w.survivors).all()


@pytest.mark.parametrize("density", [0.01, 0.2, 1.0])
def test_row_model_against_density(density):
    geo = load("hwconfigs/h100-drex.yaml").geometry
    header = make_header(geo)
    rec = make_step(header, 131072 + 1040, survival=density / 1.5)
    w = step_work(header, rec, None, ROWS, "t")
    rows_present = 131072 / 64
    touched = w.epoch_rows.sum(-1) / rows_present
    p = rec.survivors / rec.keys_considered
    np.testing.assert_allclose(touched, 1 - (1 - p) ** 64, atol=0.05)
