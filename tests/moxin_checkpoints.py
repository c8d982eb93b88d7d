"""A tiny Moxin-7B-VLM (Prismatic) checkpoint whose parts come from transformers' own modules:
DINOv2-with-registers and SigLIP vision models and a Mistral decoder, random weights, renamed to
the Prismatic Hugging Face layout (timm names under vision_backbone.featurizer /
fused_featurizer, PyTorch conv layout, LayerScale as `scale_factor`), plus a random projector.
`reference_logits()` runs the same picture and prompt through the transformers parts composed by
Prismatic's equations, as the independent reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer, special_ids

IMAGE = 56  # 4 x 4 patches of 14
DINO = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, patch_size=14, image_size=IMAGE,
            num_register_tokens=4, layerscale_value=1.0, hidden_act="gelu", layer_norm_eps=1e-6)
SIGLIP = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=2, intermediate_size=96, patch_size=14,
              image_size=IMAGE, hidden_act="gelu", layer_norm_eps=1e-6)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=VOCAB_SIZE, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
            sliding_window=None, tie_word_embeddings=False)


def _randomize(module, g):
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if ("norm" in name and name.endswith("weight")) else 0.08 * noise)


def hf_parts(seed: int = 0):
    from transformers import (Dinov2WithRegistersConfig, Dinov2WithRegistersModel, MistralConfig,
                              MistralForCausalLM, SiglipVisionConfig, SiglipVisionModel)

    g = torch.Generator().manual_seed(seed)
    dino = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**DINO)).eval()
    siglip = SiglipVisionModel(SiglipVisionConfig(**SIGLIP)).eval()
    llm = MistralForCausalLM(MistralConfig(**TEXT)).eval()
    vision_dim = DINO["hidden_size"] + SIGLIP["hidden_size"]
    projector = torch.nn.ModuleDict({"fc1": torch.nn.Linear(vision_dim, 4 * vision_dim),
                                     "fc2": torch.nn.Linear(4 * vision_dim, TEXT["hidden_size"]),
                                     "fc3": torch.nn.Linear(TEXT["hidden_size"], TEXT["hidden_size"])})
    for m in (dino, siglip, llm, projector):
        _randomize(m, g)
    return dino, siglip, projector, llm


def dino_to_timm(sd: dict) -> dict:
    out = {"cls_token": sd["embeddings.cls_token"], "reg_token": sd["embeddings.register_tokens"],
           "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(DINO["num_hidden_layers"]):
        p, q = f"encoder.layer.{i}.", f"blocks.{i}."
        a = p + "attention."
        for kind in ("weight", "bias"):
            out[q + f"attn.qkv.{kind}"] = torch.cat([sd[a + f"{n}_proj.{kind}"] for n in "qkv"])
            out[q + f"attn.proj.{kind}"] = sd[a + f"o_proj.{kind}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[q + f"{n}.{kind}"] = sd[p + f"{n}.{kind}"]
        out[q + "ls1.scale_factor"] = sd[p + "layer_scale1.lambda1"]
        out[q + "ls2.scale_factor"] = sd[p + "layer_scale2.lambda1"]
    return out


def siglip_to_timm(sd: dict) -> dict:
    sd = {k.removeprefix("vision_model."): v for k, v in sd.items()}
    out = {"pos_embed": sd["embeddings.position_embedding.weight"][None],
           "patch_embed.proj.weight": sd["embeddings.patch_embedding.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embedding.bias"],
           "norm.weight": sd["post_layernorm.weight"], "norm.bias": sd["post_layernorm.bias"]}
    for k, v in sd.items():
        if k.startswith("head."):
            out["attn_pool." + k[len("head."):]] = v  # timm's MAP head: unused by Prismatic
    for i in range(SIGLIP["num_hidden_layers"]):
        p, q = f"encoder.layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[q + f"attn.qkv.{kind}"] = torch.cat([sd[p + f"self_attn.{n}_proj.{kind}"] for n in "qkv"])
            out[q + f"attn.proj.{kind}"] = sd[p + f"self_attn.out_proj.{kind}"]
            out[q + f"norm1.{kind}"] = sd[p + f"layer_norm1.{kind}"]
            out[q + f"norm2.{kind}"] = sd[p + f"layer_norm2.{kind}"]
            out[q + f"mlp.fc1.{kind}"] = sd[p + f"mlp.fc1.{kind}"]
            out[q + f"mlp.fc2.{kind}"] = sd[p + f"mlp.fc2.{kind}"]
    return out


def moxin_checkpoint(path: Path, seed: int = 0):
    from safetensors.torch import save_file

    path = Path(path)
    make_tokenizer(path)
    dino, siglip, projector, llm = hf_parts(seed)
    weights = {}
    weights.update({"vision_backbone.featurizer." + k: v for k, v in dino_to_timm(dino.state_dict()).items()})
    weights.update({"vision_backbone.fused_featurizer." + k: v for k, v in siglip_to_timm(siglip.state_dict()).items()})
    weights.update({"projector." + k: v for k, v in projector.state_dict().items()})
    weights.update({"language_model." + k: v for k, v in llm.state_dict().items()})
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["PrismaticForConditionalGeneration"], "model_type": "moxin_vlm",
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "image_sizes": [IMAGE, IMAGE], "image_resize_strategy": "resize-naive",
        "image_token_index": special_ids(path)["<|image_pad|>"], "torch_dtype": "float32",
        "vision_config": {  # the test-size ViTs (the published config names the timm models instead)
            "dino": dict(hidden_size=32, depth=3, num_heads=2, mlp_dim=64, patch_size=14, class_token=True,
                         registers=4, layer_scale=True),
            "siglip": dict(hidden_size=48, depth=3, num_heads=2, mlp_dim=96, patch_size=14)},
        "text_config": {"model_type": "mistral", **TEXT},
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path, (dino, siglip, projector, llm)


def reference_logits(parts, dino_pixels, siglip_pixels, ids: list[int]) -> np.ndarray:
    """Prismatic's forward with the transformers parts: second-to-last hidden states of both
    backbones (patch tokens), concatenated, projected, inserted after BOS."""
    dino, siglip, projector, llm = parts
    with torch.no_grad():
        d = dino(torch.tensor(dino_pixels)[None], output_hidden_states=True).hidden_states[-2][:, 1 + 4:]
        s = siglip(torch.tensor(siglip_pixels)[None], output_hidden_states=True).hidden_states[-2]
        x = torch.cat([d, s], dim=-1)
        x = projector["fc3"](torch.nn.functional.gelu(projector["fc2"](torch.nn.functional.gelu(projector["fc1"](x)))))
        emb = llm.get_input_embeddings()(torch.tensor([ids]))
        inputs = torch.cat([emb[:, :1], x, emb[:, 1:]], dim=1)
        return llm(inputs_embeds=inputs).logits[0].numpy()
