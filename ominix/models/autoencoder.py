"""The image VAEs of the diffusers layout: AutoencoderKL (FLUX.1's, used by Z-Image: latents
scaled by `scaling_factor` around `shift_factor`) and AutoencoderKLFlux2 (FLUX.2's: 32 latent
channels, 2x2 patchified and normalised by the running statistics of its `bn` batch norm).

Tensors are named as in vae/diffusion_pytorch_model.safetensors; convolutions run channels-last
(MLX's layout), so `sanitize` moves the kernels' input-channel axis last. Images are NHWC in
[-1, 1]; latents NHWC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import chunked_attention


@dataclass
class ModelArgs:
    block_out_channels: list = field(default_factory=lambda: [128, 256, 512, 512])
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    decoder_block_out_channels: list | None = None
    scaling_factor: float = 1.0
    shift_factor: float | None = None
    # AutoencoderKLFlux2 only
    batch_norm_eps: float | None = None
    patch_size: list | None = None
    kind: str = "AutoencoderKL"

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known and v is not None}
        args["kind"] = config.get("_class_name", "AutoencoderKL")
        if args["kind"] == "AutoencoderKLFlux2":
            args.setdefault("batch_norm_eps", 1e-4)
            args.setdefault("patch_size", [2, 2])
        return cls(**args)

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.block_out_channels) - 1)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, pytorch_compatible=True)


class ResnetBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.conv1(nn.silu(self.norm1(x)))
        h = self.conv2(nn.silu(self.norm2(h)))
        if "conv_shortcut" in self:
            x = self.conv_shortcut(x)
        return x + h


class SpatialAttention(nn.Module):
    """The mid block's single-head self-attention over all positions (diffusers' Attention with
    group_norm and a residual connection)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = group_norm(channels, groups)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = [nn.Linear(channels, channels)]

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape
        y = self.group_norm(x).reshape(b, 1, h * w, c)
        q, k, v = self.to_q(y), self.to_k(y), self.to_v(y)
        y = chunked_attention(q, k, v, scale=c**-0.5)
        return x + self.to_out[0](y).reshape(b, h, w, c)


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, attention: bool):
        super().__init__()
        self.resnets = [ResnetBlock2D(channels, channels, groups) for _ in range(2)]
        self.attentions = [SpatialAttention(channels, groups)] if attention else []

    def __call__(self, x: mx.array) -> mx.array:
        x = self.resnets[0](x)
        for attention in self.attentions:
            x = attention(x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def __call__(self, x: mx.array) -> mx.array:
        # diffusers pads right/bottom only (padding=0 plus an asymmetric pad)
        return self.conv(mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)]))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        b, h, w, c = x.shape  # nearest-neighbour 2x
        x = mx.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
        return self.conv(x.reshape(b, 2 * h, 2 * w, c))


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, down: bool):
        super().__init__()
        self.resnets = [ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)]
        if down:
            self.downsamplers = [Downsample(cout)]

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        for down in self.get("downsamplers", []):
            x = down(x)
        return x


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, up: bool):
        super().__init__()
        self.resnets = [ResnetBlock2D(cin if i == 0 else cout, cout, groups) for i in range(layers)]
        if up:
            self.upsamplers = [Upsample(cout)]

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        for up in self.get("upsamplers", []):
            x = up(x)
        return x


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        ch, g = args.block_out_channels, args.norm_num_groups
        self.conv_in = nn.Conv2d(args.in_channels, ch[0], 3, padding=1)
        self.down_blocks = [
            EncoderBlock(ch[max(i - 1, 0)], ch[i], args.layers_per_block, g, i < len(ch) - 1)
            for i in range(len(ch))
        ]
        self.mid_block = MidBlock(ch[-1], g, args.mid_block_add_attention)
        self.conv_norm_out = group_norm(ch[-1], g)
        self.conv_out = nn.Conv2d(ch[-1], 2 * args.latent_channels, 3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(nn.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        ch = list(reversed(args.decoder_block_out_channels or args.block_out_channels))
        g = args.norm_num_groups
        self.conv_in = nn.Conv2d(args.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], g, args.mid_block_add_attention)
        self.up_blocks = [
            DecoderBlock(ch[max(i - 1, 0)], ch[i], args.layers_per_block + 1, g, i < len(ch) - 1)
            for i in range(len(ch))
        ]
        self.conv_norm_out = group_norm(ch[-1], g)
        self.conv_out = nn.Conv2d(ch[-1], args.out_channels, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(nn.silu(self.conv_norm_out(x)))


class LatentStats(nn.Module):
    """FLUX.2's `bn`: only its running statistics are used (no affine parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.running_mean = mx.zeros((channels,))
        self.running_var = mx.ones((channels,))


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = Encoder(args)
        self.decoder = Decoder(args)
        c = args.latent_channels
        if args.use_quant_conv:
            self.quant_conv = nn.Conv2d(2 * c, 2 * c, 1)
        if args.use_post_quant_conv:
            self.post_quant_conv = nn.Conv2d(c, c, 1)
        if args.kind == "AutoencoderKLFlux2":
            p = args.patch_size
            self.bn = LatentStats(p[0] * p[1] * c)

    def encode(self, image: mx.array) -> mx.array:
        """NHWC image in [-1, 1] -> the posterior's mean (diffusers' `latent_dist.mode()`)."""
        moments = self.encoder(image)
        if "quant_conv" in self:
            moments = self.quant_conv(moments)
        return moments[..., : self.args.latent_channels]

    def decode(self, z: mx.array) -> mx.array:
        if "post_quant_conv" in self:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    # --- latent normalisation, per family --------------------------------------------------

    def bn_stats(self) -> tuple[mx.array, mx.array]:
        std = mx.sqrt(self.bn.running_var + self.args.batch_norm_eps)
        return self.bn.running_mean, std

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            if name.endswith("num_batches_tracked"):
                continue
            if w.ndim == 4 and ".attentions." in name:  # old 1x1-conv attention projections
                w = w.reshape(w.shape[0], w.shape[1])
            elif w.ndim == 4:  # torch conv (out, in, kh, kw) -> MLX (out, kh, kw, in)
                w = w.transpose(0, 2, 3, 1)
            out[name] = w
        return out
