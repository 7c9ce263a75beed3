"""KV-head placement on the DReX packages is a named config choice, and head imbalance queues (issue 15, 5)."""

from __future__ import annotations

import numpy as np
import pytest

from cemsim.sim.simulate import prepare, simulate
from tests.sim.conftest import REPO, load, make_header, make_step

DREX = REPO / "hwconfigs" / "h100-drex.yaml"


def hot_head_steps(header, context: int, n: int = 2):
    """Steps where KV head 0 of every layer passes 200x the keys (about half of its keys) of the others (a busy head)."""
    out = []
    for i in range(n):
        rec = make_step(header, context, survival=0.002, step=i)
        blocks = rec.survivor_blocks.astype(np.int64)
        keys = make_step(header, context, survival=1.0, step=i).survivor_blocks  # every considered key
        blocks[:, 0] = np.minimum(blocks[:, 0] * 200, keys[:, 0])
        rec.survivor_blocks = blocks.astype(np.uint16)
        rec.survivors = blocks.sum(-1)
        rec.values_fetched = np.minimum(rec.values_fetched, rec.survivors)
        out.append(rec)
    return out


def run(placement: str, batch: int = 8):
    system = load(DREX, **{"cem.layout.kv_placement": placement, "workload.attention.k": 1024})
    header = make_header(system.geometry)
    return simulate(prepare(system, header, hot_head_steps(header, 65536), batch=batch))


@pytest.mark.parametrize(
    "placement, packages",
    [
        ("head_per_package", [[0, 1, 2], [3, 4, 5]]),  # (u * 3 + h) mod 8
        ("rotate_by_user", [[0, 1, 2], [1, 2, 3]]),
        ("user_per_package", [[0, 0, 0], [1, 1, 1]]),
    ],
)
def test_each_placement_is_one_formula(placement, packages):
    layout = load(DREX, **{"cem.layout.kv_placement": placement}).cem.layout
    assert [[layout.package_of(u, h, 3, 8) for h in range(3)] for u in range(2)] == packages


def test_a_hot_head_queues_at_one_nma_with_head_per_package():
    fixed, rotated = run("head_per_package"), run("rotate_by_user")
    # head_per_package with 8 heads on 8 packages: head 0 of all 8 users on NMA 0
    busy_fixed = [fixed.busy_s[f"nma{p}"] for p in range(8)]
    busy_rot = [rotated.busy_s[f"nma{p}"] for p in range(8)]
    assert max(busy_fixed) > 2.5 * np.median(busy_fixed)
    assert max(busy_rot) < 1.2 * np.median(busy_rot)  # each NMA serves one user's hot head
    assert sum(busy_fixed) == pytest.approx(sum(busy_rot), rel=1e-9)  # same work, placed differently
    assert fixed.latency_per_token_s > 1.3 * rotated.latency_per_token_s
    assert fixed.user_latency_s["p99"] > rotated.user_latency_s["p99"]


def test_one_user_sees_no_difference_between_head_placements():
    a, b = run("head_per_package", batch=1), run("rotate_by_user", batch=1)
    assert a.latency_per_token_s == pytest.approx(b.latency_per_token_s, rel=1e-12)
