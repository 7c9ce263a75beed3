"""The thresholds files shipped in traces/thresholds/ load for the bundled model and keep their budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from cemsim.attention.thresholds import load_thresholds

SHIPPED = sorted((Path(__file__).parents[2] / "traces" / "thresholds").glob("*.json"))


def test_both_8k_tunes_ship():
    assert {p.name for p in SHIPPED} >= {"smollm2-8k-w1024-itq.json", "smollm2-8k-w1024-no-itq.json"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_thresholds_load_and_fit_their_budget(path: Path):
    tf = load_thresholds(path, layers=30, kv_heads=3, head_dim=64)  # SmolLM2-135M geometry
    prov = tf.provenance
    assert tf.model == "smollm2-135m" and tf.itq == ("no-itq" not in path.name)
    assert (prov["tokens"], prov["window"], prov["k"]) == (8192, 1024, 256)
    assert prov["ppl_sparse"] <= prov["ppl_dense"] * (1 + prov["ppl_budget"])
    # The kept setting is the bisection's last evaluation under budget; the next move's was over it.
    evals = {int(n): e["ppl"] for n, e in prov["evaluations"].items()}
    kept = prov["moves_accepted"]
    assert evals[kept] == prov["ppl_sparse"]
    over = [n for n in evals if n > kept]
    assert over and evals[min(over)] > prov["ppl_dense"] * (1 + prov["ppl_budget"])
    assert tf.thresholds.min() >= 0 and tf.thresholds.max() <= 65
