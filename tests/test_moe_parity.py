"""Mixture-of-experts modules (qwen3_moe, mixtral, glm4_moe) against the references:
transformers for float checkpoints, mlx-lm for MLX-quantized ones, plus the catalog entries'
real config.json files (tests/data/configs) instantiated at tiny scale through the loader."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten, tree_map
from tokenizers import Tokenizer

from ominix.engine.llm.cache import make_cache
from ominix.engine.convert import convert, save_weights
from ominix.engine.load import LoadError, load_model, read_weights
from ominix.models import get_architecture
from ominix.models.moe import QuantizedSwitchLinear, SwitchGLU
from tests.checkpoints import load_reference
from tests.moe_checkpoints import ARCHS, build_moe_checkpoint

PROMPT = "The quick brown fox jumps over the lazy dog. 你好，世界！ def add(a, b): return a+b"
CONFIGS = Path(__file__).parent / "data" / "configs"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(arch, **build_args) -> path; each distinct checkpoint is built once."""
    root = tmp_path_factory.mktemp("moe")
    built = {}

    def get(arch, **kwargs):
        name = arch + "".join(f"-{k}={v}" for k, v in sorted(kwargs.items()))
        if name not in built:
            built[name] = build_moe_checkpoint(root / name, arch, **kwargs)
        return built[name]

    return get


def prompt_ids(path) -> list[int]:
    ids = Tokenizer.from_file(str(path / "tokenizer.json")).encode(PROMPT).ids
    assert len(ids) * 2 >= SwitchGLU.sort_threshold  # a prefill takes the sorted expert path
    return ids


def reference_logits(path, ids) -> np.ndarray:
    with torch.no_grad():
        return load_reference(path)(torch.tensor([ids])).logits.float().numpy()


def greedy(model, ids: list[int], steps: int, cache) -> list[int]:
    logits = model(mx.array([ids]), cache=cache)
    out = []
    for _ in range(steps):
        token = mx.argmax(logits[:, -1, :], axis=-1)
        out.append(token.item())
        logits = model(token[:, None], cache=cache)
    return out


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float32) - ref).max() / np.abs(ref).max())


def mlx_lm_model(path, dtype=None):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, _ = mlx_lm_load_model(Path(path))
    if dtype is not None:
        cast = lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p  # noqa: E731
        model.update(tree_map(cast, model.parameters()))
    return model


def router_at_8_bits(path) -> dict:
    """The router layers that convert keeps at 8 bits (as mlx-lm's converter does for qwen3_moe):
    a 4-bit router flips expert choices. GLM's router is never quantized."""
    config = json.loads((Path(path) / "config.json").read_text())
    block = {"qwen3_moe": "mlp", "mixtral": "block_sparse_moe"}.get(config["model_type"])
    if block is None:
        return {}
    spec = {"bits": 8, "group_size": 64}
    layers = range(config["num_hidden_layers"])
    return {f"model.layers.{i}.{block}.gate": spec for i in layers
            if i not in config.get("mlp_only_layers", [])}  # fmt: skip


def switch_layers(model) -> list:
    return [m for _, m in model.named_modules() if isinstance(m, SwitchGLU)]


# --- float: against transformers --------------------------------------------------------------


@pytest.mark.parametrize("style", ["v5", "v4"])
@pytest.mark.parametrize("arch", ARCHS)
def test_float32_logits_match_transformers(checkpoint, arch, style):
    path = checkpoint(arch, config_style=style)
    config = json.loads((path / "config.json").read_text())
    spelled = {"v5": ("rope_parameters", "num_local_experts"), "v4": ("rope_theta", "num_experts")}
    assert spelled[style][0] in config
    if arch == "qwen3_moe":  # transformers 5 writes num_local_experts; 4.x wrote num_experts
        assert spelled[style][1] in config
    ids = prompt_ids(path)
    model, loaded = load_model(path)
    assert loaded["_ominix"]["compute_dtype"] == "float32"
    assert switch_layers(model), "experts must be stacked into switch layers"
    ours = model(mx.array([ids]))
    assert relative_error(ours, reference_logits(path, ids)) < 1e-4


