"""Checkpoint loading: shards, lazy loading, the dtype policy, and one precise error per kind of
broken checkpoint."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ominix.engine.load import LoadError, compute_dtype, load, load_model
from tests.checkpoints import build_checkpoint, build_quantized

IDS = [[3, 141, 59, 26, 535, 89, 79, 32, 384]]


@pytest.fixture(scope="module")
def float32_checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("f32") / "qwen3", "qwen3", seed=3)


@pytest.fixture
def broken(float32_checkpoint, tmp_path):
    """A private copy of the float32 checkpoint for a test to damage."""
    return shutil.copytree(float32_checkpoint, tmp_path / "copy")


def logits(model) -> np.ndarray:
    return np.array(model(mx.array(IDS)))


def load_error(path, **kwargs) -> str:
    with pytest.raises(LoadError) as info:
        load_model(path, **kwargs)
    return str(info.value)


def edit_config(path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


# --- what loads -------------------------------------------------------------------------------


def test_sharded_checkpoint_equals_single_file(float32_checkpoint, tmp_path):
    sharded = build_checkpoint(tmp_path / "sharded", "qwen3", seed=3, max_shard_size="100KB")
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    model, _ = load_model(sharded)
    single, _ = load_model(float32_checkpoint)
    np.testing.assert_array_equal(logits(model), logits(single))


def test_lazy_load_gives_the_same_model(float32_checkpoint):
    lazy, _ = load_model(float32_checkpoint, lazy=True)
    eager, _ = load_model(float32_checkpoint)
    np.testing.assert_array_equal(logits(lazy), logits(eager))


def test_load_returns_model_and_tokenizer(float32_checkpoint):
    model, tokenizer = load(float32_checkpoint)
    ids = tokenizer.encode("Hello world")
    assert ids and max(ids) < model.args.vocab_size
    assert model(mx.array([ids])).shape == (1, len(ids), model.args.vocab_size)


def test_tokenizer_larger_than_vocab_is_refused(broken):
    edit_config(broken, vocab_size=600)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors = load_file(broken / "model.safetensors")
        tensors[name] = tensors[name][:600]
        save_file(tensors, broken / "model.safetensors")
    with pytest.raises(LoadError, match="tokenizer has 640 tokens but the model's vocab_size is 600"):
        load(broken)


# --- dtype policy -----------------------------------------------------------------------------


def test_compute_dtype_policy():
    bf16 = {"model_type": "qwen3", "torch_dtype": "bfloat16"}
    quantized = {**bf16, "quantization": {"bits": 4, "group_size": 64}}
    gpu = mx.Device(mx.DeviceType.gpu, 0)
    assert compute_dtype(quantized, mx.cpu) == mx.float32
    assert compute_dtype(quantized, gpu) == mx.bfloat16
    assert compute_dtype(bf16, mx.cpu) == mx.bfloat16
    assert compute_dtype(bf16, gpu) == mx.bfloat16
    assert compute_dtype({"dtype": "float16"}, mx.cpu) == mx.float16  # 5.x key
    assert compute_dtype({"_ominix": {"checkpoint_dtype": "float32"}, "dtype": "bfloat16"},
                         mx.cpu) == mx.float32  # fmt: skip  (measured tensors beat the label)


def test_dtype_override_argument_and_environment(float32_checkpoint, monkeypatch):
    model, config = load_model(float32_checkpoint, dtype="bfloat16")
    assert config["_ominix"]["compute_dtype"] == "bfloat16"
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16
    assert model(mx.array(IDS)).dtype == mx.bfloat16

    monkeypatch.setenv("OMINIX_DTYPE", "float16")
    model, config = load_model(float32_checkpoint)
    assert config["_ominix"]["compute_dtype"] == "float16"
    assert model.layers[0].self_attn.q_norm.weight.dtype == mx.float16

    monkeypatch.setenv("OMINIX_DTYPE", "int8")
    assert "unsupported dtype 'int8'" in load_error(float32_checkpoint)


# --- errors -----------------------------------------------------------------------------------


def test_missing_config(broken):
    (broken / "config.json").unlink()
    assert load_error(broken) == f"{broken / 'config.json'} not found: not a model checkpoint directory"


def test_not_a_directory(tmp_path):
    assert load_error(tmp_path / "nope") == f"{tmp_path / 'nope'} is not a directory"


def test_unknown_model_type(broken):
    edit_config(broken, model_type="llama9")
    message = load_error(broken)
    assert "model_type 'llama9' is not supported" in message
    assert "qwen2" in message and "qwen3" in message


def test_config_missing_required_field(broken):
    config = json.loads((broken / "config.json").read_text())
    del config["hidden_size"]
    (broken / "config.json").write_text(json.dumps(config))
    assert "does not describe a valid qwen3 model" in load_error(broken)
    assert "hidden_size" in load_error(broken)


def test_no_weights(broken):
    (broken / "model.safetensors").unlink()
    assert load_error(broken).startswith("no model.safetensors or model.safetensors.index.json")


def test_missing_shard(tmp_path):
    path = build_checkpoint(tmp_path / "sharded", "qwen3", seed=3, max_shard_size="100KB")
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    message = load_error(path)
    assert message.startswith(f"missing shard {shard.name}")


def test_truncated_safetensors(broken):
    file = broken / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 1000])
    message = load_error(broken)
    assert message.startswith(f"{file} is truncated")
    assert f"the file has {len(data) - 1000}" in message


def test_corrupt_safetensors_header(broken):
    file = broken / "model.safetensors"
    file.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)
    assert load_error(broken).startswith(f"{file} is not a valid safetensors file")


def test_wrong_tensor_shape(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((100, 64), np.float32)
    save_file(tensors, broken / "model.safetensors")
    assert load_error(broken) == (
        "tensor model.layers.1.mlp.up_proj.weight in model.safetensors has shape (100, 64), "
        "expected (128, 64)"
    )


def test_missing_weights(broken):
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.0.self_attn.k_norm.weight"]
    save_file(tensors, broken / "model.safetensors")
    assert load_error(broken) == (
        "checkpoint is missing 1 weight(s): model.layers.0.self_attn.k_norm.weight"
    )


def test_unused_weights(broken):
    tensors = load_file(broken / "model.safetensors")
    tensors["model.layers.0.mlp.extra.weight"] = np.zeros((2, 2), np.float32)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(8, np.float32)  # dropped
    save_file(tensors, broken / "model.safetensors")
    assert load_error(broken) == (
        "checkpoint has 1 weight(s) the model does not use: model.layers.0.mlp.extra.weight"
    )


def test_quantization_errors(float32_checkpoint, tmp_path):
    path = build_quantized(float32_checkpoint, tmp_path / "q4", bits=4, group_size=64)
    edit_config(path, quantization={"bits": 7, "group_size": 64})
    assert load_error(path) == (
        "unsupported quantization bits=7 (quantization); supported: (2, 3, 4, 5, 6, 8)"
    )
    edit_config(path, quantization={"bits": 4, "group_size": 64,
                                    "model.layers.0.mlp.up_proj": {"group_size": 48}})  # fmt: skip
    assert "unsupported quantization group_size=48 (model.layers.0.mlp.up_proj)" in load_error(path)
    # Config says 8 bits but the packed tensors hold 4: the shape check names the tensor.
    edit_config(path, quantization={"bits": 8, "group_size": 64})
    message = load_error(path)
    assert message.startswith("tensor model.embed_tokens.weight in model.safetensors has shape")
    assert message.endswith("(quantization bits/group_size in config.json may not match)")

    config = json.loads((path / "config.json").read_text())
    del config["quantization"]
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (path / "config.json").write_text(json.dumps(config))
    assert load_error(path).startswith("quantization method 'awq' is not supported")


# --- config against the weight files ------------------------------------------------------------


@pytest.mark.parametrize("layers", [1_000_000_000, 3, 1])
def test_layer_count_disagreeing_with_the_weights_is_refused_before_building(broken, layers):
    import resource
    import time

    edit_config(broken, num_hidden_layers=layers)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    message = load_error(broken)
    assert message == (f"config.json says num_hidden_layers is {layers}, but the weights hold 2 layers "
                       "(model.layers.0 to model.layers.1)")
    assert time.monotonic() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing built

