"""On the bundled SmolLM2-135M (converted once into the cache): integration of policies, runner, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cemsim.attention.itq import train_all
from cemsim.attention.model_loader import load_model
from cemsim.attention.policies import DecodeRecord, PolicyConfig
from cemsim.attention.runner import capture_qk, new_state, perplexity, run_decode, token_nll
from cemsim.attention.text import load_text, token_ids
from cemsim.cli import main
from cemsim.errors import CemsimError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def lm():
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def ids(lm):
    return token_ids(lm.tokenizer, load_text(), 192)


def test_geometry(lm):
    assert (lm.num_layers, lm.num_heads, lm.num_kv_heads, lm.head_dim) == (30, 9, 3, 64)


@torch.inference_mode()
def test_no_filter_equals_stock_model(lm, ids):
    x = torch.tensor([ids])
    stock = lm.model(x).logits[0]
    cfg = PolicyConfig(kind="longsight", window=32, sinks=4, k=len(ids), thresholds=np.zeros((30, 3), int))
    st = new_state(lm, cfg)
    sparse = lm.model(x, cemsim_state=st).logits[0]
    torch.testing.assert_close(sparse, stock, atol=2e-3, rtol=1e-4)
    assert st.stats[0].considered.sum() > 0


def test_filtering_changes_perplexity_a_little(lm, ids):
    dense = perplexity(token_nll(lm, ids))
    assert 2 < dense < 60  # ordinary English-ish text
    cfg = PolicyConfig(kind="longsight", window=64, sinks=4, k=32, thresholds=np.full((30, 3), 36))
    st = new_state(lm, cfg, total_positions=len(ids))
    sparse = perplexity(token_nll(lm, ids, st))
    cons = sum(s.considered.sum() for s in st.stats)
    surv = sum(s.survivors.sum() for s in st.stats)
    assert surv < cons  # the filter removed keys
    assert sparse != dense and abs(sparse / dense - 1) < 0.5


def test_decode_observer_records(lm, ids):
    recs: list[DecodeRecord] = []
    cfg = PolicyConfig(kind="longsight", window=64, sinks=4, k=8, thresholds=np.full((30, 3), 34))
    run = run_decode(lm, ids[:160], steps=3, config=cfg, observer=recs.append)
    assert len(run.generated) == 4
    assert len(recs) == 3 * 30 * 3
    assert [(r.step, r.layer, r.kv_head) for r in recs[:4]] == [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)]
    for r in recs:
        assert r.context == 161 + r.step
        assert r.considered == r.context - 64 - 4
        assert r.survivors.dtype == np.int32 and len(r.survivors) <= r.considered
        assert len(r.topk) == 3 and all(len(t) <= 8 and set(t) <= set(r.survivors) for t in r.topk)
        assert (r.window, r.sinks) == (64, 4)


def test_itq_on_real_keys_reduces_loss(lm, ids):
    keys, queries = capture_qk(lm, ids[:128])
    assert keys.shape == (30, 3, 128, 64) and queries.shape == (30, 9, 128, 64)
    rot = train_all(keys[:4], queries[:4], iters=8)
    assert (rot.losses[..., -1] < rot.losses[..., 0]).all()


def test_bad_model_paths(tmp_path):
    with pytest.raises(CemsimError, match="neither"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CemsimError, match="Llama"):
        load_model(str(tmp_path / "gpt"))


@pytest.mark.parametrize("command", ["eval", "tune"])
def test_bad_device_is_one_clear_error(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--device", "tpu", "--tokens", "512"])
    assert exc.value.code == 1 and "--device must be cpu or cuda" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(CemsimError, match="no CUDA GPU"):
            load_model("smollm2-135m", device="cuda")


def test_eval_and_tune_cli(tmp_path, capsys):
    main(
        [
            "eval",
            "--tokens",
            "200",
            "--window",
            "48",
            "--sinks",
            "4",
            "--threshold",
            "35",
            "--no-itq",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    for key in ("ppl_dense", "ppl_sparse", "filter_ratio", "kv_load_reduction", "backend", "topk_recall"):
        assert key in out
    assert out["backend"] == "numba" and out["filter_ratio"] > 1 and len(out["filter_ratio_per_head"]) == 30
    th = tmp_path / "th.json"
    main(
        [
            "tune",
            "--tokens",
            "200",
            "--window",
            "48",
            "--sinks",
            "4",
            "--no-itq",
            "--max-evals",
            "2",
            "--ppl-budget",
            "0.05",
            "--out",
            str(th),
        ]
    )
    data = json.loads(th.read_text())
    assert np.asarray(data["thresholds"]).shape == (30, 3)
    prov = data["provenance"]
    assert prov["ppl_sparse"] <= prov["ppl_dense"] * 1.05 + 1e-9
    main(
        [
            "eval",
            "--tokens",
            "200",
            "--window",
            "48",
            "--sinks",
            "4",
            "--thresholds",
            str(th),
            "--no-itq",
            "--json",
        ]
    )
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["ppl_sparse"] == pytest.approx(prov["ppl_sparse"], rel=1e-6)
