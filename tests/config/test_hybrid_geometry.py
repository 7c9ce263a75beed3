"""Local/global hybrid geometries (Gemma 3): layer types, KV bytes with capped local layers, presets."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cemsim.config.loader import geometry_from_hf_config, resolve_geometry
from cemsim.config.workload import ModelGeometry

BASE = dict(name="t", layers=6, hidden=64, q_heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=100)


def test_presets_match_published_parameter_counts():
    """Gemma 3 report (arXiv:2503.19786) Table 1: 27B has 1,416M embedding and 25,600M non-embedding
    parameters; the 270M model card: about 170M embedding and 100M transformer parameters."""
    g27 = resolve_geometry("gemma3-27b")
    emb = g27.vocab * g27.hidden
    assert emb == pytest.approx(1_416e6, rel=0.01)
    assert g27.weight_params() - emb == pytest.approx(25_600e6, rel=0.01)
    g270 = resolve_geometry("gemma3-270m")
    emb = g270.vocab * g270.hidden
    assert emb == pytest.approx(170e6, rel=0.02)
    assert g270.weight_params() - emb == pytest.approx(100e6, rel=0.02)


def test_preset_layer_types():
    g = resolve_geometry("gemma3-270m")
    assert [i for i, t in enumerate(g.layer_types) if t == "full"] == [5, 11, 17]
    assert (g.global_layers, g.local_layers, g.local_window) == (3, 15, 512)
    g27 = resolve_geometry("gemma3-27b")
    assert (g27.global_layers, g27.local_layers, g27.local_window) == (10, 52, 1024)
    assert resolve_geometry("llama3-8b").layer_types is None
    assert resolve_geometry("llama3-8b").global_layers == 32


def test_kv_bytes_caps_local_layers_at_their_window():
    g = ModelGeometry(**BASE, layer_types="pattern-3", local_window=8)
    assert g.layer_types == ("sliding", "sliding", "full") * 2
    per = 2 * 2 * 16 * 2  # K and V, 2 KV heads, D 16, bf16
    assert g.kv_bytes_split(100, 2) == (2 * per * 100, 4 * per * 8)
    assert g.kv_bytes_split(5, 2) == (2 * per * 5, 4 * per * 5)
    assert g.kv_bytes(100, 2) == 2 * per * 100 + 4 * per * 8
    plain = ModelGeometry(**BASE)
    assert plain.kv_bytes(100, 2) == plain.kv_bytes_per_token(2) * 100


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"layer_types": ["full"] * 5}, "5 entries for 6 layers"),
        ({"layer_types": "pattern-2"}, "need local_window"),
        ({"layer_types": ["sliding"] * 6, "local_window": 4}, "no full-attention layer"),
        ({"layer_types": "every-2", "local_window": 4}, "pattern-N"),
        ({"layer_types": ["full"] * 5 + ["chunked"]}, "layer_types"),
    ],
)
def test_bad_layer_types(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        ModelGeometry(**BASE, **kw)


def test_hf_config_with_layer_types_and_text_config(tmp_path):
    text = {
        "num_hidden_layers": 6,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": 128,
        "vocab_size": 100,
        "sliding_window": 8,
        "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
    }
    p = tmp_path / "config.json"
    p.write_text(json.dumps(text))
    g = geometry_from_hf_config(p)
    assert g.layer_types == ("sliding",) * 5 + ("full",) and g.local_window == 8
    old = {k: v for k, v in text.items() if k != "layer_types"} | {"sliding_window_pattern": 3}
    p.write_text(json.dumps({"model_type": "gemma3", "text_config": old}))
    g = geometry_from_hf_config(p)
    assert g.layer_types == ("sliding", "sliding", "full") * 2
