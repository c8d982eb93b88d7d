"""Moxin-7B-VLM (moxin-org/Moxin-7B-VLM*): a Prismatic VLM. Two ViTs read the same 224px picture
(DINOv2 ViT-L/14 with 4 registers and LayerScale, ImageNet-normalised; SigLIP SO400M/14,
normalised to [-1, 1]); the second-to-last block's patch tokens of both are concatenated per patch,
a 3-layer GELU MLP projects them to the decoder width, and the 256 visual tokens enter a Mistral
decoder right after BOS.

The module tree is the Prismatic Hugging Face layout (what OminiX-MLX's moxin-vlm crate reads):
`vision_backbone.featurizer.*` (DINOv2, timm names), `vision_backbone.fused_featurizer.*`
(SigLIP, timm names), `projector.fc1..fc3`, `language_model.model.*` / `language_model.lm_head`.
`sanitize()` folds the variants: `llm_backbone.llm.*`, `featurizer.0/1`, LayerScale `scale_factor`,
PyTorch conv layout; SigLIP's attention-pool head is unused and dropped.

The ViT sizes come from the timm ids in config.json (`timm_model_ids`), or from an explicit
`vision_config: {"dino": {...}, "siglip": {...}}` (used by test checkpoints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ominix.models import mistral
from ominix.models.qwen3_vl import Media

# --- config -----------------------------------------------------------------------------------


@dataclass
class ViTArgs:
    hidden_size: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 14
    image_size: int = 224
    class_token: bool = False
    registers: int = 0
    layer_scale: bool = False
    act: str = "gelu"  # timm's default nn.GELU (exact) for both backbones

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


TIMM_PRESETS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": dict(hidden_size=1024, depth=24, num_heads=16, mlp_dim=4096,
                                                  class_token=True, registers=4, layer_scale=True),
    "vit_so400m_patch14_siglip_224": dict(hidden_size=1152, depth=27, num_heads=16, mlp_dim=4304),
}
DEFAULT_TIMM = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
# Moxin-7B's decoder, for configs without text_config (as OminiX-MLX's moxin-vlm crate assumes).
MOXIN_7B_TEXT = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=14336, vocab_size=32064, rms_norm_eps=1e-5, rope_theta=10000.0)


@dataclass
class ModelArgs:
    model_type: str
    text: mistral.ModelArgs
    dino: ViTArgs
    siglip: ViTArgs
    image_token_index: int = 32000

    @property
    def vocab_size(self) -> int:
        return self.text.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        return self.text.max_position_embeddings

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        size = (config.get("image_sizes") or [224])[0]
        ids = config.get("timm_model_ids") or DEFAULT_TIMM
        explicit = config.get("vision_config") or {}
        vits = []
        for key, timm_id in zip(("dino", "siglip"), ids):
            spec = explicit.get(key) or TIMM_PRESETS.get(timm_id.split("/")[-1])
            if spec is None:
                raise ValueError(f"unknown vision backbone '{timm_id}'")
            fields = {f.name for f in dataclasses.fields(ViTArgs)}
            vits.append(ViTArgs(**{"image_size": size, **{k: v for k, v in spec.items() if k in fields}}))
        text = mistral.ModelArgs.from_dict({"model_type": "mistral", **(config.get("text_config") or MOXIN_7B_TEXT)})
        return cls(config.get("model_type", "moxin_vlm"), text, *vits,
                   image_token_index=config.get("image_token_index", 32000))


# --- vision -----------------------------------------------------------------------------------


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = mx.ones((dim,))

    def __call__(self, x):
        return x * self.gamma


class ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).transpose(2, 0, 3, 1, 4)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(B, N, -1))


class ViTMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.gelu_approx if act in ("gelu_tanh", "gelu_pytorch_tanh") else nn.gelu

    def __call__(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, a: ViTArgs):
        super().__init__()
        self.norm1 = nn.LayerNorm(a.hidden_size, eps=1e-6)
        self.attn = ViTAttention(a.hidden_size, a.num_heads)
        self.norm2 = nn.LayerNorm(a.hidden_size, eps=1e-6)
        self.mlp = ViTMLP(a.hidden_size, a.mlp_dim, a.act)
        self.layer_scale = a.layer_scale
        if a.layer_scale:  # DINOv2
            self.ls1, self.ls2 = LayerScale(a.hidden_size), LayerScale(a.hidden_size)

    def __call__(self, x):
        attn = self.attn(self.norm1(x))
        x = x + (self.ls1(attn) if self.layer_scale else attn)
        mlp = self.mlp(self.norm2(x))
        return x + (self.ls2(mlp) if self.layer_scale else mlp)


class PatchEmbed(nn.Module):
    def __init__(self, a: ViTArgs):
        super().__init__()
        self.proj = nn.Conv2d(3, a.hidden_size, a.patch_size, stride=a.patch_size)

    def __call__(self, pixels: mx.array) -> mx.array:
        """pixels [B, H, W, 3] -> [B, patches, hidden] (row-major)."""
        x = self.proj(pixels.astype(self.proj.weight.dtype))
        return x.reshape(x.shape[0], -1, x.shape[-1])


class ViT(nn.Module):
    """A timm VisionTransformer, read out as `get_intermediate_layers(n={depth - 2})`: the patch
    tokens after the second-to-last block, without the final norm."""

    def __init__(self, a: ViTArgs):
        super().__init__()
        self.args = a
        self.patch_embed = PatchEmbed(a)
        prefix = 1 if a.class_token else 0
        if a.class_token:
            self.cls_token = mx.zeros((1, 1, a.hidden_size))
        if a.registers:
            self.reg_token = mx.zeros((1, a.registers, a.hidden_size))
        self.pos_embed = mx.zeros((1, a.patches + prefix, a.hidden_size))
        self.blocks = [ViTBlock(a) for _ in range(a.depth)]
        self.norm = nn.LayerNorm(a.hidden_size, eps=1e-6)  # stored; the features are read before it

    def __call__(self, pixels: mx.array) -> mx.array:
        a = self.args
        x = self.patch_embed(pixels)
        B, N, D = x.shape
        if self.pos_embed.shape[1] == N:  # timm's no_embed_class: positions for patches only
            x = x + self.pos_embed
            if a.class_token:
                x = mx.concatenate([mx.broadcast_to(self.cls_token, (B, 1, D)), x], axis=1)
        else:
            if a.class_token:
                x = mx.concatenate([mx.broadcast_to(self.cls_token, (B, 1, D)), x], axis=1)
            x = x + self.pos_embed
        if a.registers:  # registers follow the class token and carry no position
            regs = mx.broadcast_to(self.reg_token, (B, a.registers, D))
            x = mx.concatenate([x[:, :1], regs, x[:, 1:]], axis=1) if a.class_token else mx.concatenate([regs, x], 1)
        for block in self.blocks[: a.depth - 1]:
            x = block(x)
        return x[:, (1 if a.class_token else 0) + a.registers :]


class VisionBackbone(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.featurizer = ViT(args.dino)
        self.fused_featurizer = ViT(args.siglip)

    def __call__(self, dino_pixels, siglip_pixels):
        return mx.concatenate([self.featurizer(dino_pixels), self.fused_featurizer(siglip_pixels)], axis=-1)


class Projector(nn.Module):
    """Prismatic's fused-backbone projector: fc1 (x4 width) -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def __call__(self, x):
        return self.fc3(nn.gelu(self.fc2(nn.gelu(self.fc1(x)))))


