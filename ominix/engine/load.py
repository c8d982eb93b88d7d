"""Checkpoint directory -> MLX module: config, safetensors shards, MLX quantization, compute dtype.

One path for every checkpoint: build the float module from config.json, `nn.quantize` the layers
whose tensors carry `scales`, load the (memory-mapped, lazy) tensors, then run it in the compute
dtype chosen for the device (engine/compute.py says how layers do that). Every failure is a LoadError whose message
names the file or tensor at fault.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ominix.engine.compute import is_quantization_param, upcast_prefill, use_compute_dtype
from ominix.models import get_architecture

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)
INDEX_FILE = "model.safetensors.index.json"

_DTYPE_NAMES = {
    "float32": mx.float32, "fp32": mx.float32, "float": mx.float32,
    "float16": mx.float16, "fp16": mx.float16, "half": mx.float16,
    "bfloat16": mx.bfloat16, "bf16": mx.bfloat16,
}  # fmt: skip
# safetensors header dtype -> mlx dtype, for the floating types a checkpoint stores
_SAFETENSORS_FLOATS = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}


class LoadError(Exception):
    """A checkpoint cannot be loaded; the message says which file or tensor and why."""


def parse_dtype(name: str) -> mx.Dtype:
    """'bfloat16' / 'bf16' / 'float16' / 'float32' ... -> mx.Dtype."""
    key = str(name).lower().removeprefix("torch.").removeprefix("mlx.core.")
    if key not in _DTYPE_NAMES:
        raise LoadError(f"unsupported dtype '{name}'; use float16, bfloat16 or float32")
    return _DTYPE_NAMES[key]


def dtype_name(dtype: mx.Dtype) -> str:
    return str(dtype).removeprefix("mlx.core.")


# --- files ------------------------------------------------------------------------------------


def read_config(path: str | Path) -> dict:
    config_file = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise LoadError(f"{path} is not a directory")
    if not config_file.is_file():
        raise LoadError(f"{config_file} not found: not a model checkpoint directory")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LoadError(f"{config_file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise LoadError(f"{config_file} must hold a JSON object")
    return config


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint, checked to exist (index first, then single file)."""
    path = Path(path)
    index_file = path / INDEX_FILE
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LoadError(f"{index_file} is not a valid safetensors index: {e}") from None
        files = [path / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise LoadError(f"missing shard {', '.join(missing)} (listed in {index_file})")
        return files
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    found = sorted(path.glob("*.safetensors"))
    if found:
        return found
    hint = " (PyTorch .bin weights are not supported; use safetensors)" if any(
        path.glob("*.bin")
    ) else ""
    raise LoadError(f"no model.safetensors or {INDEX_FILE} in {path}{hint}")


def read_safetensors_header(file: Path) -> dict[str, dict]:
    """Tensor name -> {"dtype", "shape"} from the header, after checking the file is complete."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError(f"header length {header_len} exceeds file size {size}")
            header = json.loads(f.read(header_len))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise LoadError(f"{file} is not a valid safetensors file: {e}") from None
    header.pop("__metadata__", None)
    data_end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + header_len + data_end > size:
        raise LoadError(
            f"{file} is truncated: its header describes {8 + header_len + data_end} bytes, "
            f"the file has {size}"
        )
    return {name: {"dtype": t["dtype"], "shape": tuple(t["shape"])} for name, t in header.items()}


def read_weights(path: str | Path) -> tuple[dict[str, mx.array], dict[str, str]]:
    """All tensors (lazy: mx.load maps them, nothing is read until evaluated) and tensor -> file."""
    weights: dict[str, mx.array] = {}
    origin: dict[str, str] = {}
    for file in weight_files(path):
        read_safetensors_header(file)
        try:
            tensors = mx.load(str(file))
        except Exception as e:  # mlx raises RuntimeError/ValueError with its own wording
            raise LoadError(f"{file} cannot be read: {e}") from None
        for name, tensor in tensors.items():
            weights[name] = tensor
            origin[name] = file.name
    return weights, origin


def checkpoint_float_dtype(weights: dict[str, mx.array]) -> mx.Dtype:
    """The floating dtype holding most of the checkpoint's bytes (scales count for quantized)."""
    totals: dict[mx.Dtype, int] = {}
    for w in weights.values():
        if mx.issubdtype(w.dtype, mx.floating):
            totals[w.dtype] = totals.get(w.dtype, 0) + w.nbytes
    return max(totals, key=totals.get) if totals else mx.float32


# --- quantization -----------------------------------------------------------------------------


def read_quantization(config: dict) -> dict | None:
    """The MLX quantization block (`quantization`, or `quantization_config` as mlx-lm also
    writes it), validated. Returns {"bits", "group_size", "overrides": {path: dict | False}}."""
    block = config.get("quantization")
    if block is None:
        block = config.get("quantization_config")
        if block is None:
            return None
        if "quant_method" in block:
            raise LoadError(
                f"quantization method '{block['quant_method']}' is not supported; OminiX loads "
                "MLX affine quantization (make one with `ominix convert -q`)"
            )
    default = quant_params(block, "quantization")
    overrides = {}
    for key, value in block.items():
        if isinstance(value, dict):
            overrides[key] = quant_params({**default, **value}, key)
        elif isinstance(value, bool):
            overrides[key] = dict(default) if value else False
    return {**default, "overrides": overrides}


def quant_params(block: dict, where: str) -> dict:
    bits, group_size = block.get("bits"), block.get("group_size")
    mode = block.get("mode", "affine")
    if mode != "affine":
        raise LoadError(f"quantization mode '{mode}' ({where}) is not supported; only affine")
    if bits not in SUPPORTED_BITS:
        raise LoadError(
            f"unsupported quantization bits={bits} ({where}); supported: {SUPPORTED_BITS}"
        )
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise LoadError(
            f"unsupported quantization group_size={group_size} ({where}); "
            f"supported: {SUPPORTED_GROUP_SIZES}"
        )
    return {"bits": bits, "group_size": group_size}


def quantize_like_checkpoint(model: nn.Module, quantization: dict, weights: dict) -> None:
    """Swap in quantized layers exactly where the checkpoint has `<layer>.scales`."""
    overrides = quantization["overrides"]
    default = {"bits": quantization["bits"], "group_size": quantization["group_size"]}

    def predicate(path: str, module: nn.Module):
        if not hasattr(module, "to_quantized") or f"{path}.scales" not in weights:
            return False
        override = overrides.get(path, default)
        return dict(override) if override else False

    nn.quantize(model, class_predicate=predicate)


# --- building ---------------------------------------------------------------------------------


def _names(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_weights(model: nn.Module, weights: dict, origin: dict[str, str]) -> None:
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise LoadError(f"checkpoint is missing {len(missing)} weight(s): {_names(missing)}")
    unused = sorted(set(weights) - set(expected))
    if unused:
        raise LoadError(
            f"checkpoint has {len(unused)} weight(s) the model does not use: {_names(unused)}"
        )
    for name, param in expected.items():
        found = tuple(weights[name].shape)
        if found != tuple(param.shape):
            hint = " (quantization bits/group_size in config.json may not match)" if (
                name.rsplit(".", 1)[0] + ".scales" in weights
            ) else ""
            raise LoadError(
                f"tensor {name} in {origin.get(name, '?')} has shape {found}, "
                f"expected {tuple(param.shape)}{hint}"
            )


_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
_LAYER_NAME = re.compile(r"^(.*?\blayers?)\.(\d+)\.")


def check_config_against_weights(config: dict, weights: dict) -> None:
    """The layer count config.json declares must be the one the weight files hold, checked before
    the module is built: a config saying 1e9 layers would otherwise build them, without bound.
    (Layers beyond the declared count, like an MTP head, are the architecture's sanitize() to drop.)"""
    found: dict[str, set[int]] = {}
    for name in weights:
        match = _LAYER_NAME.match(name)
        if match:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    if not found:
        return
    prefix, indices = max(found.items(), key=lambda item: len(item[1]))  # the main stack
    held = len(indices)
    for key in _LAYER_KEYS:
        declared = config.get(key)
        if isinstance(declared, bool) or not isinstance(declared, (int, float)):
            continue
        if declared != held and not (declared < held and _extra_layers_expected(config, declared, held)):
            raise LoadError(f"config.json says {key} is {declared}, but the weights hold {held} layers "
                            f"({prefix}.{min(indices)} to {prefix}.{max(indices)})")
        return


def _extra_layers_expected(config: dict, declared, held: int) -> bool:
    """Checkpoints may store layers beyond the declared stack (multi-token-prediction heads)."""
    extra = config.get("num_nextn_predict_layers") or config.get("mtp_num_hidden_layers") or 0
    return isinstance(extra, int) and declared + extra >= held


def build_model(config: dict, weights: dict, origin: dict[str, str] | None = None) -> nn.Module:
    """Module for `config` with `weights` loaded (still lazy). `weights` is consumed."""
    model_type = config.get("model_type")
    if not model_type:
        raise LoadError("config.json has no model_type")
    check_config_against_weights(config, weights)
    try:
        arch = get_architecture(model_type)
    except ValueError as e:
        raise LoadError(str(e)) from None
    try:
        model = arch.Model(arch.ModelArgs.from_dict(config))
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"config.json does not describe a valid {model_type} model: {e}") from None

    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    quantization = read_quantization(config)
    if quantization is not None:
        quantize_like_checkpoint(model, quantization, weights)
    check_weights(model, weights, origin or {})
    model.load_weights(list(weights.items()), strict=True)
    return model


def cast_floats(model: nn.Module, dtype: mx.Dtype) -> None:
    """Cast floating parameters to `dtype`, except quantized layers' packed weights, scales and
    biases: those stay as stored and are cast at use (see engine/compute.py)."""
    params = dict(tree_flatten(model.parameters()))
    cast = {
        path: p.astype(dtype) for path, p in params.items()
        if mx.issubdtype(p.dtype, mx.floating) and p.dtype != dtype
        and not is_quantization_param(path, params)
    }  # fmt: skip
    model.update(tree_unflatten(list(cast.items())))


# On a CPU, layers fed at least this many rows (prefill) run a float32 dense matmul, which goes
# through BLAS: quantized layers dequantize their weight (~16x faster prefill than MLX's quantized
# kernel), bf16/fp16 layers upcast theirs (~4x). See engine/compute.py.
DENSE_PREFILL_ROWS = 32


def apply_compute_dtype(model: nn.Module, dtype: mx.Dtype, device: mx.Device) -> None:
    """Run `model` in `dtype`: float parameters are cast, quantized layers compute in it."""
    cast_floats(model, dtype)
    dense_rows = 0 if device.type == mx.DeviceType.gpu else DENSE_PREFILL_ROWS
    use_compute_dtype(model, dtype, dense_min_rows=dense_rows)
    if dense_rows and dtype in (mx.bfloat16, mx.float16):
        upcast_prefill(model, dense_rows)


# --- policy -----------------------------------------------------------------------------------


def compute_dtype(config: dict, device: mx.Device | mx.DeviceType | None = None) -> mx.Dtype:
    """The dtype to run a checkpoint in on `device` (default: MLX's default device).

    On Metal: the checkpoint's own dtype. On the CPU: float32 for quantized checkpoints (MLX's CPU
    quantized matmul with bf16 scales is ~8x slower than in float32; the stored scales stay as
    they are and are cast at use, see engine/compute.py), the checkpoint's own dtype otherwise
    (bf16 decodes about as fast as float32 on CPU at half the memory).
    """
    device = device or mx.default_device()
    kind = getattr(device, "type", device)  # accepts mx.Device or mx.cpu / mx.gpu
    saved = config.get("_ominix", {}).get("checkpoint_dtype")
    declared = saved or config.get("torch_dtype") or config.get("dtype") or "float32"
    try:
        checkpoint = parse_dtype(declared)
    except LoadError:
        checkpoint = mx.float32
    if kind == mx.DeviceType.gpu:
        return checkpoint
    if config.get("quantization") or config.get("quantization_config"):
        return mx.float32
    return checkpoint


def load_model(
    path: str | Path, *, dtype: str | mx.Dtype | None = None, lazy: bool = False
) -> tuple[nn.Module, dict]:
    """Load a checkpoint directory. Returns (model, config); config["_ominix"] records what was
    chosen: compute_dtype, checkpoint_dtype, device, quantization.

    dtype (or env OMINIX_DTYPE) overrides the compute dtype policy. lazy=True leaves the
    parameters unevaluated (they load on first use).
    """
    path = Path(path)
    config = read_config(path)
    weights, origin = read_weights(path)
    return assemble_model(config, weights, origin, dtype=dtype, lazy=lazy)


def assemble_model(config: dict, weights: dict, origin: dict[str, str], *,
                   dtype: str | mx.Dtype | None = None, lazy: bool = False):  # fmt: skip
    """load_model's second half, for tensors read from any file format (see engine/gguf.py)."""
    checkpoint = checkpoint_float_dtype(weights)
    config.setdefault("_ominix", {})["checkpoint_dtype"] = dtype_name(checkpoint)
    model = build_model(config, weights, origin)
    del weights  # the module holds the only references now, so casting frees the originals

    override = dtype or os.environ.get("OMINIX_DTYPE") or None
    device = mx.default_device()
    if override is not None:
        target = override if isinstance(override, mx.Dtype) else parse_dtype(override)
    else:
        target = compute_dtype(config, device)
    if override is not None or device.type != mx.DeviceType.gpu:
        apply_compute_dtype(model, target, device)
    if not lazy:
        mx.eval(model.parameters())

    quantization = read_quantization(config)
    config["_ominix"].update(
        compute_dtype=dtype_name(target),
        device=device.type.name,
        quantization=None if quantization is None else {
            "bits": quantization["bits"], "group_size": quantization["group_size"]
        },
    )  # fmt: skip
    return model, config


def load(path: str | Path, *, dtype: str | mx.Dtype | None = None):
    """(model, tokenizer) for a checkpoint directory, a GGUF file, or an Ollama model folder."""
    from ominix.engine.gguf import gguf_in
    from ominix.engine.llm.tokenizer import TokenizerError, load_tokenizer

    if (Path(path) / "ollama.json").is_file():  # pulled from Ollama's registry (hub/ollama.py)
        from ominix.engine.ollama_model import load_ollama_folder

        return load_ollama_folder(path, dtype=dtype)
    if (gguf_file := gguf_in(path)) is not None:
        from ominix.engine.gguf import load_gguf

        return load_gguf(gguf_file, dtype=dtype)
    model, config = load_model(path, dtype=dtype)
    try:
        tokenizer = load_tokenizer(path)
    except TokenizerError as e:
        raise LoadError(str(e)) from None
    vocab = config.get("vocab_size")
    # Checkpoints often pad the embedding past the tokenizer; the reverse cannot work.
    if vocab is not None and tokenizer.vocab_size > vocab:
        raise LoadError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {vocab}"
        )
    return model, tokenizer