def test_structural_options_are_read(checkpoint):
    qwen, _ = load_model(checkpoint("qwen3_moe", config_style="v4"))
    assert [type(layer.mlp).__name__ for layer in qwen.layers] == ["SparseMoeBlock", "MLP",
                                                                    "SparseMoeBlock"]  # fmt: skip
    assert qwen.args.num_experts == 8 and qwen.args.norm_topk_prob
    glm, _ = load_model(checkpoint("glm4_moe", config_style="v5", mtp=True))
    assert type(glm.layers[0].mlp).__name__ == "MLP"
    assert glm.layers[1].self_attn.rope.dims == 8  # partial_rotary_factor 0.25 of head_dim 32
    assert "bias" in glm.layers[1].self_attn.q_proj and "bias" not in glm.layers[1].self_attn.o_proj
    assert glm.layers[1].self_attn.use_qk_norm
    assert len(glm.layers) == 3  # the multi-token-prediction layer was dropped


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_32_tokens_match_transformers_generate(checkpoint, arch):
    path = checkpoint(arch, config_style="v5")
    ids = prompt_ids(path)
    reference = load_reference(path)
    reference.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = reference.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=32, min_new_tokens=32
        )[0, len(ids):].tolist()
    model, _ = load_model(path)
    assert greedy(model, ids, 32, make_cache(model)) == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_incremental_decoding_equals_full_forward(checkpoint, arch):
    """Token-by-token decoding (unsorted expert path) equals one full forward (sorted path)."""
    model, _ = load_model(checkpoint(arch, config_style="v5"))
    ids = prompt_ids(checkpoint(arch, config_style="v5"))
    full = np.array(model(mx.array([ids]))[0])
    cache = make_cache(model)
    step_by_step = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in ids]
    assert cache[0].offset == len(ids)
    assert relative_error(np.stack(step_by_step), full) < 1e-5
    cache = make_cache(model)
    chunks = [np.array(model(mx.array([ids[i:i + 7]]), cache=cache)[0])
              for i in range(0, len(ids), 7)]  # fmt: skip
    assert relative_error(np.concatenate(chunks), full) < 1e-5


def test_mixtral_sliding_window_matches_transformers(checkpoint):
    path = checkpoint("mixtral", config_style="v5", sliding_window=8)
    ids = prompt_ids(path)
    model, _ = load_model(path)
    full = np.array(model(mx.array([ids])))
    assert relative_error(full, reference_logits(path, ids)) < 1e-4
    # Beyond the window, the result must differ from unwindowed attention on the same weights.
    model.model.sliding_window = None
    assert relative_error(np.array(model(mx.array([ids]))), full) > 1e-3
    model.model.sliding_window = 8
    cache = make_cache(model)
    steps = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in ids]
    assert relative_error(np.stack(steps), full[0]) < 1e-5


def test_fused_expert_layout_loads(checkpoint, tmp_path):
    """transformers 5's fused `experts.gate_up_proj` / `experts.down_proj` tensors."""
    src = checkpoint("qwen3_moe", config_style="v5")
    weights, _ = read_weights(src)
    for layer in (0, 2):
        prefix = f"model.layers.{layer}.mlp.experts"
        gate_up = [mx.concatenate([weights.pop(f"{prefix}.{e}.gate_proj.weight"),
                                   weights.pop(f"{prefix}.{e}.up_proj.weight")])
                   for e in range(8)]  # fmt: skip
        weights[f"{prefix}.gate_up_proj"] = mx.stack(gate_up)
        down = [weights.pop(f"{prefix}.{e}.down_proj.weight") for e in range(8)]
        weights[f"{prefix}.down_proj"] = mx.stack(down)
    fused = tmp_path / "fused"
    fused.mkdir()
    mx.save_safetensors(str(fused / "model.safetensors"), weights)
    (fused / "config.json").write_text((src / "config.json").read_text())
    ids = prompt_ids(src)
    model, _ = load_model(fused)
    expected, _ = load_model(src)
    np.testing.assert_array_equal(np.array(model(mx.array([ids]))),
                                  np.array(expected(mx.array([ids]))))  # fmt: skip


