"""Quantize an image checkpoint once, into the same diffusers layout in MLX's format.

transformer/ and text_encoder/ get MLX affine-quantized linear layers (uint32 `weight`, `scales`,
`biases`) and a `quantization` block in their config.json, as mlx-community publishes them; the
VAE, tokenizer and scheduler are copied. `load_image_pipeline` reads the result like any other.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ominix.engine.image.pipeline import GROUP_SIZE, PIPELINES, load_component, quantize_predicate, read_index
from ominix.engine.image.text import load_text_encoder


def _write(folder: Path, params: dict, config: dict, bits: int, weights_name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {**config, "quantization": {"group_size": GROUP_SIZE, "bits": bits}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(folder / weights_name), params, metadata={"format": "mlx"})


def save_quantized(src, dst, bits: int = 4) -> Path:
    src, dst = Path(src), Path(dst)
    index = read_index(src)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists")
    dst.mkdir(parents=True)
    for name in ("model_index.json",):
        shutil.copy2(src / name, dst / name)
    for folder in ("vae", "tokenizer", "scheduler"):
        shutil.copytree(src / folder, dst / folder)
    family = PIPELINES[index["_class_name"]]
    from ominix.models import flux2, zimage

    arch = flux2 if family == "flux2" else zimage
    model, config, _ = load_component(src / "transformer", arch, bits)
    params = dict(tree_flatten(model.parameters()))
    _write(dst / "transformer", params, config, bits, "diffusion_pytorch_model.safetensors")
    te = load_text_encoder(src / "text_encoder", src / "tokenizer")
    nn.quantize(te.body, class_predicate=quantize_predicate(bits))
    params = {f"model.{k}": v for k, v in tree_flatten(te.body.parameters())}
    _write(dst / "text_encoder", params, te.config, bits, "model.safetensors")
    return dst
