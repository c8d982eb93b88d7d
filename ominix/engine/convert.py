"""Hugging Face checkpoint (bf16/fp16/fp32 safetensors) -> MLX checkpoint, cast or quantized.
(Image pipelines, diffusers folders with model_index.json, go to engine/image/convert.py.)

The output uses mlx-community's layout, so mlx-lm loads it too: `model.safetensors` or
`model-0000X-of-0000N.safetensors` shards plus `model.safetensors.index.json`, and config.json with
a `quantization` block (repeated as `quantization_config`). Tokenizer, chat template and
generation config files are copied. Everything is written to a temporary directory next to DST
and renamed into place at the end, so DST is either complete or absent.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ominix.engine.audio.ct2 import convert_ct2, is_ct2_whisper
from ominix.hub.files import written_whole
from ominix.kinds import is_image_pipeline
from ominix.engine.load import (
    INDEX_FILE,
    LoadError,
    quant_params,
    build_model,
    cast_floats,
    checkpoint_float_dtype,
    dtype_name,
    parse_dtype,
    read_config,
    read_weights,
)
from ominix.models.layers import read_rope_config

MAX_SHARD_BYTES = 5 * 2**30
# Weight formats we never copy: the converted safetensors replace them.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


class ConvertError(Exception):
    """The conversion cannot run (bad destination, bad options, already-quantized source)."""


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    quantize: bool = False,
    bits: int = 4,
    group_size: int = 64,
    dtype: str | None = None,
    overrides: dict[str, dict | bool] | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Convert checkpoint directory `src` into new directory `dst`; returns dst.

    dtype: float16 | bfloat16 | float32 for the floating tensors (default: the source's).
    quantize: MLX affine quantization of every Linear/Embedding whose input size divides
    group_size; `overrides` maps a layer path to {"bits", "group_size"} or False (keep float).
    """
    src, dst = Path(src), Path(dst)
    if is_image_pipeline(src):  # a diffusers image pipeline (or an mflux pack): a folder per component
        from ominix.engine.image.convert import convert_pipeline

        return convert_pipeline(src, dst, quantize=quantize, bits=bits, group_size=group_size,
                                dtype=dtype, max_shard_bytes=max_shard_bytes, log=log)  # fmt: skip
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConvertError(f"{dst} already exists and is not empty; choose a new directory")
    if is_ct2_whisper(src):  # a CTranslate2 (faster-whisper) Whisper: unpack its model.bin first
        if not quantize and dtype is None:
            return convert_ct2(src, dst, log)
        with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
            unpacked = convert_ct2(src, Path(tmp) / "unpacked", log)
            return convert(unpacked, dst, quantize=quantize, bits=bits, group_size=group_size,
                           dtype=dtype, overrides=overrides, max_shard_bytes=max_shard_bytes, log=log)
    config = read_config(src)
    if config.get("quantization") or config.get("quantization_config"):
        raise ConvertError(f"{src} is already quantized; convert from the float checkpoint")
    try:
        default = quant_params({"bits": bits, "group_size": group_size}, "requested")
        overrides = {
            path: quant_params({**default, **spec}, path) if isinstance(spec, dict) else spec
            for path, spec in (overrides or {}).items()
        }
    except LoadError as e:
        raise ConvertError(str(e)) from None

    weights, origin = read_weights(src)
    target = parse_dtype(dtype) if dtype else checkpoint_float_dtype(weights)
    log(f"loading {src} ({config.get('model_type')}), casting to {dtype_name(target)}")
    model = build_model(config, weights, origin)
    del weights
    cast_floats(model, target)

    out_config = with_both_rope_spellings({k: v for k, v in config.items() if k != "_ominix"})
    for key in ("torch_dtype", "dtype"):
        if key in out_config or (key == "torch_dtype" and "dtype" not in out_config):
            out_config[key] = dtype_name(target)
    if quantize:
        out_config["quantization"] = quantize_model(model, default, overrides)
        out_config["quantization_config"] = out_config["quantization"]
        log(f"quantized to {bits} bits, group size {group_size}")

    with written_whole(dst) as tmp:
        save_weights(tmp, dict(tree_flatten(model.parameters())), max_shard_bytes, log)
        (tmp / "config.json").write_text(json.dumps(out_config, indent=2) + "\n")
        copy_side_files(src, tmp)
    log(f"wrote {dst}")
    return dst


def with_both_rope_spellings(config: dict) -> dict:
    """Add 4.x `rope_theta`/`rope_scaling` next to 5.x `rope_parameters` (or the reverse) so
    loaders that read only one spelling (e.g. mlx-lm's qwen2, which otherwise falls back to
    rope_theta=1e6) still see the right values."""
    theta, scaling = read_rope_config(config)
    config.setdefault("rope_theta", theta)
    if scaling is not None:
        config.setdefault("rope_scaling", scaling)
    rope_parameters = {"rope_theta": theta, "rope_type": "default", **(scaling or {})}
    config.setdefault("rope_parameters", rope_parameters)
    return config


def quantize_model(model: nn.Module, default: dict, overrides: dict) -> dict:
    """Quantize in place; returns the config.json `quantization` block describing it."""
    block = {"group_size": default["group_size"], "bits": default["bits"], "mode": "affine"}
    # An architecture may ask for more precision on some layers (e.g. MoE routers at 8 bits:
    # at 4 bits a router picks different experts). The user's overrides still win.
    model_override = getattr(model, "quantization_override", lambda path: None)

    def predicate(path: str, module: nn.Module):
        spec = overrides[path] if path in overrides else model_override(path)
        if spec is not None:
            block[path] = dict(spec) if spec else False
            return block[path]
        if not hasattr(module, "to_quantized"):
            return False
        # Affine quantization works on whole groups of the input dimension.
        return module.weight.shape[-1] % default["group_size"] == 0

    nn.quantize(model, group_size=default["group_size"], bits=default["bits"],
                class_predicate=predicate)  # fmt: skip
    return block


def save_weights(
    out: Path, weights: dict[str, mx.array], max_shard_bytes: int, log: Callable[[str], None]
) -> None:
    shards: list[dict[str, mx.array]] = []
    size = 0
    for name in sorted(weights):
        w = weights[name]
        if not shards or size + w.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = w
        size += w.nbytes
    count = len(shards)
    index = {"metadata": {"total_size": sum(w.nbytes for w in weights.values())}, "weight_map": {}}
    for i, shard in enumerate(shards, start=1):
        name = "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"
        log(f"writing {name} ({len(shard)} tensors)")
        mx.save_safetensors(str(out / name), shard, metadata={"format": "mlx"})
        index["weight_map"].update({tensor: name for tensor in shard})
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def copy_side_files(src: Path, out: Path) -> None:
    """Tokenizer, chat template, generation config and other non-weight files."""
    for item in src.iterdir():
        skip = (
            not item.is_file()
            or item.name.startswith(".")
            or item.name == "config.json"
            or item.name.endswith(_WEIGHT_SUFFIXES)
            or item.name.endswith(".index.json")
        )
        if not skip:
            shutil.copy2(item, out / item.name)
