"""MiniCPM (dense, MiniCPM4 LongRoPE) and MiniCPM-SALA against references.

transformers 5.23 has no MiniCPM or MiniCPM-SALA class (only MiniCPM3, a different network), so
the float references here are NUMPY re-statements of the published modeling code's equations,
layer by layer, written independently of our MLX modules:
- MiniCPM: openbmb's modeling_minicpm.py (muP scales: embeddings * scale_emb, residual branches
  * scale_depth / sqrt(layers), hidden / (hidden_size / dim_model_base) before lm_head;
  MiniCPMLongRoPE: frequencies / short-or-long factor, cos and sin * sqrt(1 + ln s / ln orig)).
- MiniCPM-SALA: openbmb/MiniCPM-SALA as run by sglang's and vLLM's ports (the HF code calls
  fla's simple_gla): "lightning-attn" layers are a token-by-token recurrence
  S_t = exp(-slope_h) S_{t-1} + k_t^T v_t, o_t = q_t S_t / sqrt(d) after q/k RMSNorm and rope,
  then RMSNorm over all heads and a sigmoid(z_proj(x)) gate; "minicpm4" layers are softmax
  attention without rope (attn_use_rope=false) with a sigmoid(o_gate(x)) gate. The reference
  runs the recurrence literally, one token at a time; our module runs it in chunks.
MiniCPM dense is also checked against mlx-lm's `minicpm` (float and 4-bit, same files).
Not covered: InfLLM-v2 block-sparse attention past sparse_config.dense_len tokens (our SALA
keeps those layers dense at every length; see ominix/models/minicpm.py).
"""

from __future__ import annotations

import copy
import math

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.llm.cache import KVCache, RecurrentStateCache, make_cache
from ominix.engine.convert import convert
from ominix.engine.load import load_model
from tests.dense_checkpoints import VOCAB, minicpm_tensor_shapes, random_tensors, write_checkpoint

IDS = [int(i) for i in np.random.default_rng(7).integers(0, VOCAB, 40)]

MINICPM = {
    "architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "vocab_size": VOCAB,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 512, "rope_theta": 10000.0, "rope_scaling": None,
    "scale_emb": 12, "scale_depth": 1.4, "dim_model_base": 16, "tie_word_embeddings": False,
    "torch_dtype": "float32",
}  # fmt: skip

LONGROPE = {
    "rope_type": "longrope", "original_max_position_embeddings": 128,
    "short_factor": [1.0 + 0.1 * i for i in range(8)],
    "long_factor": [1.0 + 0.5 * i for i in range(8)],
}  # fmt: skip

SALA = {
    **MINICPM, "architectures": ["MiniCPMSALAForCausalLM"], "model_type": "minicpm_sala",
    "num_hidden_layers": 4, "head_dim": 16,
    "mixer_types": ["minicpm4", "lightning-attn", "lightning-attn", "minicpm4"],
    "attn_use_rope": False, "attn_use_output_gate": True, "lightning_nh": 4, "lightning_nkv": 4,
    "lightning_head_dim": 16, "lightning_scale": "1/sqrt(d)", "lightning_use_rope": True,
    "qk_norm": True, "use_output_norm": True, "use_output_gate": True,
    "sparse_config": {"block_size": 64, "dense_len": 8192, "init_blocks": 1, "kernel_size": 32,
                      "kernel_stride": 16, "topk": 64, "use_nope": False, "window_size": 2048},
}  # fmt: skip


# --- numpy reference --------------------------------------------------------------------------


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1 + np.exp(-x))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def rope_tables(config, dim, length):
    """(cos, sin) [length, dim] as modeling_minicpm.py builds them (rotate_half layout)."""
    base = config["rope_theta"]
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    magnitude, scaling = 1.0, config.get("rope_scaling")
    if scaling:
        original = scaling["original_max_position_embeddings"]
        long = config["max_position_embeddings"] > original
        inv_freq = inv_freq / np.array(scaling["long_factor" if long else "short_factor"])
        scale = config["max_position_embeddings"] / original
        magnitude = math.sqrt(1 + math.log(scale) / math.log(original))
    freqs = np.outer(np.arange(length), inv_freq)
    emb = np.concatenate([freqs, freqs], -1)
    return np.cos(emb) * magnitude, np.sin(emb) * magnitude


