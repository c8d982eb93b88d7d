"""mflux's saved packs (mlx-community/flux2-klein-4b-4bit, -8bit, ...) read as a diffusers pipeline.

`mflux-save` writes transformer/, text_encoder/ and vae/ as shards `0.safetensors`, ... plus a
model.safetensors.index.json whose metadata names `mflux_version` and `quantization_level`, and
tokenizer/ with `save_pretrained`, but no config.json, model_index.json or scheduler/: mflux keeps
those in code. Tensor names are mflux's module paths, which differ from diffusers' in a few
places (`to_out.0` -> `to_out`, the timestep embedder's linears one level up, no `model.` prefix
on the text encoder), and its convolutions are already in MLX's (out, kh, kw, in) layout. Every
layer with a `to_quantized` is quantized, including the text encoder's embedding and the VAE's
attention projections.

FLUX.2 [klein] and Z-Image packs are read. This module gives the pipeline what a diffusers folder
would: each component's config.json (read off the tensor shapes, with the family's fixed
constants), its tensors under diffusers' names and layout, MLX `quantization` blocks where the
pack is quantized, the published scheduler config and a model_index.json. `is_mflux_pack` lives in
ominix/kinds.py (no MLX there).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import mlx.core as mx

from ominix.engine.load import LoadError, read_weights
from ominix.kinds import is_mflux_pack

# The published scheduler/scheduler_config.json of black-forest-labs/FLUX.2-klein-4B and
# Tongyi-MAI/Z-Image-Turbo, and the model_index.json fields the pipelines read.
SCHEDULERS = {
    "flux2": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
              "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
              "max_image_seq_len": 4096, "time_shift_type": "exponential"},
    "zimage": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
               "use_dynamic_shifting": False},
}  # fmt: skip
INDEX = {"flux2": {"_class_name": "Flux2KleinPipeline", "is_distilled": True}, "zimage": {"_class_name": "ZImagePipeline"}}
# mflux name -> diffusers name, per (family, component), applied in order to the whole name.
RENAMES = {
    ("flux2", "transformer"): [(r"^time_guidance_embed\.linear_(\d)\.", r"time_guidance_embed.timestep_embedder.linear_\1."),
                               (r"^(transformer_blocks\.\d+\.attn\.to_out)\.", r"\1.0.")],
    ("flux2", "vae"): [(r"(\.attentions\.\d+\.to_out)\.", r"\1.0.")],
    ("zimage", "transformer"): [(r"^t_embedder\.linear1\.", "t_embedder.mlp.0."),
                                (r"^t_embedder\.linear2\.", "t_embedder.mlp.2."),
                                (r"^(all_final_layer\.[^.]+\.adaLN_modulation)\.0\.", r"\1.1.")],
    ("zimage", "vae"): [(r"^(encoder\.conv_(in|out))\.conv2d\.", r"\1."), (r"^(decoder\.conv_(in|out))\.conv\.", r"\1."),
                        (r"^((en|de)coder\.conv_norm_out)\.norm\.", r"\1.")],
}  # fmt: skip
for _family in SCHEDULERS:
    RENAMES[(_family, "text_encoder")] = [(r"^(?!model\.)", "model.")]
DROPPED = ("rotary_emb.inv_freq",)  # mflux keeps its RoPE frequencies as a parameter


def family(path: Path) -> str:
    names = _index(Path(path) / "transformer")["weight_map"]
    if any(n.startswith("double_stream_modulation_img.") for n in names):
        return "flux2"
    if any(n.startswith("noise_refiner.") for n in names):
        return "zimage"
    raise LoadError(f"{path} is an mflux pack of a model OminiX does not read (only FLUX.2 and Z-Image)")


def model_index(path: Path) -> dict:
    return dict(INDEX[family(path)])


def scheduler_config(path: Path) -> dict:
    return dict(SCHEDULERS[family(path)])


def read_component(folder: Path) -> tuple[dict, dict[str, mx.array], dict[str, str]]:
    """(config.json, tensors under diffusers' names, tensor -> file) of one pack component."""
    folder = Path(folder)
    part, kind = folder.name, family(folder.parent)
    bits = _bits(folder)
    weights, origin = read_weights(folder)
    weights, origin = _renamed(kind, part, weights), _renamed(kind, part, origin)
    if part == "vae":  # back to torch's (out, in, kh, kw), as the VAE's sanitize expects
        weights = {k: w.transpose(0, 3, 1, 2) if w.ndim == 4 else w for k, w in weights.items()}
    shapes = _Shapes(weights, bits)
    configs = {"transformer": _flux2_transformer if kind == "flux2" else _zimage_transformer,
               "vae": _flux2_vae if kind == "flux2" else _zimage_vae, "text_encoder": _qwen3}  # fmt: skip
    try:
        config = configs[part](shapes)
    except KeyError as e:
        raise LoadError(f"{folder} has no tensor {e}: not a complete mflux {kind} pack") from None
    if bits is not None:
        config["quantization"] = shapes.quantization()
    return config, weights, origin


def _index(folder: Path) -> dict:
    if not is_mflux_pack(folder.parent):
        raise LoadError(f"{folder.parent} is not an mflux pack")
    try:
        return json.loads((folder / "model.safetensors.index.json").read_text())
    except (OSError, ValueError) as e:
        raise LoadError(f"{folder}/model.safetensors.index.json cannot be read: {e}") from None


def _bits(folder: Path) -> int | None:
    level = str(_index(folder).get("metadata", {}).get("quantization_level"))
    if level in ("None", "", "null"):
        return None
    if not level.isdigit():
        raise LoadError(f"{folder}: quantization_level {level!r} is not a number of bits")
    return int(level)


def _renamed(kind: str, part: str, tensors: dict) -> dict:
    out = {}
    for name, value in tensors.items():
        if name.endswith(DROPPED):
            continue
        for pattern, repl in RENAMES.get((kind, part), []):
            name = re.sub(pattern, repl, name)
        out[name] = value
    return out


class _Shapes:
    """Layer sizes read off a component's tensors (a quantized layer's input width is its packed
    width x 32 / bits), and the MLX quantization block that describes them."""

    def __init__(self, weights: dict[str, mx.array], bits: int | None):
        self.weights, self.bits = weights, bits

    def linear(self, layer: str) -> tuple[int, int]:
        """(out, in) of a Linear or Embedding."""
        w = self.weights.get(f"{layer}.weight")
        if w is None:
            raise LoadError(f"the pack has no {layer}.weight")
        packed = f"{layer}.scales" in self.weights
        return w.shape[0], w.shape[-1] * 32 // self.bits if packed else w.shape[-1]

    def count(self, prefix: str) -> int:
        found = {int(m.group(1)) for n in self.weights if (m := re.match(re.escape(prefix) + r"(\d+)\.", n))}
        return max(found) + 1 if found else 0

    def has(self, prefix: str) -> bool:
        return any(n.startswith(prefix) for n in self.weights)

    def quantization(self) -> dict:
        sizes = {}
        for name, scales in self.weights.items():
            if name.endswith(".scales"):
                layer = name[: -len(".scales")]
                sizes[layer] = self.linear(layer)[1] // scales.shape[-1]
        common = Counter(sizes.values()).most_common(1)[0][0] if sizes else 64
        block = {"bits": self.bits, "group_size": common, "mode": "affine"}
        block.update({layer: {"group_size": g} for layer, g in sizes.items() if g != common})
        return block


def _flux2_transformer(s: _Shapes) -> dict:
    dim, in_channels = s.linear("x_embedder")
    head_dim = s.weights["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    if s.has("time_guidance_embed.guidance_embedder"):
        raise LoadError("guidance-embedding FLUX.2 packs (FLUX.2 [dev]) are not supported")
    return {
        "_class_name": "Flux2Transformer2DModel", "in_channels": in_channels,
        "out_channels": s.linear("proj_out")[0], "patch_size": 1,
        "num_layers": s.count("transformer_blocks."), "num_single_layers": s.count("single_transformer_blocks."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": s.linear("context_embedder")[1],
        "timestep_guidance_channels": s.linear("time_guidance_embed.timestep_embedder.linear_1")[1],
        "mlp_ratio": s.linear("transformer_blocks.0.ff.linear_in")[0] / 2 / dim,
        "axes_dims_rope": [head_dim // 4] * 4, "rope_theta": 2000, "eps": 1e-6, "guidance_embeds": False,
    }  # fmt: skip


def _zimage_transformer(s: _Shapes) -> dict:
    dim, embed = s.linear("all_x_embedder.2-1")
    head_dim = s.weights["layers.0.attention.norm_q.weight"].shape[0]
    return {
        "_class_name": "ZImageTransformer2DModel", "all_patch_size": [2], "all_f_patch_size": [1],
        "in_channels": embed // 4, "dim": dim, "n_layers": s.count("layers."),
        "n_refiner_layers": s.count("noise_refiner."), "n_heads": dim // head_dim,
        "n_kv_heads": s.linear("layers.0.attention.to_k")[0] // head_dim, "norm_eps": 1e-5, "qk_norm": True,
        "cap_feat_dim": s.weights["cap_embedder.0.weight"].shape[0], "rope_theta": 256.0, "t_scale": 1000.0,
        "axes_dims": [head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8], "axes_lens": [1024, 512, 512],
    }  # fmt: skip


def _zimage_vae(s: _Shapes) -> dict:
    """FLUX.1's VAE, with its fixed latent scale and shift."""
    config = _flux2_vae(s)
    del config["batch_norm_eps"], config["patch_size"]
    return {**config, "_class_name": "AutoencoderKL", "scaling_factor": 0.3611, "shift_factor": 0.1159}


def _flux2_vae(s: _Shapes) -> dict:
    w = s.weights
    down = s.count("encoder.down_blocks.")
    up = s.count("decoder.up_blocks.")
    return {
        "_class_name": "AutoencoderKLFlux2",
        "in_channels": w["encoder.conv_in.weight"].shape[1], "out_channels": w["decoder.conv_out.weight"].shape[0],
        "block_out_channels": [w[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(down)],
        "decoder_block_out_channels": [w[f"decoder.up_blocks.{i}.resnets.0.conv1.weight"].shape[0]
                                       for i in reversed(range(up))],
        "layers_per_block": s.count("encoder.down_blocks.0.resnets."),
        "latent_channels": w["decoder.conv_in.weight"].shape[1], "norm_num_groups": 32,
        "mid_block_add_attention": s.has("encoder.mid_block.attentions."),
        "use_quant_conv": "quant_conv.weight" in w, "use_post_quant_conv": "post_quant_conv.weight" in w,
        "batch_norm_eps": 1e-4, "patch_size": [2, 2],
    }  # fmt: skip


def _qwen3(s: _Shapes) -> dict:
    head_dim = s.weights["model.layers.0.self_attn.q_norm.weight"].shape[0]
    vocab, hidden = s.linear("model.embed_tokens")
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": vocab,
        "hidden_size": hidden, "num_hidden_layers": s.count("model.layers."),
        "num_attention_heads": s.linear("model.layers.0.self_attn.q_proj")[0] // head_dim,
        "num_key_value_heads": s.linear("model.layers.0.self_attn.k_proj")[0] // head_dim,
        "head_dim": head_dim, "intermediate_size": s.linear("model.layers.0.mlp.gate_proj")[0],
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
        "attention_bias": "model.layers.0.self_attn.q_proj.bias" in s.weights, "tie_word_embeddings": True,
    }  # fmt: skip
