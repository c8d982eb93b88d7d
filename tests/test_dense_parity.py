"""Mistral and GLM-4 (`glm4`, `glm`, `chatglm` layouts) against the references: transformers
(CPU torch) for float checkpoints, mlx-lm for MLX-quantized ones (mistral runs as mlx-lm's llama;
mlx-lm has glm and glm4). The chatglm layout has no reference class of its own: it is the `glm`
network under THUDM's names, so a chatglm checkpoint written from a `glm` one must give the
`glm` reference's logits. Sliding windows are checked against transformers' Mistral with
`sliding_window` set, which masks keys more than `window - 1` positions back."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch

from ominix.engine.llm.cache import KVCache, RotatingKVCache, make_cache
from ominix.engine.convert import convert
from ominix.engine.load import load_model
from tests.checkpoints import load_reference
from tests.dense_checkpoints import VOCAB, build_hf, glm_to_chatglm

IDS = [int(i) for i in np.random.default_rng(3).integers(0, VOCAB, 30)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(arch, **build_args) -> path; each distinct checkpoint is built once."""
    root = tmp_path_factory.mktemp("dense")
    built = {}

    def get(arch, **kwargs):
        key = f"{arch}-" + "-".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        if key not in built:
            built[key] = build_hf(root / key, arch, **kwargs)
        return built[key]

    return get


def reference_logits(path, ids) -> np.ndarray:
    with torch.no_grad():
        return load_reference(path)(torch.tensor([ids])).logits.float().numpy()


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - ref).max() / np.abs(ref).max())


def greedy(model, ids, steps, cache) -> list[int]:
    logits = model(mx.array([ids]), cache=cache)
    out = []
    for _ in range(steps):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    return out


def mlx_lm_model(path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    return mlx_lm_load_model(path)[0]


ARCHS = [("mistral", {}), ("mistral", {"window": 8}), ("glm", {}), ("glm4", {})]
ARCH_IDS = ["mistral", "mistral-window8", "glm", "glm4"]


@pytest.mark.parametrize("arch,extra", ARCHS, ids=ARCH_IDS)
@pytest.mark.parametrize("style,tied", [("v5", False), ("v4", True)])
def test_float32_logits_match_transformers(checkpoint, arch, extra, style, tied):
    path = checkpoint(arch, style=style, tied=tied, **extra)
    model, config = load_model(path)
    assert config["_ominix"]["compute_dtype"] == "float32"
    ours = model(mx.array([IDS]))
    assert ours.shape == (1, len(IDS), VOCAB)
    assert relative_error(ours, reference_logits(path, IDS)) < 1e-4


def test_sliding_window_changes_the_result(checkpoint):
    """The window test above is only meaningful if the window masks something here."""
    windowed, full = checkpoint("mistral", window=8), checkpoint("mistral")
    assert relative_error(reference_logits(windowed, IDS), reference_logits(full, IDS)) > 1e-2


def test_chatglm_layout_equals_glm_reference(checkpoint, tmp_path):
    src = checkpoint("glm")
    path = glm_to_chatglm(src, tmp_path / "chatglm")
    model, config = load_model(path)
    assert config["model_type"] == "chatglm"
    assert model.args.num_key_value_heads == 2 and model.args.rope_theta == 10000.0
    assert relative_error(model(mx.array([IDS])), reference_logits(src, IDS)) < 1e-4


@pytest.mark.parametrize("arch,extra", ARCHS, ids=ARCH_IDS)
def test_greedy_32_tokens_match_transformers_generate(checkpoint, arch, extra):
    path = checkpoint(arch, **extra)
    reference = load_reference(path)
    reference.generation_config.eos_token_id = None
    reference.generation_config.pad_token_id = 0
    with torch.no_grad():
        expected = reference.generate(torch.tensor([IDS]), do_sample=False, max_new_tokens=32,
                                      min_new_tokens=32)[0, len(IDS):].tolist()  # fmt: skip
    model, _ = load_model(path)
    assert greedy(model, IDS, 32, make_cache(model)) == expected


@pytest.mark.parametrize("arch,extra", ARCHS, ids=ARCH_IDS)
def test_incremental_and_chunked_decoding_equal_full_forward(checkpoint, arch, extra):
    path = checkpoint(arch, **extra)
    model, _ = load_model(path)
    full = np.array(model(mx.array([IDS]))[0])
    cache_type = RotatingKVCache if extra.get("window") else KVCache
    cache = make_cache(model)
    assert all(type(c) is cache_type for c in cache)
    steps = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in IDS]
    assert relative_error(np.stack(steps), full) < 1e-5
    assert cache[0].offset == len(IDS)
    if extra.get("window"):  # the rotating cache holds only what the window still needs
        assert cache[0].state[0].shape[2] == extra["window"] - 1
    for size in (5, 11):  # chunks smaller and larger than the window, after a non-empty cache
        cache = make_cache(model)
        chunks = [np.array(model(mx.array([IDS[i:i + size]]), cache=cache)[0])
                  for i in range(0, len(IDS), size)]  # fmt: skip
        assert relative_error(np.concatenate(chunks), full) < 1e-5


