"""The GPU benchmark's serving step computes what Hugging Face's Llama computes (CPU, small geometry), and its byte
counts match the model presets: the step that was timed on the H200 is the real decode step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from cemsim.config.loader import resolve_geometry

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "decode_baselines.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("decode_baselines", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.DEV = "cpu"
    return mod


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-1b"])
def test_geometries_are_the_model_presets(bench, name: str) -> None:
    g, m = bench.GEOMETRIES[name], resolve_geometry(name)
    assert (g["layers"], g["hidden"], g["q_heads"], g["kv_heads"]) == (
        m.layers,
        m.hidden,
        m.q_heads,
        m.kv_heads,
    )
    assert (g["head_dim"], g["intermediate"], g["vocab"]) == (m.head_dim, m.intermediate, m.vocab)
    assert g["tied_embeddings"] == m.tied_embeddings


def test_weight_bytes_of_llama3_8b(bench) -> None:
    # 8.03 B parameters, of which the embedding table (525 M) is not read by a decode step: 7.50 B x 2 bytes
    counts = bench.step_counts(bench.GEOMETRIES["llama3-8b"], 4096, 1)
    assert counts["weight_bytes"] == 15_009_316_864
    assert counts["kv_bytes"] == 32 * 2 * 8 * 4096 * 128 * 2


def test_serving_step_gives_hf_greedy_tokens(bench) -> None:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    g = dict(bench.GEOMETRIES["llama3-1b"])
    g.update(layers=2, hidden=128, intermediate=256, vocab=1000, head_dim=16, q_heads=8, kv_heads=2)
    hf = bench.hf_model(g)
    batch, ctx = 3, 40
    cache = bench.filled_cache(g, ctx, batch)
    sm = bench.ServingModel.__new__(bench.ServingModel)  # share HF's weights instead of drawing new ones
    sm.g = g
    sm.layers = [
        {
            "ln1": layer.input_layernorm.weight.data,
            "wqkv": torch.cat(
                [layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight, layer.self_attn.v_proj.weight]
            ).data,
            "wo": layer.self_attn.o_proj.weight.data,
            "ln2": layer.post_attention_layernorm.weight.data,
            "wgu": torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).data,
            "wd": layer.mlp.down_proj.weight.data,
        }
        for layer in hf.model.layers
    ]
    sm.embed, sm.head, sm.norm = (
        hf.model.embed_tokens.weight.data,
        hf.lm_head.weight.data,
        hf.model.norm.weight.data,
    )
    d = g["head_dim"]
    sm.inv_freq = 1.0 / (g["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    step, caches = sm.step_fn(ctx, batch)
    for layer, (kc, vc) in enumerate(caches):
        kc[:, :, :ctx] = cache.layers[layer].keys
        vc[:, :, :ctx] = cache.layers[layer].values
    ids = next(
        c
        for c in step.__closure__
        if isinstance(c.cell_contents, torch.Tensor)
        and c.cell_contents.dtype == torch.long
        and c.cell_contents.shape == (batch,)
    )
    with torch.inference_mode():
        ref = hf(
            input_ids=ids.cell_contents[:, None],
            past_key_values=cache,
            position_ids=torch.full((batch, 1), ctx),
            use_cache=True,
        )
        got = step()
    assert torch.equal(got, ref.logits[:, -1].argmax(-1))
    # and the new token's K/V landed at position ctx, as HF's cache appended them
    assert torch.allclose(caches[0][0][:, :, ctx].float(), cache.layers[0].keys[:, :, ctx].float(), atol=1e-2)
