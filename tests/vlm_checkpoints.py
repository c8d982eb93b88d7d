"""Tiny Qwen3-VL checkpoints in the published layouts, built with transformers itself.

`qwen3_vl_checkpoint(dir)` writes what a download of Qwen/Qwen3-VL-*-Instruct has: config.json
(text_config + vision_config, transformers 4.57 spelling with `rope_scaling.mrope_section`),
model.safetensors in the transformers layout (`model.visual.*`, `model.language_model.*`,
`lm_head`), the Qwen tokenizer with the vision tokens, chat_template.json and
preprocessor_config.json. `mlx_layout=True` renames the tensors the way mlx-community's
conversions store them (`vision_tower.*`, `language_model.model.*`, conv weight channels-last).
Every parameter is random (norms around 1), so parity checks see every tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.tokenizer_fixture import DATA, VOCAB_SIZE, make_tokenizer, special_ids

TEXT = {
    "model_type": "qwen3_vl_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-6, "hidden_act": "silu", "attention_bias": False,
    "rope_theta": 5000000.0,
    "rope_scaling": {"mrope_interleaved": True, "mrope_section": [4, 2, 2], "rope_type": "default"},
    "tie_word_embeddings": False, "torch_dtype": "float32",
}
VISION = {
    "model_type": "qwen3_vl", "depth": 3, "hidden_size": 32, "hidden_act": "gelu_pytorch_tanh",
    "intermediate_size": 64, "num_heads": 2, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
    "temporal_patch_size": 2, "out_hidden_size": 64, "num_position_embeddings": 64,
    "deepstack_visual_indexes": [0, 1], "initializer_range": 0.02,
}
PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessorFast", "processor_class": "Qwen3VLProcessor",
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 0.00392156862745098,
    "resample": 3, "merge_size": 2, "patch_size": 16, "temporal_patch_size": 2,
    "size": {"shortest_edge": 64 * 64, "longest_edge": 256 * 256},
}


def config_for(path: Path, text: dict | None = None, vision: dict | None = None, tie: bool = False) -> dict:
    ids = special_ids(path)
    text = {**TEXT, **(text or {}), "vocab_size": VOCAB_SIZE, "tie_word_embeddings": tie}
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "text_config": text, "vision_config": {**VISION, **(vision or {})},
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": tie, "torch_dtype": "float32", "transformers_version": "4.57.0",
    }


def reference_model(path: Path):
    """The transformers model for a checkpoint written here (float32, eval mode)."""
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(str(path), dtype="float32").eval()


def _randomize(model, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.08 * noise)


def qwen3_vl_checkpoint(path: Path, seed: int = 0, mlx_layout: bool = False, text: dict | None = None,
                        vision: dict | None = None, tie: bool = False) -> Path:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    path = Path(path)
    make_tokenizer(path)
    tok_config = json.loads((path / "tokenizer_config.json").read_text())
    del tok_config["chat_template"]  # Qwen3-VL ships it in chat_template.json
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    template = (DATA / "qwen3_vl_chat_template.jinja").read_text()
    (path / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2))
    config = config_for(path, text, vision, tie)

    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**config))
    _randomize(model, seed)
    model.save_pretrained(str(path), safe_serialization=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))  # the 4.57 spelling, as published
    if mlx_layout:
        weights = load_file(str(path / "model.safetensors"))
        renamed = {}
        for name, w in weights.items():
            name = name.replace("model.language_model.", "language_model.model.").replace("model.visual.", "vision_tower.")
            if name.startswith("lm_head."):
                name = "language_model." + name
            if name == "vision_tower.patch_embed.proj.weight":
                w = w.permute(0, 2, 3, 4, 1).contiguous()
            renamed[name] = w
        save_file(renamed, str(path / "model.safetensors"), metadata={"format": "mlx"})
    return path


def sample_image(width: int = 80, height: int = 48, seed: int = 0):
    """A deterministic RGB picture (gradients + noise) as a PIL image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, (x + y) % 64 * 4], -1)
    pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
