"""profile_layer.py's per-layer spans of a traced graph of layers (--graph-layers), on trace arrays written by
hand: each layer's select and top-k extents from its own module's rows, the fan pair's second block counted in the
top-k's end, and the gap from one layer's last top-k block to the next layer's first select block."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

GPU_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


@pytest.fixture(scope="module")
def profile_layer():
    sys.path.insert(0, str(GPU_BENCH))
    try:
        import profile_layer

        yield profile_layer
    finally:
        sys.path.remove(str(GPU_BENCH))


def layer(profile_layer, sel_start, sel_end, topk_start, rank0_end, rank1_end, band_counted):
    shapes = profile_layer.TRACE_SHAPES
    sel = np.zeros(shapes["ls_trace_select"], np.int64)[:2]
    sel[:, 0], sel[:, 6] = sel_start, sel_end
    top = np.zeros(shapes["ls_trace_topk"], np.int64)[:2]
    top[:, 0], top[:, 9], top[:, 14] = topk_start, rank0_end, rank1_end
    band = np.zeros(shapes["ls_trace_band"], np.int64)[:2]
    band[:, 0], band[:, 1] = 1, band_counted
    return sel, top, band


def test_layers_line_up_on_the_first_select_block(profile_layer) -> None:
    t = 1_000_000
    first = layer(profile_layer, [t, t + 100], [t + 9_000, t + 14_000], [t + 15_000] * 2, [t + 26_000, t + 27_000],
                  [t + 29_500, t + 28_000], [t + 23_000, t + 24_000])  # fmt: skip
    second = layer(profile_layer, [t + 31_000, t + 31_050], [t + 40_000, t + 45_000], [t + 46_000] * 2,
                   [t + 57_000, t + 58_000], [0, t + 59_000], [t + 54_000, t + 55_000])  # fmt: skip
    spans = profile_layer.layer_spans([first, second])
    assert spans[0]["select_ns"] == [0.0, 14_000.0]
    assert spans[0]["topk_ns"] == [15_000.0, 29_500.0]  # rank 1 ended last
    assert spans[0]["topk_rank0_end_ns"] == 27_000.0
    assert spans[0]["band_counted_ns"] == 24_000.0
    assert "gap_from_previous_ns" not in spans[0]
    assert spans[1]["select_ns"] == [31_000.0, 45_000.0]
    assert spans[1]["gap_from_previous_ns"] == 1_500.0
    assert spans[1]["topk_ns"] == [46_000.0, 59_000.0]  # a rank-1 column left at 0 (no pair) is not an end
