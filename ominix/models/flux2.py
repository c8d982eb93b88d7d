"""FLUX.2 flow transformer (diffusers' Flux2Transformer2DModel; FLUX.2 [klein] 4B/9B and dev).

Double-stream blocks keep text and image tokens in separate weights and attend jointly; single-
stream blocks run both as one sequence with a fused qkv+MLP projection. Modulation is shared by
all blocks of a kind (one `double_stream_modulation_*` / `single_stream_modulation` from the time
embedding), and RoPE rotates interleaved pairs over four position axes (t, h, w, l) for text and
image tokens alike. Tensor names follow transformer/diffusion_pytorch_model*.safetensors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import chunked_attention


@dataclass
class ModelArgs:
    in_channels: int = 128
    out_channels: int | None = None
    patch_size: int = 1
    num_layers: int = 8
    num_single_layers: int = 48
    attention_head_dim: int = 128
    num_attention_heads: int = 48
    joint_attention_dim: int = 15360
    timestep_guidance_channels: int = 256
    mlp_ratio: float = 3.0
    axes_dims_rope: list = field(default_factory=lambda: [32, 32, 32, 32])
    rope_theta: float = 2000.0
    eps: float = 1e-6
    guidance_embeds: bool = True

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in known})

    @property
    def dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


def timestep_embedding(t: mx.array, dim: int, max_period: float = 10000.0) -> mx.array:
    """Sinusoidal embedding, cosines first (diffusers' flip_sin_to_cos=True, shift 0)."""
    half = dim // 2
    freqs = mx.exp(-math.log(max_period) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


def rope_angles(ids: mx.array, axes_dims, theta: float) -> tuple[mx.array, mx.array]:
    """ids (L, n_axes) -> cos, sin of shape (L, head_dim / 2): one angle per rotated pair."""
    angles = []
    for i, d in enumerate(axes_dims):
        freqs = 1.0 / theta ** (mx.arange(0, d, 2, dtype=mx.float32) / d)
        angles.append(ids[:, i].astype(mx.float32)[:, None] * freqs[None])
    a = mx.concatenate(angles, axis=-1)
    return mx.cos(a), mx.sin(a)


def apply_rope(x: mx.array, cos: mx.array, sin: mx.array) -> mx.array:
    """Rotate interleaved pairs (x0, x1), (x2, x3), ... of x (B, H, L, D) by the angles."""
    b, h, n, d = x.shape
    pairs = x.astype(mx.float32).reshape(b, h, n, d // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = mx.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
    return out.reshape(b, h, n, d).astype(x.dtype)


def attention(q: mx.array, k: mx.array, v: mx.array, rope) -> mx.array:
    """q, k, v (B, H, L, D) -> (B, L, H * D)."""
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    out = chunked_attention(q, k, v, scale=q.shape[-1] ** -0.5)
    b, h, n, d = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def heads(x: mx.array, n_heads: int) -> mx.array:
    b, n, _ = x.shape
    return x.reshape(b, n, n_heads, -1).transpose(0, 2, 1, 3)


def modulate(x: mx.array, shift: mx.array, scale: mx.array, eps: float) -> mx.array:
    return mx.fast.layer_norm(x, None, None, eps) * (1 + scale) + shift


class TimestepEmbedding(nn.Module):
    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(channels, dim, bias=False)
        self.linear_2 = nn.Linear(dim, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(nn.silu(self.linear_1(x)))


class TimeGuidanceEmbed(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.channels = args.timestep_guidance_channels
        self.timestep_embedder = TimestepEmbedding(self.channels, args.dim)
        if args.guidance_embeds:
            self.guidance_embedder = TimestepEmbedding(self.channels, args.dim)

    def __call__(self, timestep: mx.array, guidance: mx.array | None) -> mx.array:
        emb = self.timestep_embedder(timestep_embedding(timestep, self.channels))
        if guidance is not None and "guidance_embedder" in self:
            emb = emb + self.guidance_embedder(timestep_embedding(guidance, self.channels))
        return emb


class Modulation(nn.Module):
    def __init__(self, dim: int, sets: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim * 3 * sets, bias=False)

    def __call__(self, temb: mx.array) -> list[mx.array]:
        """(shift, scale, gate) x sets, each (B, 1, dim)."""
        mod = self.linear(nn.silu(temb))[:, None, :]
        return mx.split(mod, mod.shape[-1] // temb.shape[-1], axis=-1)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear_in = nn.Linear(dim, 2 * hidden, bias=False)
        self.linear_out = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        gate, up = mx.split(self.linear_in(x), 2, axis=-1)
        return self.linear_out(nn.silu(gate) * up)


class JointAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, head_dim: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            setattr(self, name, nn.Linear(dim, dim, bias=False))
        for name in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            setattr(self, name, nn.RMSNorm(head_dim, eps=eps))
        self.to_out = [nn.Linear(dim, dim, bias=False)]
        self.to_add_out = nn.Linear(dim, dim, bias=False)

    def __call__(self, img: mx.array, txt: mx.array, rope) -> tuple[mx.array, mx.array]:
        n = self.n_heads
        q = mx.concatenate([self.norm_added_q(heads(self.add_q_proj(txt), n)),
                            self.norm_q(heads(self.to_q(img), n))], axis=2)  # fmt: skip
        k = mx.concatenate([self.norm_added_k(heads(self.add_k_proj(txt), n)),
                            self.norm_k(heads(self.to_k(img), n))], axis=2)  # fmt: skip
        v = mx.concatenate([heads(self.add_v_proj(txt), n), heads(self.to_v(img), n)], axis=2)
        out = attention(q, k, v, rope)
        n_txt = txt.shape[1]
        return self.to_out[0](out[:, n_txt:]), self.to_add_out(out[:, :n_txt])


class TransformerBlock(nn.Module):
    """Double-stream block: separate norms/MLPs for image and text, joint attention."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.eps = args.eps
        dim, hidden = args.dim, int(args.dim * args.mlp_ratio)
        self.attn = JointAttention(dim, args.num_attention_heads, args.attention_head_dim, args.eps)
        self.ff = FeedForward(dim, hidden)
        self.ff_context = FeedForward(dim, hidden)

    def __call__(self, img, txt, mod_img, mod_txt, rope):
        sh, sc, g, sh2, sc2, g2 = mod_img
        csh, csc, cg, csh2, csc2, cg2 = mod_txt
        attn_img, attn_txt = self.attn(
            modulate(img, sh, sc, self.eps), modulate(txt, csh, csc, self.eps), rope
        )
        img = img + g * attn_img
        img = img + g2 * self.ff(modulate(img, sh2, sc2, self.eps))
        txt = txt + cg * attn_txt
        txt = txt + cg2 * self.ff_context(modulate(txt, csh2, csc2, self.eps))
        return img, txt


class ParallelSelfAttention(nn.Module):
    """Single-stream: one projection makes q, k, v and the MLP input; one takes both out."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        dim = args.dim
        self.n_heads = args.num_attention_heads
        self.mlp_hidden = int(dim * args.mlp_ratio)
        self.to_qkv_mlp_proj = nn.Linear(dim, 3 * dim + 2 * self.mlp_hidden, bias=False)
        self.norm_q = nn.RMSNorm(args.attention_head_dim, eps=args.eps)
        self.norm_k = nn.RMSNorm(args.attention_head_dim, eps=args.eps)
        self.to_out = nn.Linear(dim + self.mlp_hidden, dim, bias=False)

    def __call__(self, x: mx.array, rope) -> mx.array:
        dim = x.shape[-1]
        proj = self.to_qkv_mlp_proj(x)
        q, k, v = (heads(proj[..., i * dim : (i + 1) * dim], self.n_heads) for i in range(3))
        gate, up = mx.split(proj[..., 3 * dim :], 2, axis=-1)
        out = attention(self.norm_q(q), self.norm_k(k), v, rope)
        return self.to_out(mx.concatenate([out, nn.silu(gate) * up], axis=-1))


class SingleTransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.eps = args.eps
        self.attn = ParallelSelfAttention(args)

    def __call__(self, x, mod, rope):
        shift, scale, gate = mod
        return x + gate * self.attn(modulate(x, shift, scale, self.eps), rope)


class NormOut(nn.Module):
    """AdaLayerNormContinuous: scale first, then shift."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.linear = nn.Linear(dim, 2 * dim, bias=False)

    def __call__(self, x: mx.array, temb: mx.array) -> mx.array:
        scale, shift = mx.split(self.linear(nn.silu(temb))[:, None, :], 2, axis=-1)
        return modulate(x, shift, scale, self.eps)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        dim = args.dim
        out = args.patch_size**2 * (args.out_channels or args.in_channels)
        self.time_guidance_embed = TimeGuidanceEmbed(args)
        self.double_stream_modulation_img = Modulation(dim, 2)
        self.double_stream_modulation_txt = Modulation(dim, 2)
        self.single_stream_modulation = Modulation(dim, 1)
        self.x_embedder = nn.Linear(args.in_channels, dim, bias=False)
        self.context_embedder = nn.Linear(args.joint_attention_dim, dim, bias=False)
        self.transformer_blocks = [TransformerBlock(args) for _ in range(args.num_layers)]
        self.single_transformer_blocks = [
            SingleTransformerBlock(args) for _ in range(args.num_single_layers)
        ]
        self.norm_out = NormOut(dim, args.eps)
        self.proj_out = nn.Linear(dim, out, bias=False)

    def rope(self, txt_ids: mx.array, img_ids: mx.array) -> tuple[mx.array, mx.array]:
        """Angles for the joint sequence [text, image]; fixed over the denoising steps."""
        ids = mx.concatenate([txt_ids, img_ids], axis=0)
        return rope_angles(ids, self.args.axes_dims_rope, self.args.rope_theta)

    def __call__(
        self,
        hidden_states: mx.array,
        encoder_hidden_states: mx.array,
        timestep: mx.array,
        rope: tuple[mx.array, mx.array],
        guidance: mx.array | None = None,
    ) -> mx.array:
        """hidden_states (B, N_img, in_channels), encoder_hidden_states (B, N_txt, joint_dim),
        timestep (B,) in [0, 1] (sigma), rope from `self.rope(txt_ids, img_ids)`."""
        temb = self.time_guidance_embed(
            timestep * 1000, None if guidance is None else guidance * 1000
        ).astype(hidden_states.dtype)
        mod_img = self.double_stream_modulation_img(temb)
        mod_txt = self.double_stream_modulation_txt(temb)
        mod_single = self.single_stream_modulation(temb)
        img = self.x_embedder(hidden_states)
        txt = self.context_embedder(encoder_hidden_states)
        for block in self.transformer_blocks:
            img, txt = block(img, txt, mod_img, mod_txt, rope)
        x = mx.concatenate([txt, img], axis=1)
        for block in self.single_transformer_blocks:
            x = block(x, mod_single, rope)
        x = self.norm_out(x[:, txt.shape[1] :], temb)
        return self.proj_out(x)
