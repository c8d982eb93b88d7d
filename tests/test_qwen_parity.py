"""Our Qwen3/Qwen2 modules against the references: transformers (CPU torch) for float checkpoints,
mlx-lm for MLX-quantized ones. Checkpoints are tiny random models in the exact HF layout, loaded
through `ominix.engine.load` like a real download."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from ominix.engine.llm.cache import make_cache
from ominix.engine.compute import UpcastLinear
from ominix.engine.load import DENSE_PREFILL_ROWS, load_model
from tests.checkpoints import build_checkpoint, build_quantized, load_reference

PROMPT = "The quick brown fox jumps over the lazy dog. 你好，世界！ def add(a, b): return a + b"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(name, **build_args) -> path; each distinct checkpoint is built once."""
    root = tmp_path_factory.mktemp("parity")
    built = {}

    def get(name, arch="qwen3", **kwargs):
        if name not in built:
            built[name] = build_checkpoint(root / name, arch, **kwargs)
        return built[name]

    return get


def prompt_ids(path) -> list[int]:
    return Tokenizer.from_file(str(path / "tokenizer.json")).encode(PROMPT).ids


def reference_logits(path, ids, dtype="float32") -> np.ndarray:
    with torch.no_grad():
        logits = load_reference(path, dtype)(torch.tensor([ids])).logits
    return logits.float().numpy()


def greedy(model, ids: list[int], steps: int, cache) -> list[int]:
    """Prefill then one token at a time through the KV cache, always taking the argmax."""
    logits = model(mx.array([ids]), cache=cache)
    out = []
    for _ in range(steps):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    return out


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize(
    "arch,style,tied",
    [("qwen3", "v5", False), ("qwen3", "v4", True), ("qwen2", "v5", True), ("qwen2", "v4", False)],
)
def test_float32_logits_match_transformers(checkpoint, arch, style, tied):
    path = checkpoint(f"{arch}-{style}-{tied}", arch, config_style=style, tied=tied)
    ids = prompt_ids(path)
    model, config = load_model(path)
    assert config["_ominix"]["compute_dtype"] == "float32"
    ours = model(mx.array([ids]))
    assert ours.shape == (1, len(ids), config["vocab_size"])
    assert relative_error(ours, reference_logits(path, ids)) < 1e-4


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 64},
    ],
    ids=lambda s: s["rope_type"],
)
@pytest.mark.parametrize("style", ["v5", "v4"])
def test_rope_scaling_matches_transformers(checkpoint, scaling, style):
    path = checkpoint(f"rope-{scaling['rope_type']}-{style}", rope_scaling=scaling,
                      config_style=style)  # fmt: skip
    ids = prompt_ids(path) * 3  # long enough to reach the scaled low-frequency dimensions
    model, _ = load_model(path)
    assert relative_error(model(mx.array([ids])), reference_logits(path, ids)) < 1e-4


@pytest.mark.parametrize("prompt_length", [8, 40])
def test_bf16_matches_transformers(checkpoint, prompt_length):
    """A 40-token prompt crosses DENSE_PREFILL_ROWS: on a CPU its Linear layers run in float32."""
    path = checkpoint("qwen3-bf16", dtype="bfloat16")
    ids = (prompt_ids(path) * 8)[:prompt_length]
    model, config = load_model(path)
    # CPU policy for an unquantized checkpoint: keep its dtype (half the memory of float32).
    assert config["_ominix"]["compute_dtype"] == "bfloat16"
    assert model.layers[0].mlp.down_proj.weight.dtype == mx.bfloat16
    assert isinstance(model.layers[0].mlp.down_proj, UpcastLinear)
    assert model.layers[0].mlp.down_proj.dense_min_rows == DENSE_PREFILL_ROWS
    ours = model(mx.array([ids])).astype(mx.float32)
    ref = reference_logits(path, ids, "bfloat16")
    exact = reference_logits(path, ids, "float32")  # same bf16 weights, float32 math
    assert relative_error(ours, ref) < 3e-2
    assert relative_error(ours, exact) < 3e-2
    # Argmax agrees wherever the top two logits are further apart than twice bf16's error (so a
    # tie within rounding noise may go either way, as it does between torch and MLX kernels).
    top2 = np.sort(exact[0], axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 0.03 * np.abs(exact).max()
    assert clear.sum() >= len(ids) // 3
    np.testing.assert_array_equal(np.argmax(np.array(ours)[0], -1)[clear],
                                  np.argmax(exact[0], -1)[clear])  # fmt: skip


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
def test_greedy_32_tokens_match_transformers_generate(checkpoint, arch):
    path = checkpoint(f"{arch}-v5-False", arch, config_style="v5", tied=False)
    ids = prompt_ids(path)
    reference = load_reference(path)
    reference.generation_config.eos_token_id = None  # generate all 32 tokens, as our loop does
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=32, min_new_tokens=32
        )[0, len(ids):].tolist()
    model, _ = load_model(path)
    assert greedy(model, ids, 32, make_cache(model)) == expected


