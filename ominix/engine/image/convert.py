"""`ominix convert` for an image checkpoint: quantized or cast once, into the same diffusers layout.

transformer/ and text_encoder/ are written in MLX's format (quantized linear layers as uint32
`weight` plus `scales` and `biases`, a `quantization` block in config.json, as mlx-community
publishes them; shards of at most 5 GiB with an index); the VAE (computed in float32 on a CPU
anyway), tokenizer, scheduler and model_index.json are copied. Everything is written to a
temporary directory next to DST and renamed into place at the end, so DST is complete or absent.
`load_image_pipeline` reads the result like any other checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import mlx.nn as nn
from mlx.utils import tree_flatten

from ominix.engine.convert import MAX_SHARD_BYTES, ConvertError, save_weights
from ominix.engine.image.pipeline import PIPELINES, load_component, quantize_predicate, read_index
from ominix.engine.image.text import load_text_encoder
from ominix.engine.load import LoadError, cast_floats, dtype_name, parse_dtype, quant_params, read_config, read_quantization
from ominix.hub.files import written_whole
from ominix.kinds import is_mflux_pack

COPIED = ("vae", "tokenizer", "scheduler")


def convert_pipeline(src, dst, *, quantize: bool = False, bits: int = 4, group_size: int = 64,
                     dtype: str | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                     log: Callable[[str], None] = lambda message: None) -> Path:  # fmt: skip
    """Quantize (`bits`, `group_size`) and/or cast (`dtype`) the transformer and text encoder of
    the diffusers folder `src` into the new folder `dst`; returns dst."""
    src, dst = Path(src), Path(dst)
    if is_mflux_pack(src):
        raise ConvertError(f"{src} is an mflux pack, already in MLX's format: it loads as it is")
    index = read_index(src)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConvertError(f"{dst} already exists and is not empty; choose a new directory")
    if not quantize and dtype is None:
        raise ConvertError("an image checkpoint converts by quantizing (-q) or casting (--dtype); give one")
    for part in ("transformer", "text_encoder"):
        if read_quantization(read_config(src / part)) is not None:
            raise ConvertError(f"{src / part} is already quantized; convert from the float checkpoint")
    try:
        spec = quant_params({"bits": bits, "group_size": group_size}, "requested") if quantize else None
    except LoadError as e:
        raise ConvertError(str(e)) from None
    target = parse_dtype(dtype) if dtype else None
    with written_whole(dst) as tmp:
        _write_transformer(src, tmp, PIPELINES[index["_class_name"]], spec, target, max_shard_bytes, log)
        _write_text_encoder(src, tmp, spec, target, max_shard_bytes, log)
        for item in src.iterdir():  # model_index.json, README, licence ...
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, tmp / item.name)
        for folder in COPIED:
            shutil.copytree(src / folder, tmp / folder)
    log(f"wrote {dst}")
    return dst


def _write_transformer(src: Path, out: Path, family: str, spec, target, max_shard_bytes, log) -> None:
    from ominix.models import flux2, zimage

    log(f"loading {src / 'transformer'} ({family})")
    model, config, _ = load_component(src / "transformer", flux2 if family == "flux2" else zimage, None)
    params = _converted(model, spec, target)
    _save(out / "transformer", params, config, spec, max_shard_bytes, log)


def _write_text_encoder(src: Path, out: Path, spec, target, max_shard_bytes, log) -> None:
    log(f"loading {src / 'text_encoder'} (qwen3)")
    te = load_text_encoder(src / "text_encoder", src / "tokenizer")
    params = {f"model.{k}": v for k, v in _converted(te.body, spec, target).items()}
    config = dict(te.config)
    for key in ("torch_dtype", "dtype"):  # transformers 4.x and 5.x spellings
        if target is not None and (key in config or key == "torch_dtype"):
            config[key] = dtype_name(target)
    _save(out / "text_encoder", params, config, spec, max_shard_bytes, log)


def _converted(model: nn.Module, spec: dict | None, target) -> dict:
    if target is not None:
        cast_floats(model, target)
    if spec is not None:
        nn.quantize(model, class_predicate=quantize_predicate(spec["bits"], spec["group_size"]))
    return dict(tree_flatten(model.parameters()))


def _save(folder: Path, params: dict, config: dict, spec: dict | None, max_shard_bytes, log) -> None:
    folder.mkdir(parents=True)
    if spec is not None:
        config = {**config, "quantization": {**spec, "mode": "affine"}}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_weights(folder, params, max_shard_bytes, log)
