"""The held-out projection test (cemsim.trace.holdout) on the shipped Gemma 3 270M captures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cemsim.trace.format import TraceReader
from cemsim.trace.holdout import holdout

T = Path(__file__).resolve().parents[2] / "traces"
G = [T / f"gemma3-270m-{n}.parquet" for n in (4096, 8192, 16384)]


def test_real_side_matches_the_trace_and_in_sample_fit_is_close():
    out = holdout(G[:2], [G[1], G[2]])
    in_sample, held_out = out["tests"]
    df = TraceReader(G[1]).to_pandas()
    full = df[df.layer.isin([5, 11, 17])]
    want = full.groupby("layer").survivors.mean().to_numpy()
    assert np.allclose(in_sample["real_survivors"], want, atol=0.05)
    assert in_sample["heads"] == [[5, 0], [11, 0], [17, 0]]
    # In sample the law must land near its own data; held out it is an honest test (docs/projection.md).
    assert abs(in_sample["total_rel_err"]) < 0.3
    assert held_out["context"] > 16384 and len(held_out["z"]) == 3
    fr = held_out["filter_ratio_real"]
    kc = TraceReader(G[2]).to_pandas()
    kc = kc[kc.layer.isin([5, 11, 17])]
    assert abs(fr - kc.keys_considered.sum() / kc.survivors.sum()) < 1e-9
