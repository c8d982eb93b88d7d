"""Tiny random Qwen2/Qwen3 checkpoints in the exact Hugging Face layout, for tests.

`build_checkpoint(dir, ...)` makes the model with transformers (Qwen3ForCausalLM /
Qwen2ForCausalLM), randomizes every tensor (biases and norm weights too, which transformers
initializes to constants that would hide bugs), saves it with `save_pretrained` (safetensors,
optionally sharded) and adds the test tokenizer, so the directory looks like a real download.
`build_quantized(src, dst, ...)` turns one into an MLX-quantized checkpoint with our converter.

transformers and torch are imported inside the functions: they are references for tests only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer

# Shared tokenizer files, trained once per process and copied into each checkpoint.
_TOKENIZER_CACHE: dict[str, Path] = {}


def tiny_config(arch: str = "qwen3", *, tied: bool = False, layers: int = 2,
                rope_scaling: dict | None = None) -> dict:  # fmt: skip
    """transformers 5.x-style config kwargs for a tiny model with GQA (4 heads / 2 kv heads)."""
    rope = {"rope_type": "default", "rope_theta": 10000.0, **(rope_scaling or {})}
    config = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        rope_parameters=rope,
        bos_token_id=None,
        eos_token_id=None,
    )
    if arch == "qwen3":
        config["head_dim"] = 32  # deliberately != hidden_size / heads (16)
    return config


def _tokenizer_files(flavor: str, tmp_root: Path) -> Path:
    if flavor not in _TOKENIZER_CACHE or not _TOKENIZER_CACHE[flavor].exists():
        _TOKENIZER_CACHE[flavor] = make_tokenizer(tmp_root / f".tokenizer-{flavor}", flavor=flavor)
    return _TOKENIZER_CACHE[flavor]


def _randomize(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embed_tokens" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def to_v4_config(path: Path) -> None:
    """Rewrite config.json with transformers 4.x keys: rope_theta/rope_scaling, torch_dtype."""
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    rope = dict(config.pop("rope_parameters", None) or {})
    config["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    else:
        config["rope_scaling"] = None
    if "dtype" in config:
        config["torch_dtype"] = config.pop("dtype")
    config["transformers_version"] = "4.51.3"
    config_file.write_text(json.dumps(config, indent=2))


def build_checkpoint(
    path,
    arch: str = "qwen3",
    *,
    dtype: str = "float32",
    tied: bool = False,
    layers: int = 2,
    config_style: str = "v5",
    rope_scaling: dict | None = None,
    max_shard_size: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a random `arch` checkpoint ("qwen3" | "qwen2") to `path` and return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    classes = {"qwen3": (Qwen3Config, Qwen3ForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_cls, model_cls = classes[arch]
    path = Path(path)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**tiny_config(arch, tied=tied, layers=layers,
                                               rope_scaling=rope_scaling)))  # fmt: skip
    _randomize(model, seed)
    model = model.to(getattr(torch, dtype)).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    if config_style == "v4":
        to_v4_config(path)
    tokenizer = _tokenizer_files("qwen3" if arch == "qwen3" else "qwen2", path.parent)
    for item in tokenizer.iterdir():  # the fixture's generation_config (Qwen eos ids) wins
        shutil.copy2(item, path / item.name)
    return path


def build_quantized(src, dst, *, bits: int = 4, group_size: int = 64, overrides=None,
                    dtype: str | None = None) -> Path:  # fmt: skip
    """MLX-quantized copy of checkpoint `src` made by `ominix.engine.convert`."""
    from ominix.engine.convert import convert

    return convert(src, dst, quantize=True, bits=bits, group_size=group_size,
                   overrides=overrides, dtype=dtype)  # fmt: skip


def load_reference(path, dtype: str = "float32"):
    """The transformers model for a checkpoint directory, on CPU, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    return model.eval()