def test_sliding_window_decoding_matches_transformers_past_the_window(checkpoint):
    """Prefill longer than the window, then token by token: logits equal transformers' full
    forward with the sliding window at every position."""
    path = checkpoint("mistral", window=8)
    ids = IDS + IDS[:6]
    ref = reference_logits(path, ids)[0]
    model, _ = load_model(path)
    cache = make_cache(model)
    ours = [np.array(model(mx.array([ids[:20]]), cache=cache)[0])]
    ours += [np.array(model(mx.array([[t]]), cache=cache)[0]) for t in ids[20:]]
    assert relative_error(np.concatenate(ours), ref) < 1e-4


# mlx-lm runs mistral as llama, which ignores sliding_window, so the windowless one is compared;
# its glm4 reads only the 4.x spelling (top-level partial_rotary_factor), as mlx-community's
# configs have it. Its `glm` rotates all of head_dim where transformers' Glm (and the original
# chatglm code) rotate half, so it is no reference for `glm`; a quantized `glm` is compared with
# its float model below and with the chatglm layout in the next test.
@pytest.mark.parametrize("arch", ["mistral", "glm4"])
def test_4bit_matches_mlx_lm(checkpoint, tmp_path, arch):
    from mlx_lm.models.cache import make_prompt_cache

    src = checkpoint(arch, style="v4")
    path = convert(src, tmp_path / "q", quantize=True, bits=4, group_size=64)
    model, config = load_model(path)
    assert config["_ominix"]["quantization"] == {"bits": 4, "group_size": 64}
    assert model.layers[0].self_attn.q_proj.bits == 4
    reference = mlx_lm_model(path)
    ours = np.array(model(mx.array([IDS])))
    assert relative_error(ours, np.array(reference(mx.array([IDS])))) < 1e-3
    assert greedy(model, IDS, 32, make_cache(model)) == greedy(
        reference, IDS, 32, make_prompt_cache(reference))
    unquantized = np.array(load_model(src)[0](mx.array([IDS])))
    # 4-bit over 64-wide random weights is lossy but must stay close to its float model.
    assert np.corrcoef(ours.ravel(), unquantized.ravel())[0, 1] > 0.9


def test_4bit_glm_and_chatglm_layout(checkpoint, tmp_path):
    """A quantized `glm` stays close to its float model; mlx-community's chatglm checkpoints keep
    the fused query_key_value quantized, and splitting its packed rows (weight, scales, biases,
    bias) gives exactly the model of the same quantization in `glm` names."""
    src = checkpoint("glm")
    quantized_glm = convert(src, tmp_path / "q", quantize=True, bits=4, group_size=64)
    glm_model, _ = load_model(quantized_glm)
    expected = np.array(glm_model(mx.array([IDS])))
    exact = np.array(load_model(src)[0](mx.array([IDS])))
    assert np.corrcoef(expected.ravel(), exact.ravel())[0, 1] > 0.9
    path = glm_to_chatglm(quantized_glm, tmp_path / "chatglm-4bit")
    model, _ = load_model(path)
    assert model.layers[0].self_attn.k_proj.bits == 4
    np.testing.assert_array_equal(np.array(model(mx.array([IDS]))), expected)


def test_rotating_cache_mask_and_memory():
    cache = RotatingKVCache(4)
    k = mx.arange(6, dtype=mx.float32).reshape(1, 1, 6, 1)
    mask = cache.make_mask(6)
    keys, _ = cache.update_and_fetch(k, k)
    assert keys.shape[2] == 6 and cache.offset == 6
    expected = np.array([[j <= i and i - j < 4 for j in range(6)] for i in range(6)])
    np.testing.assert_array_equal(np.array(mask), expected)
    assert np.array(cache.state[0]).ravel().tolist() == [3.0, 4.0, 5.0]
    mask = cache.make_mask(2)  # two new tokens at positions 6, 7 over kept 3, 4, 5
    assert np.array(mask).tolist() == [[True, True, True, True, False],
                                       [False, True, True, True, True]]  # fmt: skip
    assert cache.make_mask(1) is None
    with pytest.raises(ValueError, match="sliding window"):
        RotatingKVCache(0)
