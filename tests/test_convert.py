"""`ominix convert`: HF checkpoint -> MLX checkpoint (cast or quantized) that both OminiX and
mlx-lm load, written atomically."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from ominix.cli import app
from ominix.engine.convert import ConvertError, convert
from ominix.engine.load import LoadError, load_model
from tests.checkpoints import build_checkpoint

IDS = [[3, 141, 59, 26, 535, 89, 79, 32, 384]]
SIDE_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json"}  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("src") / "qwen2", "qwen2", seed=5)


def logits(model) -> np.ndarray:
    return np.array(model(mx.array(IDS)).astype(mx.float32))


def test_cast_to_bf16_is_loadable_by_mlx_lm(source, tmp_path):
    import mlx_lm

    dst = convert(source, tmp_path / "bf16", dtype="bfloat16")
    names = {p.name for p in dst.iterdir()}
    assert {"model.safetensors", "model.safetensors.index.json", "config.json"} <= names
    assert SIDE_FILES <= names
    config = json.loads((dst / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and "quantization" not in config
    # Both rope spellings, so loaders that read only one get the real theta.
    assert config["rope_theta"] == 10000.0 and config["rope_parameters"]["rope_theta"] == 10000.0

    ours, ours_config = load_model(dst)
    assert ours_config["_ominix"]["checkpoint_dtype"] == "bfloat16"
    assert ours.model.embed_tokens.weight.dtype == mx.bfloat16
    theirs, tokenizer = mlx_lm.load(str(dst))
    assert tokenizer.encode("Hello world")
    np.testing.assert_allclose(logits(ours), logits(theirs), atol=1e-2 * np.abs(logits(ours)).max())
    # A lossy cast, but of the same model.
    original, _ = load_model(source)
    assert np.abs(logits(ours) - logits(original)).max() < 0.05 * np.abs(logits(original)).max()


def test_quantized_sharded_output(source, tmp_path):
    import mlx_lm

    dst = convert(source, tmp_path / "q8", quantize=True, bits=8, group_size=32,
                  max_shard_bytes=40_000)  # fmt: skip
    shards = sorted(p.name for p in dst.glob("*.safetensors"))
    count = len(shards)
    assert count > 2 and shards[0] == f"model-00001-of-{count:05d}.safetensors"
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert "model.layers.0.self_attn.q_proj.scales" in index["weight_map"]
    assert "model.layers.0.self_attn.q_proj.bias" in index["weight_map"]  # qwen2 biases kept
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 8, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]

    ours, _ = load_model(dst)
    theirs, _ = mlx_lm.load(str(dst))
    np.testing.assert_allclose(logits(ours), logits(theirs), atol=1e-3 * np.abs(logits(ours)).max())


def test_per_layer_override_is_recorded(source, tmp_path):
    overrides = {"model.layers.1.mlp.down_proj": {"bits": 8}, "lm_head": False}
    dst = convert(source, tmp_path / "mixed", quantize=True, bits=4, group_size=64,
                  overrides=overrides)  # fmt: skip
    quantization = json.loads((dst / "config.json").read_text())["quantization"]
    assert quantization["model.layers.1.mlp.down_proj"] == {"bits": 8, "group_size": 64}
    assert quantization["lm_head"] is False
    model, _ = load_model(dst)
    assert model.layers[1].mlp.down_proj.bits == 8 and model.layers[0].mlp.down_proj.bits == 4
    assert model.lm_head.weight.dtype == mx.float32 and "scales" not in model.lm_head


def test_refuses_non_empty_destination(source, tmp_path):
    dst = tmp_path / "taken"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="already exists and is not empty"):
        convert(source, dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (convert(source, empty) / "model.safetensors").is_file()


def test_refuses_bad_options_and_quantized_source(source, tmp_path):
    with pytest.raises(ConvertError, match=r"unsupported quantization bits=7 \(requested\)"):
        convert(source, tmp_path / "a", quantize=True, bits=7)
    with pytest.raises(LoadError, match="unsupported dtype 'float8'"):
        convert(source, tmp_path / "b", dtype="float8")
    quantized = convert(source, tmp_path / "q", quantize=True)
    with pytest.raises(ConvertError, match="is already quantized"):
        convert(quantized, tmp_path / "c", quantize=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_failure_midway_leaves_nothing(source, tmp_path, disk_full_on_second_write):
    calls = disk_full_on_second_write
    with pytest.raises(OSError, match="No space left"):
        convert(source, tmp_path / "out", max_shard_bytes=40_000)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither DST nor the temporary directory


def test_cli_convert(source, tmp_path):
    runner = CliRunner()
    dst = tmp_path / "cli-q4"
    result = runner.invoke(app, ["convert", str(source), str(dst), "-q", "--bits", "4",
                                 "--group-size", "32", "--dtype", "float32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    model, _ = load_model(dst)
    assert model.layers[0].self_attn.q_proj.group_size == 32

    result = runner.invoke(app, ["convert", str(source), str(dst)])
    assert result.exit_code == 1
    assert f"error: {dst} already exists and is not empty" in result.output
    result = runner.invoke(app, ["convert", str(tmp_path / "missing"), str(tmp_path / "x")])
    assert result.exit_code == 1 and "is not a directory" in result.output
