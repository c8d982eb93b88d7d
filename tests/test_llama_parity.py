"""Llama (`model_type: llama`) against transformers' LlamaForCausalLM on tiny random checkpoints in
the published layout: fp32 logits, every rope variant Llama checkpoints use (default, linear,
llama3, yarn) in both config spellings, attention/MLP biases, tied heads, and greedy tokens."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix.engine.llm.cache import make_cache
from ominix.engine.load import load_model
from tests.checkpoints import load_reference, to_v4_config
from tests.dense_checkpoints import VOCAB, randomize_torch

IDS = [int(i) for i in np.random.default_rng(5).integers(0, VOCAB, 40)]


def build_llama(path, *, style="v5", tied=False, rope=None, bias=False, head_dim=None, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, attention_bias=bias, mlp_bias=bias,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0, **(rope or {})},
    )  # fmt: skip
    if head_dim:
        config["head_dim"] = head_dim  # != hidden / heads (16)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    randomize_torch(model, seed)
    model.eval().save_pretrained(path, safe_serialization=True)
    if style == "v4":
        to_v4_config(path)
    return path


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - ref).max() / np.abs(ref).max())


def reference_logits(path, ids) -> np.ndarray:
    with torch.no_grad():
        return load_reference(path)(torch.tensor([ids])).logits.float().numpy()


ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
}  # fmt: skip


@pytest.mark.parametrize("rope", list(ROPES))
@pytest.mark.parametrize("style", ["v5", "v4"])
def test_logits_match_transformers(tmp_path, rope, style):
    path = build_llama(tmp_path / "m", style=style, rope=ROPES[rope], tied=style == "v4")
    if style == "v4" and rope != "default":  # the 4.x spelling really is on disk
        import json

        config = json.loads((path / "config.json").read_text())
        assert config["rope_scaling"]["type"] == rope and "rope_parameters" not in config
    model, config = load_model(path)
    assert config["model_type"] == "llama"
    assert relative_error(model(mx.array([IDS])), reference_logits(path, IDS)) < 1e-4


def test_llama3_scaling_changes_the_result(tmp_path):
    plain = reference_logits(build_llama(tmp_path / "a"), IDS)
    scaled = reference_logits(build_llama(tmp_path / "b", rope=ROPES["llama3"]), IDS)
    assert relative_error(scaled, plain) > 1e-2


def test_biases_and_explicit_head_dim(tmp_path):
    path = build_llama(tmp_path / "m", bias=True, head_dim=32)
    model, _ = load_model(path)
    assert model.layers[0].mlp.gate_proj.bias is not None
    assert relative_error(model(mx.array([IDS])), reference_logits(path, IDS)) < 1e-4


def test_greedy_tokens_match_transformers_generate(tmp_path):
    path = build_llama(tmp_path / "m", rope=ROPES["llama3"])
    reference = load_reference(path)
    reference.generation_config.eos_token_id = None
    reference.generation_config.pad_token_id = 0
    with torch.no_grad():
        # An explicit mask: generate would otherwise take token 0 in IDS for padding.
        ids = torch.tensor([IDS])
        expected = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=24, min_new_tokens=24)[0, len(IDS):].tolist()
    model, _ = load_model(path)
    cache = make_cache(model)
    logits, out = model(mx.array([IDS]), cache=cache), []
    for _ in range(24):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    assert out == expected