def test_incremental_decoding_equals_full_forward(checkpoint):
    path = checkpoint("qwen3-v5-False", config_style="v5", tied=False)
    ids = prompt_ids(path)
    model, _ = load_model(path)
    full = np.array(model(mx.array([ids]))[0])

    cache = make_cache(model)
    step_by_step = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in ids]
    assert cache[0].offset == len(ids)
    assert relative_error(np.stack(step_by_step), full) < 1e-5

    # Chunked prefill: several tokens at once after a non-empty cache ("causal" must align to
    # the last key, not the first).
    cache = make_cache(model)
    chunks = [np.array(model(mx.array([ids[i:i + 5]]), cache=cache)[0])
              for i in range(0, len(ids), 5)]  # fmt: skip
    assert relative_error(np.concatenate(chunks), full) < 1e-5


# --- quantized: against mlx-lm on the same files ----------------------------------------------


def mlx_lm_model(path, dtype=None):
    from mlx.utils import tree_map
    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, _ = mlx_lm_load_model(path)
    if dtype is not None:
        cast = lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p  # noqa: E731
        model.update(tree_map(cast, model.parameters()))
    return model


@pytest.mark.parametrize(
    "arch,bits,group_size,overrides",
    [
        ("qwen3", 4, 64, None),
        ("qwen3", 8, 32, None),
        ("qwen2", 4, 32, None),
        ("qwen3", 4, 64, {"model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 32},
                          "model.layers.1.self_attn.o_proj": False}),
    ],
    ids=["qwen3-4bit-g64", "qwen3-8bit-g32", "qwen2-4bit-g32", "qwen3-per-layer-override"],
)
def test_quantized_matches_mlx_lm(checkpoint, tmp_path, arch, bits, group_size, overrides):
    src = checkpoint(f"{arch}-v5-False", arch, config_style="v5", tied=False)
    path = build_quantized(src, tmp_path / "q", bits=bits, group_size=group_size,
                           overrides=overrides)  # fmt: skip
    ids = prompt_ids(path)
    model, config = load_model(path)
    assert config["_ominix"]["compute_dtype"] == "float32"
    assert config["_ominix"]["quantization"] == {"bits": bits, "group_size": group_size}
    q_proj = model.layers[0].self_attn.q_proj
    assert q_proj.bits == bits and q_proj.group_size == group_size
    if arch == "qwen2":  # the q/k/v biases survive quantization
        assert "bias" in q_proj and float(mx.abs(q_proj.bias).max()) > 0
    if overrides:
        assert model.layers[0].mlp.down_proj.bits == 8
        assert not hasattr(model.layers[1].self_attn.o_proj, "scales")

    reference = mlx_lm_model(path)
    ours = np.array(model(mx.array([ids])))
    assert relative_error(ours, np.array(reference(mx.array([ids])))) < 1e-3
    from mlx_lm.models.cache import make_prompt_cache

    assert greedy(model, ids, 32, make_cache(model)) == greedy(
        reference, ids, 32, make_prompt_cache(reference)
    )
    # Quantization is lossy but must stay close to the float model it came from.
    float_model, _ = load_model(src)
    unquantized = np.array(float_model(mx.array([ids])))
    correlation = np.corrcoef(ours.ravel(), unquantized.ravel())[0, 1]
    assert correlation > (0.95 if bits == 4 else 0.999), correlation


@pytest.mark.parametrize("prompt_length", [8, 40])
def test_bf16_scaled_quantized_runs_float32_on_cpu(checkpoint, tmp_path, prompt_length):
    """bf16 scales (what mlx-community publishes) stay bf16 in memory and are cast to float32 at
    use by the CPU policy; the result equals mlx-lm's model on the same file cast to float32.
    A 40-token prompt crosses DENSE_PREFILL_ROWS, so it runs the dequantize + dense matmul path."""
    src = checkpoint("qwen3-bf16", dtype="bfloat16")
    path = build_quantized(src, tmp_path / "q", bits=4, group_size=64)
    ids = (prompt_ids(path) * 8)[:prompt_length]
    assert (prompt_length >= DENSE_PREFILL_ROWS) == (prompt_length == 40)
    model, config = load_model(path)
    assert config["_ominix"]["checkpoint_dtype"] == "bfloat16"
    assert config["_ominix"]["compute_dtype"] == "float32"
    q_proj = model.layers[0].self_attn.q_proj
    assert q_proj.scales.dtype == mx.bfloat16  # no extra memory for float32 copies
    assert q_proj.compute_dtype == mx.float32 and q_proj.dense_min_rows == DENSE_PREFILL_ROWS
    assert model.model.norm.weight.dtype == mx.float32
    logits = model(mx.array([ids]))
    assert logits.dtype == mx.float32
    reference = mlx_lm_model(path, mx.float32)
    assert relative_error(logits, np.array(reference(mx.array([ids])))) < 1e-3
