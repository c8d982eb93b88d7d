"""Z-Image single-stream DiT (diffusers' ZImageTransformer2DModel; Tongyi-MAI/Z-Image-Turbo).

Image patches and caption features are refined separately (`noise_refiner` with timestep
modulation, `context_refiner` without), then run as one sequence [image, caption] through the
main `layers`. Every block is sandwich-normed (RMSNorm before and after attention and MLP) with
tanh-gated modulation from a 256-wide time embedding. Sequences are padded to multiples of 32
with learned pad tokens; RoPE rotates interleaved pairs over three axes (caption index, h, w).
Tensor names follow transformer/diffusion_pytorch_model*.safetensors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.flux2 import apply_rope, heads
from ominix.models.layers import chunked_attention

ADALN_DIM = 256
SEQ_MULTIPLE = 32


@dataclass
class ModelArgs:
    all_patch_size: list = field(default_factory=lambda: [2])
    all_f_patch_size: list = field(default_factory=lambda: [1])
    in_channels: int = 16
    dim: int = 3840
    n_layers: int = 30
    n_refiner_layers: int = 2
    n_heads: int = 30
    n_kv_heads: int = 30
    norm_eps: float = 1e-5
    qk_norm: bool = True
    cap_feat_dim: int = 2560
    rope_theta: float = 256.0
    t_scale: float = 1000.0
    axes_dims: list = field(default_factory=lambda: [32, 48, 48])
    axes_lens: list = field(default_factory=lambda: [1024, 512, 512])

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = cls(**{k: v for k, v in config.items() if k in known})
        if config.get("siglip_feat_dim"):
            raise ValueError("Z-Image Omni (siglip_feat_dim) is not supported")
        return args

    @property
    def patch(self) -> int:
        return self.all_patch_size[0]


def timestep_embedding(t: mx.array, dim: int, max_period: float = 10000.0) -> mx.array:
    half = dim // 2
    freqs = mx.exp(-math.log(max_period) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


def rope_angles(ids: mx.array, axes_dims, theta: float) -> tuple[mx.array, mx.array]:
    """ids (..., 3) int positions -> cos, sin (..., head_dim / 2)."""
    angles = []
    for i, d in enumerate(axes_dims):
        freqs = 1.0 / theta ** (mx.arange(0, d, 2, dtype=mx.float32) / d)
        angles.append(ids[..., i : i + 1].astype(mx.float32) * freqs)
    a = mx.concatenate(angles, axis=-1)
    return mx.cos(a), mx.sin(a)


class TimestepEmbedder(nn.Module):
    def __init__(self, out: int, mid: int = 1024, channels: int = 256):
        super().__init__()
        self.channels = channels
        self.mlp = [nn.Linear(channels, mid), nn.SiLU(), nn.Linear(mid, out)]

    def __call__(self, t: mx.array) -> mx.array:
        x = timestep_embedding(t, self.channels)
        for layer in self.mlp:
            x = layer(x)
        return x


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.norm_q = nn.RMSNorm(dim // n_heads, eps=eps)
        self.norm_k = nn.RMSNorm(dim // n_heads, eps=eps)
        self.to_out = [nn.Linear(dim, dim, bias=False)]

    def __call__(self, x: mx.array, rope, mask) -> mx.array:
        n = self.n_heads
        q = apply_rope(self.norm_q(heads(self.to_q(x), n)), *rope)
        k = apply_rope(self.norm_k(heads(self.to_k(x), n)), *rope)
        v = heads(self.to_v(x), n)
        out = chunked_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask)
        b, h, length, d = out.shape
        return self.to_out[0](out.transpose(0, 2, 1, 3).reshape(b, length, h * d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w2(nn.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, modulation: bool = True):
        super().__init__()
        dim, eps = args.dim, args.norm_eps
        self.attention = Attention(dim, args.n_heads, 1e-5)
        self.feed_forward = FeedForward(dim, int(dim / 3 * 8))
        self.attention_norm1 = nn.RMSNorm(dim, eps=eps)
        self.ffn_norm1 = nn.RMSNorm(dim, eps=eps)
        self.attention_norm2 = nn.RMSNorm(dim, eps=eps)
        self.ffn_norm2 = nn.RMSNorm(dim, eps=eps)
        if modulation:
            self.adaLN_modulation = [nn.Linear(min(dim, ADALN_DIM), 4 * dim)]

    def __call__(self, x: mx.array, rope, mask, adaln: mx.array | None = None) -> mx.array:
        if "adaLN_modulation" not in self:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), rope, mask))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        mod = self.adaLN_modulation[0](adaln)[:, None, :]
        scale_msa, gate_msa, scale_mlp, gate_mlp = mx.split(mod, 4, axis=-1)
        attn = self.attention(self.attention_norm1(x) * (1 + scale_msa), rope, mask)
        x = x + mx.tanh(gate_msa) * self.attention_norm2(attn)
        ff = self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp))
        return x + mx.tanh(gate_mlp) * self.ffn_norm2(ff)


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = [nn.SiLU(), nn.Linear(min(dim, ADALN_DIM), dim)]

    def __call__(self, x: mx.array, c: mx.array) -> mx.array:
        scale = 1 + self.adaLN_modulation[1](nn.silu(c))[:, None, :]
        return self.linear(mx.fast.layer_norm(x, None, None, 1e-6) * scale)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        p, f = args.patch, args.all_f_patch_size[0]
        key = f"{p}-{f}"
        patch_dim = f * p * p * args.in_channels
        self.all_x_embedder = {key: nn.Linear(patch_dim, args.dim)}
        self.all_final_layer = {key: FinalLayer(args.dim, patch_dim)}
        self.noise_refiner = [TransformerBlock(args) for _ in range(args.n_refiner_layers)]
        self.context_refiner = [
            TransformerBlock(args, modulation=False) for _ in range(args.n_refiner_layers)
        ]
        self.t_embedder = TimestepEmbedder(min(args.dim, ADALN_DIM))
        self.cap_embedder = [nn.RMSNorm(args.cap_feat_dim, eps=args.norm_eps),
                             nn.Linear(args.cap_feat_dim, args.dim)]  # fmt: skip
        self.x_pad_token = mx.zeros((1, args.dim))
        self.cap_pad_token = mx.zeros((1, args.dim))
        self.layers = [TransformerBlock(args) for _ in range(args.n_layers)]
        self.key = key

    # --- sequences -------------------------------------------------------------------------

    def caption_layout(self, lengths: list[int]) -> dict:
        """Per caption: its padded length, positions (1 + i, 0, 0) and the batch key mask."""
        padded = [n + (-n % SEQ_MULTIPLE) for n in lengths]
        width = max(padded)
        ids = mx.stack([mx.arange(1, width + 1), mx.zeros(width, mx.int32),
                        mx.zeros(width, mx.int32)], axis=-1)  # fmt: skip
        return {"lengths": lengths, "padded": padded, "width": width, "ids": ids}

    def image_ids(self, h: int, w: int, cap_padded: int) -> tuple[mx.array, int]:
        """Positions (cap_len + 1, row, col) of an h x w token grid, then (0, 0, 0) padding."""
        n = h * w
        rows = mx.repeat(mx.arange(h), w)
        cols = mx.tile(mx.arange(w), h)
        ids = mx.stack([mx.full((n,), cap_padded + 1), rows, cols], axis=-1)
        pad = -n % SEQ_MULTIPLE
        if pad:
            ids = mx.concatenate([ids, mx.zeros((pad, 3), ids.dtype)], axis=0)
        return ids, n

    def prepare(self, cap_lengths: list[int], h: int, w: int) -> dict:
        """Everything about the token layout that stays fixed over the denoising steps."""
        caps = self.caption_layout(cap_lengths)
        theta, axes = self.args.rope_theta, self.args.axes_dims
        img_ids = [self.image_ids(h, w, p)[0] for p in caps["padded"]]
        n_img = h * w
        n_x = img_ids[0].shape[0]
        cap_valid = mx.arange(caps["width"])[None] < mx.array(caps["padded"])[:, None]
        x_rope = rope_angles(mx.stack(img_ids)[:, None], axes, theta)  # (B, 1, Nx, D/2)
        cap_rope = rope_angles(caps["ids"][None, None], axes, theta)
        uni_rope = tuple(mx.concatenate([a, mx.broadcast_to(b, (a.shape[0],) + b.shape[1:])],
                                        axis=2) for a, b in zip(x_rope, cap_rope))  # fmt: skip
        uni_valid = mx.concatenate([mx.ones((len(cap_lengths), n_x), mx.bool_), cap_valid], 1)
        ragged = len(set(caps["padded"])) > 1
        return {
            "h": h, "w": w, "n_img": n_img, "n_x": n_x, "caps": caps,
            "x_rope": x_rope, "cap_rope": cap_rope, "uni_rope": uni_rope,
            "cap_mask": cap_valid[:, None, None, :] if ragged else None,
            "uni_mask": uni_valid[:, None, None, :] if ragged else None,
            "cap_pad": mx.arange(caps["width"])[None] >= mx.array(cap_lengths)[:, None],
        }  # fmt: skip

    def patchify(self, latents: mx.array) -> mx.array:
        """(B, H, W, C) -> (B, H/p * W/p, p * p * C), features ordered (dy, dx, c)."""
        b, hh, ww, c = latents.shape
        p = self.args.patch
        x = latents.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (hh // p) * (ww // p), p * p * c)

    def unpatchify(self, x: mx.array, h: int, w: int) -> mx.array:
        b, p, c = x.shape[0], self.args.patch, self.args.in_channels
        x = x.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, h * p, w * p, c)

    def embed_captions(self, caps: mx.array, layout: dict) -> mx.array:
        """caps (B, width, cap_feat_dim), valid features first -> refined caption tokens."""
        x = self.cap_embedder[1](self.cap_embedder[0](caps))
        x = mx.where(layout["cap_pad"][..., None], self.cap_pad_token.astype(x.dtype), x)
        for block in self.context_refiner:
            x = block(x, layout["cap_rope"], layout["cap_mask"])
        return x

    def __call__(self, latents: mx.array, t: mx.array, cap_tokens: mx.array, layout: dict):
        """latents (B, H, W, C); t (B,) = 1 - sigma; cap_tokens from `embed_captions` (they do
        not depend on the step). Returns the model output (B, H, W, C)."""
        adaln = self.t_embedder(t * self.args.t_scale).astype(latents.dtype)
        x = self.all_x_embedder[self.key](self.patchify(latents))
        n_img, n_x = layout["n_img"], layout["n_x"]
        if n_x > n_img:
            pad = mx.broadcast_to(self.x_pad_token.astype(x.dtype), (x.shape[0], n_x - n_img, x.shape[-1]))
            x = mx.concatenate([x, pad], axis=1)
        for block in self.noise_refiner:
            x = block(x, layout["x_rope"], None, adaln)
        x = mx.concatenate([x, cap_tokens.astype(x.dtype)], axis=1)
        for block in self.layers:
            x = block(x, layout["uni_rope"], layout["uni_mask"], adaln)
        x = self.all_final_layer[self.key](x[:, :n_img], adaln)
        return self.unpatchify(x, layout["h"], layout["w"])