def apply_rope(x, cos, sin):  # x [heads, L, d]
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def softmax_attention(config, w, p, x, use_rope, gate):
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or config["hidden_size"] // heads
    L = x.shape[0]
    q = (x @ w[p + "q_proj.weight"].T).reshape(L, heads, hd).transpose(1, 0, 2)
    k = (x @ w[p + "k_proj.weight"].T).reshape(L, kv, hd).transpose(1, 0, 2)
    v = (x @ w[p + "v_proj.weight"].T).reshape(L, kv, hd).transpose(1, 0, 2)
    if use_rope:
        cos, sin = rope_tables(config, hd, L)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    scores = np.where(np.tril(np.ones((L, L), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    out = (probs / probs.sum(-1, keepdims=True)) @ v
    out = out.transpose(1, 0, 2).reshape(L, -1)
    if gate:
        out = out * sigmoid(x @ w[p + "o_gate.weight"].T)
    return out @ w[p + "o_proj.weight"].T


def slopes(n):
    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + slopes(2 * closest)[0::2][: n - closest]


def lightning_attention(config, w, p, x):
    """fla fused_recurrent_simple_gla semantics, one token at a time."""
    nh, nkv, hd = config["lightning_nh"], config["lightning_nkv"], config["lightning_head_dim"]
    eps, L = config["rms_norm_eps"], x.shape[0]
    q = (x @ w[p + "q_proj.weight"].T).reshape(L, nh, hd)
    k = (x @ w[p + "k_proj.weight"].T).reshape(L, nkv, hd)
    v = (x @ w[p + "v_proj.weight"].T).reshape(L, nkv, hd)
    q, k = rms_norm(q, w[p + "q_norm.weight"], eps), rms_norm(k, w[p + "k_norm.weight"], eps)
    q, k, v = (t.transpose(1, 0, 2) for t in (q, k, v))
    cos, sin = rope_tables(config, hd, L)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
    gamma = np.exp(-np.array(slopes(nh)))[:, None, None]
    state = np.zeros((nh, hd, hd))
    out = np.zeros((nh, L, hd))
    for t in range(L):
        state = gamma * state + k[:, t, :, None] * v[:, t, None, :]
        out[:, t] = np.einsum("hd,hde->he", q[:, t] / math.sqrt(hd), state)
    out = out.transpose(1, 0, 2).reshape(L, -1)
    out = rms_norm(out, w[p + "o_norm.weight"], eps) * sigmoid(x @ w[p + "z_proj.weight"].T)
    return out @ w[p + "o_proj.weight"].T


def reference_logits(config, w, ids):
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n, eps = config["num_hidden_layers"], config["rms_norm_eps"]
    mixers = config.get("mixer_types") or ["minicpm4"] * n
    scale = config["scale_depth"] / math.sqrt(n)
    h = w["model.embed_tokens.weight"][ids] * config["scale_emb"]
    for i, mixer in enumerate(mixers):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        if mixer == "lightning-attn":
            r = lightning_attention(config, w, p + "self_attn.", x)
        else:
            r = softmax_attention(config, w, p + "self_attn.", x,
                                  config.get("attn_use_rope", True),
                                  config.get("attn_use_output_gate", False))  # fmt: skip
        h = h + r * scale
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        m = (silu(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T))
        h = h + (m @ w[p + "mlp.down_proj.weight"].T) * scale
    h = rms_norm(h, w["model.norm.weight"], eps)
    h = h / (config["hidden_size"] / config["dim_model_base"])
    head = w["model.embed_tokens.weight"] if config["tie_word_embeddings"] else w["lm_head.weight"]
    return h @ head.T


# --- helpers ----------------------------------------------------------------------------------


def make(tmp_path, name, config, seed=0):
    tensors = random_tensors(minicpm_tensor_shapes(config), seed)
    return write_checkpoint(tmp_path / name, config, tensors), tensors


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max())


def greedy(model, ids, steps, cache):
    logits = model(mx.array([ids]), cache=cache)
    out = []
    for _ in range(steps):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    return out


def v5(config):
    """The same config in transformers 5.x spelling (rope_parameters)."""
    config = copy.deepcopy(config)
    scaling = config.pop("rope_scaling") or {"rope_type": "default"}
    config["rope_parameters"] = {"rope_theta": config.pop("rope_theta"), **scaling}
    config["dtype"] = config.pop("torch_dtype")
    return config


# --- MiniCPM dense ----------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("spelling", ["v4", "v5"])
@pytest.mark.parametrize("longrope", [None, "long", "short"])
def test_minicpm_matches_numpy_reference(tmp_path, tied, spelling, longrope):
    """LongRoPE "long": max_position_embeddings 512 > original 128, so the long factors and a
    magnitude sqrt(1 + ln 4 / ln 128) apply; "short": original = 512 (MiniCPM4-8B's case)."""
    config = {**MINICPM, "tie_word_embeddings": tied}
    if longrope:
        original = 128 if longrope == "long" else 512
        config["rope_scaling"] = {**LONGROPE, "original_max_position_embeddings": original}
    path, tensors = make(tmp_path, "m", config if spelling == "v4" else v5(config))
    model, _ = load_model(path)
    ours = model(mx.array([IDS]))
    assert relative_error(ours, reference_logits(config, tensors, IDS)) < 1e-4
    if longrope:  # the factors matter: plain rope gives other logits
        plain = reference_logits({**config, "rope_scaling": None}, tensors, IDS)
        assert relative_error(ours, plain) > 1e-3


def test_minicpm_greedy_matches_numpy_reference(tmp_path):
    path, tensors = make(tmp_path, "m", MINICPM)
    model, _ = load_model(path)
    expected, ids = [], list(IDS[:12])
    for _ in range(32):
        expected.append(int(np.argmax(reference_logits(MINICPM, tensors, ids)[-1])))
        ids.append(expected[-1])
    assert greedy(model, IDS[:12], 32, make_cache(model)) == expected


@pytest.mark.parametrize("bits,group_size", [(4, 64), (8, 32)])
def test_minicpm_quantized_matches_mlx_lm(tmp_path, bits, group_size):
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load_model as mlx_lm_load_model

    src, _ = make(tmp_path, "m", MINICPM)
    path = convert(src, tmp_path / "q", quantize=True, bits=bits, group_size=group_size)
    model, config = load_model(path)
    assert model.layers[0].self_attn.q_proj.bits == bits
    reference, _ = mlx_lm_load_model(path)
    ours = np.array(model(mx.array([IDS])))
    assert relative_error(ours, np.array(reference(mx.array([IDS])))) < 1e-3
    assert greedy(model, IDS, 32, make_cache(model)) == greedy(
        reference, IDS, 32, make_prompt_cache(reference))


def test_minicpm_float_matches_mlx_lm(tmp_path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    path, _ = make(tmp_path, "m", MINICPM)
    model, _ = load_model(path)
    reference, _ = mlx_lm_load_model(path)
    assert relative_error(model(mx.array([IDS])), np.array(reference(mx.array([IDS])))) < 1e-5


# --- MiniCPM-SALA -----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["v4", "v5"])
def test_sala_matches_numpy_reference(tmp_path, spelling):
    path, tensors = make(tmp_path, "s", SALA if spelling == "v4" else v5(SALA))
    model, _ = load_model(path)
    assert [layer.mixer for layer in model.layers] == SALA["mixer_types"]
    assert "o_gate" in model.layers[0].self_attn and model.layers[0].self_attn.rope is None
    ids = IDS * 4  # 160 tokens: several lightning chunks of 64, the last one partial
    ref = reference_logits(SALA, tensors, ids)
    assert relative_error(model(mx.array([ids])), ref) < 1e-4


def test_sala_grouped_lightning_heads(tmp_path):
    """lightning_nkv < lightning_nh: keys and values are shared by groups of heads."""
    config = {**SALA, "lightning_nkv": 2}
    path, tensors = make(tmp_path, "s", config)
    model, _ = load_model(path)
    assert relative_error(model(mx.array([IDS])), reference_logits(config, tensors, IDS)) < 1e-4


def test_sala_caches_and_incremental_decoding(tmp_path):
    path, tensors = make(tmp_path, "s", SALA)
    model, _ = load_model(path)
    ids = IDS * 2
    full = np.array(model(mx.array([ids]))[0])

    cache = make_cache(model)
    assert [type(c) for c in cache] == [KVCache, RecurrentStateCache, RecurrentStateCache, KVCache]
    steps = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in ids]
    assert relative_error(np.stack(steps), full) < 1e-5
    assert all(c.offset == len(ids) for c in cache)
    assert cache[1].state[0].shape == (1, 4, 16, 16)  # constant-size state, whatever the length

    cache = make_cache(model)  # chunked prefill, chunks straddling the 64-token lightning chunks
    chunks = [np.array(model(mx.array([ids[i:i + 70]]), cache=cache)[0])
              for i in range(0, len(ids), 70)]  # fmt: skip
    assert relative_error(np.concatenate(chunks), full) < 1e-5


def test_sala_greedy_matches_numpy_reference(tmp_path):
    path, tensors = make(tmp_path, "s", SALA)
    model, _ = load_model(path)
    expected, ids = [], list(IDS[:12])
    for _ in range(32):
        expected.append(int(np.argmax(reference_logits(SALA, tensors, ids)[-1])))
        ids.append(expected[-1])
    assert greedy(model, IDS[:12], 32, make_cache(model)) == expected


def test_sala_8bit_quantized_close_to_float(tmp_path):
    """The catalog checkpoint is 8-bit MLX: o_gate and z_proj quantize like the rest."""
    src, _ = make(tmp_path, "s", SALA)
    path = convert(src, tmp_path / "q", quantize=True, bits=8, group_size=64)
    model, _ = load_model(path)
    assert model.layers[1].self_attn.z_proj.bits == 8
    assert model.layers[0].self_attn.o_gate.bits == 8
    float_model, _ = load_model(src)
    ours, exact = np.array(model(mx.array([IDS]))), np.array(float_model(mx.array([IDS])))
    assert np.corrcoef(ours.ravel(), exact.ravel())[0, 1] > 0.999


def test_bad_sala_configs_are_refused(tmp_path):
    import json

    from ominix.engine.load import LoadError

    for bad, message in [({"mixer_types": ["minicpm4"]}, "mixer_types lists 1 layers"),
                         ({"mixer_types": ["minicpm4", "mamba", "minicpm4", "minicpm4"]},
                          "unknown mixer type"),
                         ({"lightning_scale": "1/d^2"},
                          "unsupported lightning_scale")]:  # fmt: skip
        path, _ = make(tmp_path, f"bad{len(message)}", SALA)
        (path / "config.json").write_text(json.dumps({**SALA, **bad}))
        with pytest.raises(LoadError, match=message):
            load_model(path)