# --- the whole model ----------------------------------------------------------------------------


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.vision_backbone = VisionBackbone(args)
        self.projector = Projector(args.dino.hidden_size + args.siglip.hidden_size, args.text.hidden_size)
        self.language_model = mistral.Model(args.text)

    @property
    def layers(self):
        return self.language_model.layers

    def cache_specs(self):
        return self.language_model.cache_specs()

    def __call__(self, inputs: mx.array, cache=None, media: Media | None = None) -> mx.array:
        body = self.language_model.model
        h = body.embed_tokens(inputs)
        cache = cache if cache is not None else [None] * len(body.layers)
        offset = cache[0].offset if cache[0] is not None else 0
        if media is not None and isinstance(offset, int) and offset < media.length:
            rows = media.index[offset : offset + inputs.shape[1]]
            h = mx.where((rows >= 0)[None, :, None], media.embeds[mx.maximum(rows, 0)][None].astype(h.dtype), h)
        mask = body.mask(h.shape[1], cache[0])
        for layer, layer_cache in zip(body.layers, cache):
            h = layer(h, mask, layer_cache)
        return self.language_model.head(body.norm(h))

    # -- images (the engine's VisionPrompt protocol, see ominix/engine/vlm.py) --

    def image_tokens(self, grid) -> int:
        return self.args.dino.patches

    def encode_image(self, pixels, grid) -> tuple[mx.array, list]:
        """pixels [6, H, W]: the DINOv2-normalised picture, then the SigLIP-normalised one."""
        x = mx.array(pixels).transpose(1, 2, 0)[None]  # -> NHWC
        return self.projector(self.vision_backbone(x[..., :3], x[..., 3:]))[0], []

    def place_images(self, ids: list[int], count: int) -> list[int]:
        """Prismatic puts the picture right after BOS (its templates have no image token)."""
        if count != 1:
            raise ValueError("this model takes one image per conversation")
        return ids[:1] + [self.args.image_token_index] * self.args.dino.patches + ids[1:]

    def media_inputs(self, prompt: list[int], grids: list, features: list) -> Media:
        ids = np.asarray(prompt)
        visual = ids == self.args.image_token_index
        index = np.full(len(ids), -1, np.int64)
        index[visual] = np.arange(int(visual.sum()))
        positions = mx.broadcast_to(mx.arange(len(ids))[None], (3, len(ids)))
        return Media(mx.array(index), features[0][0], [], positions, 0, len(ids))

    # -- loading --

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            name = name.replace("llm_backbone.llm.", "language_model.")
            name = name.replace("vision_backbone.featurizer.0.", "vision_backbone.featurizer.")
            name = name.replace("vision_backbone.featurizer.1.", "vision_backbone.fused_featurizer.")
            if ".attn_pool." in name or ".head." in name or name.endswith((".fc_norm.weight", ".fc_norm.bias")) \
                    or "rotary_emb.inv_freq" in name:
                continue
            if name.endswith(".scale_factor"):  # LayerScale, as Prismatic's HF export renames gamma
                name = name[: -len("scale_factor")] + "gamma"
            if name.endswith("patch_embed.proj.weight") and w.ndim == 4 and w.shape[1] == 3 and w.shape[-1] != 3:
                w = w.transpose(0, 2, 3, 1)  # PyTorch [O, C, P, P] -> MLX [O, P, P, C]
            if self.args.text.tie_word_embeddings and name.startswith("language_model.lm_head."):
                continue
            out[name] = w
        return out
