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


class FakeModule:
    """A traced module's globals as NumPy arrays; ``cp.ndarray(shape, dtype, memptr)`` below views them."""

    def __init__(self, shapes: dict) -> None:
        self.arrays = {name: np.zeros(shape, np.int64) for name, shape in shapes.items()}

    def get_global(self, name: str) -> np.ndarray:
        return self.arrays[name]


class DeviceView(np.ndarray):
    def get(self) -> np.ndarray:  # cupy's device-to-host copy
        return np.array(self)


class FakeCupy:
    int64 = np.int64

    @staticmethod
    def ndarray(shape, dtype, memptr: np.ndarray) -> np.ndarray:
        assert memptr.shape == tuple(shape) and memptr.dtype == dtype
        return memptr.view(DeviceView)


class FakeGraph:
    """Each launch writes one select and one top-k row into every module, at a time that grows per launch (and
    leaves a stale row 5 from before the zeroing, as an earlier replay would)."""

    def __init__(self, mods: list) -> None:
        self.mods, self.launches = mods, 0

    def launch(self, stream) -> None:
        self.launches += 1
        for k, mod in enumerate(self.mods):
            a = mod.arrays
            a["ls_trace_select"][0, 0] = a["ls_trace_select"][0, 6] = 1000 * self.launches + k
            a["ls_trace_topk"][0, 0] = a["ls_trace_topk"][0, 9] = 1000 * self.launches + 500 + k
            if self.launches == 1:
                a["ls_trace_select"][5, 0] = 1


class FakeStream:
    def synchronize(self) -> None:
        pass


def test_replay_reads_only_the_last_replays_rows(profile_layer) -> None:
    mods = [FakeModule(profile_layer.TRACE_SHAPES) for _ in range(2)]
    graph = FakeGraph(mods)
    traces = profile_layer.replay_traced(FakeCupy, graph, mods, FakeStream(), replays=3)
    assert graph.launches == 4
    for k, (sel, top, band) in enumerate(traces):
        assert sel[:, 0].tolist() == [4000 + k]  # the stale row of the first replay was zeroed
        assert top[:, 9].tolist() == [4500 + k]
        assert len(band) == 0
