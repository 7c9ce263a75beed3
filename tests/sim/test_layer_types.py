"""Local/global models on the simulator: a CEM device holds and serves only the global layers (Gemma 3).

Runs the shipped real Gemma 3 270M capture (traces/gemma3-270m-32752.parquet, layers 5, 11, 17 global,
15 sliding layers of 512 keys) on hwconfigs/h100-drex.yaml with workload.model = gemma3-270m."""

from __future__ import annotations

import dataclasses

import pytest

from cemsim.errors import CemsimError
from cemsim.sim.simulate import prepare, simulate
from cemsim.trace.format import TraceReader
from tests.sim.conftest import REPO, load

TRACE = REPO / "traces" / "gemma3-270m-32752.parquet"
DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def _prepared(**overrides):
    system = load(DREX, **{"workload.model": "gemma3-270m", **overrides})
    with TraceReader(TRACE) as r:
        header, steps = r.header, list(r.iter_steps())[:2]
    return system, header, prepare(system, header, steps)


def test_capacity_counts_global_layers_on_the_device_and_local_ones_in_hbm():
    system, header, prep = _prepared()
    ctx = 32753  # the first decode step's context
    assert prep.context == ctx
    kv_token_layer = 2 * 256 * 2  # K and V, one KV head of 256, bf16
    sign = 256 // 8
    # Hand calculation: 3 global layers hold every token (KV + sign bits) on DReX ...
    assert prep.fit.memory["cem"]["need"] == 3 * ctx * (kv_token_layer + sign)
    # ... and HBM holds the weights, the global layers' window + sinks and the 15 local layers' 512 tokens.
    weights = system.geometry.weight_params() * 2
    want_hbm = weights + (1024 + 16) * 3 * kv_token_layer + 15 * 512 * kv_token_layer
    assert prep.fit.memory["gpu.hbm"]["need"] == want_hbm
    assert prep.sizes.local_layers == frozenset(header.sliding_layers)


def test_device_serves_only_global_layers():
    _, _, prep = _prepared()
    res = simulate(prep, steps=2)
    # Per decode step to the device: one request per global layer and KV head (the group's 4 query vectors
    # of 256 x 2 B) and the new token's K and V for the 3 global layers only (1,024 B each). With every
    # layer on the device it would be 18 x (2,048 + 1,024) = 55,296 B.
    assert res.bytes_moved["link.to_device"] == 3 * 4 * 256 * 2 + 3 * 2 * 256 * 2
    # The local layers' window reads come from HBM: 15 layers x 512 tokens x 1,024 B beyond the weights,
    # the global layers' window + sinks (3 x 1,040 x 1,024 B) and what the GPU reads for each survivor batch.
    assert res.bytes_moved["gpu.hbm"] > 15 * 512 * 1024 + 3 * 1040 * 1024


def test_mismatched_layer_types_are_a_clear_error():
    system = load(DREX, **{"workload.model": "gemma3-270m"})
    with TraceReader(TRACE) as r:
        header, steps = r.header, list(r.iter_steps())[:1]
    wrong = dataclasses.replace(header, layer_types=["full"] * 18, local_window=None)
    with pytest.raises(CemsimError, match="sliding-window layers"):
        prepare(system, wrong, steps)
