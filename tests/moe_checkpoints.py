"""Tiny random mixture-of-experts checkpoints in the exact Hugging Face layout, for tests.

`build_moe_checkpoint(dir, arch)` makes Qwen3MoeForCausalLM / MixtralForCausalLM /
Glm4MoeForCausalLM with transformers, randomizes every tensor (router biases too), saves it with
`save_pretrained` and adds the test tokenizer. transformers 5.23 saves experts one Linear per
expert (`mlp.experts.N.gate_proj.weight`, Mixtral `block_sparse_moe.experts.N.w1.weight`) even
though it computes with fused tensors, so that is the layout these directories have.

`config_style="v4"` rewrites config.json with transformers 4.x keys: `rope_theta` (and for
GLM `partial_rotary_factor`) at top level, Qwen's `num_experts` instead of `num_local_experts`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.checkpoints import _randomize, _tokenizer_files, to_v4_config
from tests.tokenizer_fixture import VOCAB_SIZE

ARCHS = ("qwen3_moe", "mixtral", "glm4_moe")


def tiny_moe_config(arch: str, **overrides) -> dict:
    """transformers 5.x config kwargs: hidden 64, GQA 4/2 heads, 8 experts, top-2."""
    base = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        num_experts_per_tok=2,
    )
    if arch == "qwen3_moe":
        base.update(
            num_hidden_layers=3, head_dim=32, intermediate_size=96, moe_intermediate_size=64,
            num_experts=8, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1],
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )  # fmt: skip
    elif arch == "mixtral":
        base.update(
            num_hidden_layers=2, intermediate_size=64, num_local_experts=4,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        )  # fmt: skip
    elif arch == "glm4_moe":
        base.update(
            num_hidden_layers=3, head_dim=32, intermediate_size=96, moe_intermediate_size=64,
            n_routed_experts=8, n_shared_experts=1, n_group=2, topk_group=1,
            first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5,
            attention_bias=True, use_qk_norm=True, num_nextn_predict_layers=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "partial_rotary_factor": 0.25},
        )  # fmt: skip
    else:
        raise ValueError(f"unknown MoE arch {arch}; one of {ARCHS}")
    base.update(overrides)
    return base


def _classes(arch: str):
    import transformers

    names = {
        "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM"),
        "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
        "glm4_moe": ("Glm4MoeConfig", "Glm4MoeForCausalLM"),
    }[arch]
    return getattr(transformers, names[0]), getattr(transformers, names[1])


def _randomize_router_bias(model, seed: int, shift: float) -> None:
    """GLM's e_score_correction_bias is a buffer (named_parameters skips it); give it values
    that change which experts win (negative ones included unless shifted)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(shift + 0.3 * torch.randn(buffer.shape, generator=gen))


def _v4_moe_config(path: Path, arch: str) -> None:
    config_file = path / "config.json"
    rope = json.loads(config_file.read_text()).get("rope_parameters") or {}
    to_v4_config(path)
    config = json.loads(config_file.read_text())
    if arch == "qwen3_moe":
        config["num_experts"] = config.pop("num_local_experts")
    if arch == "glm4_moe":
        config["partial_rotary_factor"] = rope["partial_rotary_factor"]
    config_file.write_text(json.dumps(config, indent=2))


def _add_mtp_layer(path: Path, num_layers: int) -> None:
    """Append a GLM-style multi-token-prediction layer (`model.layers.{num_layers}.*`: a copy of
    the last decoder layer plus eh_proj / enorm / hnorm / shared_head), as real GLM-4.5
    checkpoints carry; transformers ignores it, decoding must too."""
    import torch
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(file)
    last = f"model.layers.{num_layers - 1}."
    mtp = f"model.layers.{num_layers}."
    for name in [n for n in tensors if n.startswith(last)]:
        tensors[mtp + name[len(last):]] = tensors[name].clone()
    hidden = tensors["model.norm.weight"].shape[0]
    tensors[mtp + "eh_proj.weight"] = torch.randn(hidden, 2 * hidden)
    for norm in ("enorm", "hnorm", "shared_head.norm"):
        tensors[mtp + f"{norm}.weight"] = torch.ones(hidden)
    tensors[mtp + "shared_head.head.weight"] = tensors["lm_head.weight"].clone()
    save_file(tensors, file, metadata={"format": "pt"})


def build_moe_checkpoint(
    path,
    arch: str,
    *,
    config_style: str = "v5",
    dtype: str = "float32",
    seed: int = 0,
    router_bias_shift: float = 0.0,
    mtp: bool = False,
    **overrides,
) -> Path:
    """Write a random `arch` MoE checkpoint to `path` and return it."""
    import torch

    config_cls, model_cls = _classes(arch)
    path = Path(path)
    torch.manual_seed(seed)
    kwargs = tiny_moe_config(arch, **overrides)
    model = model_cls(config_cls(**kwargs))
    _randomize(model, seed)
    _randomize_router_bias(model, seed, router_bias_shift)
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(path, safe_serialization=True)
    if mtp:
        _add_mtp_layer(path, kwargs["num_hidden_layers"])
    if config_style == "v4":
        _v4_moe_config(path, arch)
    for item in _tokenizer_files("qwen3", path.parent).iterdir():
        shutil.copy2(item, path / item.name)
    return path
