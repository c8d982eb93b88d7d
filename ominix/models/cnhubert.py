"""HuBERT base (TencentGameMate/chinese-hubert-base as GPT-SoVITS uses it): a 16 kHz waveform ->
the SSL features (`last_hidden_state`, 50 frames a second, 768 wide) that SoVITS quantizes into
the reference clip's semantic tokens.

Tensor names are transformers' `HubertModel` as published (`config.json` + `pytorch_model.bin`):
`feature_extractor.conv_layers.N` (the strided waveform convolutions, GroupNorm on the first),
`feature_projection`, `encoder.pos_conv_embed.conv` (a weight-normed grouped convolution, its
`weight_g` / `weight_v` folded by `sanitize`), `encoder.layer_norm` and post-norm
`encoder.layers.N`. Only inference: no masking, no dropout. GPT-SoVITS feeds the raw waveform
(its feature extractor's normalization is bypassed), and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.signal_conv import MatmulConv1d


@dataclass
class ModelArgs:
    model_type: str = "hubert"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: list = field(default_factory=lambda: [512] * 7)
    conv_kernel: list = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_proj_layer_norm: bool = True
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        names = set(cls.__dataclass_fields__)
        args = cls(**{k: v for k, v in config.items() if k in names})
        if args.feat_extract_norm != "group" or args.do_stable_layer_norm:
            raise ValueError("only HuBERT base's layout (group-norm feature encoder, post-norm layers) is supported")
        return args


def fold_weight_norm(g: mx.array, v: mx.array, dim: int) -> mx.array:
    """weight_norm's weight = g * v / |v|, the norm over every axis but `dim`."""
    axes = tuple(a for a in range(v.ndim) if a != dim)
    return g * v / mx.sqrt(mx.sum(v * v, axis=axes, keepdims=True))


class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool, norm: bool):
        super().__init__()
        self.conv = MatmulConv1d(cin, cout, kernel, stride=stride, bias=bias)
        if norm:  # GroupNorm with one group per channel: each channel normalized over time
            self.layer_norm = nn.GroupNorm(cout, cout, eps=1e-5, affine=True, pytorch_compatible=True)

    def __call__(self, x):
        x = self.conv(x)
        if "layer_norm" in self:
            x = self.layer_norm(x)
        return nn.gelu(x)


class FeatureEncoder(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        dims = [1] + list(a.conv_dim)
        self.conv_layers = [ConvLayer(dims[i], dims[i + 1], a.conv_kernel[i], a.conv_stride[i], a.conv_bias, i == 0)
                            for i in range(len(a.conv_dim))]  # fmt: skip

    def __call__(self, wav):
        x = wav[:, :, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        if a.feat_proj_layer_norm:
            self.layer_norm = nn.LayerNorm(a.conv_dim[-1], eps=a.layer_norm_eps)
        self.projection = nn.Linear(a.conv_dim[-1], a.hidden_size)

    def __call__(self, x):
        return self.projection(self.layer_norm(x) if "layer_norm" in self else x)


class PositionalConv(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        k = a.num_conv_pos_embeddings
        self.conv = nn.Conv1d(a.hidden_size, a.hidden_size, k, padding=k // 2, groups=a.num_conv_pos_embedding_groups)
        self.trim = 1 if k % 2 == 0 else 0  # "same" length for an even kernel

    def __call__(self, x):
        y = self.conv(x)
        if self.trim:
            y = y[:, : -self.trim]
        return nn.gelu(y)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x):
        B, L, D = x.shape
        q, k, v = (p(x).reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, L, D))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.output_dense = nn.Linear(hidden, dim)

    def __call__(self, x):
        return self.output_dense(nn.gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.attention = Attention(a.hidden_size, a.num_attention_heads)
        self.layer_norm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.feed_forward = FeedForward(a.hidden_size, a.intermediate_size)
        self.final_layer_norm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def __call__(self, x):
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.pos_conv_embed = PositionalConv(a)
        self.layer_norm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.layers = [EncoderLayer(a) for _ in range(a.num_hidden_layers)]

    def __call__(self, x):
        x = self.layer_norm(x + self.pos_conv_embed(x))
        for layer in self.layers:
            x = layer(x)
        return x


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.feature_extractor = FeatureEncoder(args)
        self.feature_projection = FeatureProjection(args)
        self.encoder = Encoder(args)

    def __call__(self, wav: mx.array) -> mx.array:
        """wav [B, samples] at 16 kHz -> last_hidden_state [B, frames, hidden]."""
        return self.encoder(self.feature_projection(self.feature_extractor(wav)))

    def sanitize(self, weights: dict) -> dict:
        out = {}
        pos = "encoder.pos_conv_embed.conv."
        g = weights.pop(pos + "weight_g", weights.pop(pos + "parametrizations.weight.original0", None))
        v = weights.pop(pos + "weight_v", weights.pop(pos + "parametrizations.weight.original1", None))
        if g is not None and v is not None:
            weights[pos + "weight"] = fold_weight_norm(g, v, dim=2)
        for name, w in weights.items():
            name = name.removeprefix("hubert.")
            if name == "masked_spec_embed" or not name.startswith(("feature_", "encoder.")):
                continue  # training-only (masking) and heads we do not run
            if w.ndim == 3:  # torch Conv1d [out, in, k] -> MLX [out, k, in]
                w = w.transpose(0, 2, 1)
            out[name] = w
        return out