def test_incomplete_experts_are_a_load_error(checkpoint, tmp_path):
    src = checkpoint("mixtral", config_style="v5")
    weights, _ = read_weights(src)
    del weights["model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    broken = tmp_path / "broken"
    broken.mkdir()
    mx.save_safetensors(str(broken / "model.safetensors"), weights)
    (broken / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(LoadError, match="model.layers.1.block_sparse_moe.switch_mlp.down_proj"):
        load_model(broken)


# --- quantized: against mlx-lm on the same files ----------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_matches_mlx_lm(checkpoint, tmp_path, arch):
    # mlx-lm's glm4_moe zeroes (rather than -inf) the scores of dropped expert groups, which
    # differs from transformers only when a kept group's biased scores are negative; a positive
    # router bias keeps both references in agreement.
    shift = 1.0 if arch == "glm4_moe" else 0.0
    src = checkpoint(arch, config_style="v4", router_bias_shift=shift)  # mlx-lm reads 4.x keys
    # No overrides passed: the architecture itself keeps its Linear routers at 8 bits.
    path = convert(src, tmp_path / "q", quantize=True, bits=4, group_size=64)
    written = json.loads((path / "config.json").read_text())["quantization"]
    for layer, spec in router_at_8_bits(src).items():
        assert written[layer] == {**spec, "mode": "affine"} or written[layer] == spec
    ids = prompt_ids(path)
    model, config = load_model(path)
    assert config["_ominix"]["quantization"] == {"bits": 4, "group_size": 64}
    for switch in switch_layers(model):
        for proj in (switch.gate_proj, switch.up_proj, switch.down_proj):
            assert isinstance(proj, QuantizedSwitchLinear) and proj.bits == 4
    reference = mlx_lm_model(path)
    ours = np.array(model(mx.array([ids])))
    assert relative_error(ours, np.array(reference(mx.array([ids])))) < 1e-3
    from mlx_lm.models.cache import make_prompt_cache

    assert greedy(model, ids, 32, make_cache(model)) == greedy(
        reference, ids, 32, make_prompt_cache(reference)
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_8bit_quantized_stays_close_to_float(checkpoint, tmp_path, arch):
    """Quantization must stay close to the float model. At 4 bits these tiny random MoEs drift
    (correlation 0.84-0.95: a changed expert choice changes the whole token's output), so the
    closeness is checked at 8 bits, where routing nearly always survives (0.98-0.9997)."""
    src = checkpoint(arch, config_style="v4")
    path = convert(src, tmp_path / "q8", quantize=True, bits=8, group_size=32)
    ids = mx.array([prompt_ids(src)])
    quantized = np.array(load_model(path)[0](ids))
    unquantized = np.array(load_model(src)[0](ids))
    assert np.corrcoef(quantized.ravel(), unquantized.ravel())[0, 1] > 0.97


def test_per_expert_quantized_mixtral_loads(checkpoint, tmp_path):
    """Early mlx-community Mixtral conversions store each expert quantized on its own
    (`experts.N.w1.weight/scales/biases`); they load into the same stacked switch layer."""
    src = checkpoint("mixtral", config_style="v4")
    stacked = convert(src, tmp_path / "stacked", quantize=True, bits=4, group_size=64)
    weights, _ = read_weights(stacked)
    for name in [n for n in weights if ".switch_mlp." in n]:
        prefix, rest = name.split(".switch_mlp.")
        proj, kind = rest.split(".")
        hf = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}[proj]
        for e, tensor in enumerate(weights.pop(name)):
            weights[f"{prefix}.experts.{e}.{hf}.{kind}"] = tensor
    per_expert = tmp_path / "per-expert"
    per_expert.mkdir()
    save_weights(per_expert, weights, 2**30, lambda _: None)
    (per_expert / "config.json").write_text((stacked / "config.json").read_text())
    ids = prompt_ids(src)
    np.testing.assert_array_equal(np.array(load_model(per_expert)[0](mx.array([ids]))),
                                  np.array(load_model(stacked)[0](mx.array([ids]))))  # fmt: skip


def test_bf16_scaled_quantized_runs_float32_on_cpu(checkpoint, tmp_path):
    """bf16 scales (what mlx-community publishes) stay bf16 in memory and the CPU policy computes
    with them cast to float32 at use."""
    src = checkpoint("qwen3_moe", config_style="v4", dtype="bfloat16")
    path = convert(src, tmp_path / "q", quantize=True, bits=4, group_size=64)
    model, config = load_model(path)
    assert config["_ominix"]["checkpoint_dtype"] == "bfloat16"
    assert config["_ominix"]["compute_dtype"] == "float32"
    gate_proj = switch_layers(model)[0].gate_proj
    assert gate_proj.scales.dtype == mx.bfloat16 and gate_proj.compute_dtype == mx.float32
    ids = prompt_ids(path)
    logits = model(mx.array([ids]))
    assert logits.dtype == mx.float32
    reference = mlx_lm_model(path, mx.float32)
    assert relative_error(logits, np.array(reference(mx.array([ids])))) < 1e-3


# --- catalog entries: the real config.json, shrunk ----------------------------------------------

# entry id -> (published total parameters in billions, without GLM's prediction layer)
CATALOG = {
    "qwen3-235b-moe": 235.09,
    "mixtral-8x7b": 46.70,
    "mixtral-8x22b": 140.63,
    "glm4-moe-9b": 106.85,
}


def shrink(config: dict) -> dict:
    """The same architecture with every structural option kept, at test scale: 64 wide, 4/2
    heads, the real expert count cut to 16 (top-k kept when it fits), tiny vocabulary."""
    small = dict(config)
    small.update(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, vocab_size=640,
                 intermediate_size=128)  # fmt: skip
    if "head_dim" in config:
        small["head_dim"] = 32
    if "moe_intermediate_size" in config:
        small["moe_intermediate_size"] = 64  # a whole quantization group
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if key in config:
            small[key] = min(config[key], 16)
    small["num_hidden_layers"] = config.get("first_k_dense_replace", 0) + 2
    return small


def random_weights(model) -> dict:
    keys = iter(mx.random.split(mx.random.key(0), len(tree_flatten(model.parameters()))))
    weights = {}
    for name, p in tree_flatten(model.parameters()):
        scale = 0.2 if "norm" in name else p.shape[-1] ** -0.5
        weights[name] = (1.0 if "norm" in name else 0.0) + scale * mx.random.normal(
            p.shape, key=next(keys)
        )
    return weights


@pytest.mark.parametrize("entry", sorted(CATALOG))
def test_catalog_config_builds_full_size_shapes(entry):
    """At full size (lazy, nothing allocated) the module tree has the published parameter count,
    so every dimension and layer-type rule is read correctly from the real config."""
    config = json.loads((CONFIGS / f"{entry}.json").read_text())
    arch = get_architecture(config["model_type"])
    model = arch.Model(arch.ModelArgs.from_dict(config))
    total = sum(p.size for _, p in tree_flatten(model.parameters())) / 1e9
    assert total == pytest.approx(CATALOG[entry], rel=1e-3)


@pytest.mark.parametrize("entry", sorted(CATALOG))
def test_catalog_config_loads_tiny_float_and_quantized(entry, tmp_path):
    config = shrink(json.loads((CONFIGS / f"{entry}.json").read_text()))
    quantization = config.pop("quantization")
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    arch = get_architecture(config["model_type"])
    model = arch.Model(arch.ModelArgs.from_dict(config))
    float_dir = tmp_path / "float"
    float_dir.mkdir()
    save_weights(float_dir, random_weights(model), 2**30, lambda _: None)
    (float_dir / "config.json").write_text(json.dumps(config))

    ids = mx.array([[3, 14, 15, 92, 65, 35, 89, 79, 323, 84, 626, 43, 38, 327, 95, 288, 419]])
    float_model, _ = load_model(float_dir)
    expected = np.array(float_model(ids))
    assert expected.shape == (1, ids.shape[1], 640) and np.isfinite(expected).all()

    q_dir = convert(float_dir, tmp_path / "q", quantize=True, bits=quantization["bits"],
                    group_size=quantization["group_size"])  # fmt: skip
    q_model, q_config = load_model(q_dir)
    assert q_config["_ominix"]["quantization"] == quantization
    assert all(isinstance(s.down_proj, QuantizedSwitchLinear) for s in switch_layers(q_model))
    got = np.array(q_model(ids))
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.5  # same model, 4-bit noise
