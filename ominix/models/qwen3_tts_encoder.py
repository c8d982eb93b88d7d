"""Qwen3-TTS 12Hz speech tokenizer, encoder half (`speech_tokenizer/`, keys `encoder.*`).

A Mimi encoder (transformers' MimiModel with its decoder removed, as qwen-tts builds it): a SEANet
conv encoder (causal convs, ELU, residual blocks, strided downsampling to 25 Hz), a causal
transformer, a stride-2 downsample to 12.5 Hz and a split residual VQ (1 semantic + N acoustic
codebooks, each quantizing its own projection of the same latent). A 24 kHz clip becomes codes
[frames, encoder_valid_num_quantizers]: the reference clip of in-context voice cloning.

Two details follow qwen-tts 0.1.1 exactly rather than Mimi's paper: the transformer's mask is plain
causal (transformers' `create_causal_mask` ignores MimiConfig.sliding_window) and only the first
`encoder_valid_num_quantizers` codebooks are kept. Channels-last [B, T, C] throughout.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn


@dataclass
class EncoderArgs:
    sampling_rate: int = 24000
    frame_rate: float | None = None
    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: list = field(default_factory=lambda: [8, 6, 5, 4])
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    compress: int = 2
    use_conv_shortcut: bool = False
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    num_semantic_quantizers: int = 1
    vector_quantization_hidden_dimension: int = 256
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    attention_bias: bool = False
    valid_quantizers: int = 16  # the tokenizer config's encoder_valid_num_quantizers
    downsample_rate: int = 1920  # encode_downsample_rate: input samples per code frame

    @classmethod
    def from_dict(cls, config: dict) -> "EncoderArgs | None":
        enc = config.get("encoder_config")
        if not enc:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        args = cls(**{k: v for k, v in enc.items() if k in names})
        # transformers >= 4.5x saves MimiConfig's frame_rate as `_frame_rate`
        args.frame_rate = enc.get("frame_rate", enc.get("_frame_rate"))
        args.head_dim = args.head_dim or args.hidden_size // args.num_attention_heads
        args.valid_quantizers = int(config.get("encoder_valid_num_quantizers", args.num_quantizers))
        args.downsample_rate = int(config.get("encode_downsample_rate", args.downsample_rate))
        if args.frame_rate is None:  # MimiConfig's derived value: the convs' hop, then the stride-2 downsample
            args.frame_rate = args.sampling_rate / (math.prod(args.upsampling_ratios) * 2)
        return args

    @property
    def encodec_frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))


class MimiConv(nn.Module):
    """MimiConv1d: causal (left) padding of (k-1)*d+1-stride, plus right padding up to a whole
    last frame, then a strided conv. Computed as one matmul over the k taps (im2col), which is
    much faster than mx.conv1d on a CPU BLAS and what a GPU does best too."""

    def __init__(self, a: EncoderArgs, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1,
                 bias: bool = True, pad_mode: str | None = None):  # fmt: skip
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride=stride, dilation=dilation, bias=bias)
        self.k, self.stride, self.dilation = k, stride, dilation
        self.pad_mode = pad_mode or a.pad_mode
        self.effective = (k - 1) * dilation + 1
        self.padding_total = self.effective - stride
        if not a.use_causal_conv:
            raise ValueError("the Qwen3-TTS 12Hz encoder is causal (use_causal_conv=true)")

    def _pad(self, x: mx.array, left: int, right: int) -> mx.array:
        if self.pad_mode == "replicate":
            parts = [mx.repeat(x[:, :1], left, axis=1)] if left else []
            parts.append(x)
            parts += [mx.repeat(x[:, -1:], right, axis=1)] if right else []
            return mx.concatenate(parts, axis=1) if len(parts) > 1 else x
        if self.pad_mode != "constant":
            raise ValueError(f"unsupported MimiConv1d pad_mode '{self.pad_mode}'")
        return mx.pad(x, [(0, 0), (left, right), (0, 0)])

    def __call__(self, x: mx.array) -> mx.array:
        length, s = x.shape[1], self.stride
        frames = math.ceil((length - self.effective + self.padding_total) / s + 1) - 1
        extra = frames * s + self.effective - self.padding_total - length
        x = self._pad(x, self.padding_total, extra)
        out_len = (x.shape[1] - self.effective) // s + 1
        w = self.conv.weight  # [out, k, in]
        span = s * (out_len - 1) + 1
        taps = [x[:, i * self.dilation : i * self.dilation + span : s] for i in range(self.k)]
        out = (taps[0] if self.k == 1 else mx.concatenate(taps, axis=-1)) @ w.reshape(w.shape[0], -1).T
        return out + self.conv.bias if "bias" in self.conv else out


class ELU(nn.Module):
    def __call__(self, x):
        return nn.elu(x)


class ResnetBlock(nn.Module):
    def __init__(self, a: EncoderArgs, dim: int, dilation: int):
        super().__init__()
        hidden = dim // a.compress
        self.block = [ELU(), MimiConv(a, dim, hidden, a.residual_kernel_size, dilation=dilation),
                      ELU(), MimiConv(a, hidden, dim, 1)]  # fmt: skip
        if a.use_conv_shortcut:
            self.shortcut = MimiConv(a, dim, dim, 1)

    def __call__(self, x):
        h = x
        for layer in self.block:
            h = layer(h)
        return (self.shortcut(x) if "shortcut" in self else x) + h


class SEANetEncoder(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        layers: list = [MimiConv(a, a.audio_channels, a.num_filters, a.kernel_size)]
        scale = 1
        for ratio in reversed(a.upsampling_ratios):
            dim = scale * a.num_filters
            layers += [ResnetBlock(a, dim, a.dilation_growth_rate**j) for j in range(a.num_residual_layers)]
            layers += [ELU(), MimiConv(a, dim, dim * 2, 2 * ratio, stride=ratio)]
            scale *= 2
        layers += [ELU(), MimiConv(a, scale * a.num_filters, a.hidden_size, a.last_kernel_size)]
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Attention(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        self.heads, self.kv_heads, self.scale = a.num_attention_heads, a.num_key_value_heads, a.head_dim**-0.5
        bias = a.attention_bias
        self.q_proj = nn.Linear(a.hidden_size, a.num_attention_heads * a.head_dim, bias=bias)
        self.k_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=bias)
        self.v_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=bias)
        self.o_proj = nn.Linear(a.num_attention_heads * a.head_dim, a.hidden_size, bias=bias)
        self.rope = nn.RoPE(a.head_dim, traditional=False, base=a.rope_theta)

    def __call__(self, x: mx.array) -> mx.array:
        B, L, _ = x.shape
        q = self.rope(self.q_proj(x).reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3))
        k = self.rope(self.k_proj(x).reshape(B, L, self.kv_heads, -1).transpose(0, 2, 1, 3))
        v = self.v_proj(x).reshape(B, L, self.kv_heads, -1).transpose(0, 2, 1, 3)
        mask = "causal" if L > 1 else None
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class FeedForward(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        if a.hidden_act not in ("gelu", "gelu_python"):
            raise ValueError(f"unsupported Mimi hidden_act '{a.hidden_act}'")
        self.fc1 = nn.Linear(a.hidden_size, a.intermediate_size, bias=False)
        self.fc2 = nn.Linear(a.intermediate_size, a.hidden_size, bias=False)

    def __call__(self, x):
        return self.fc2(nn.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = mx.zeros((dim,))

    def __call__(self, x):
        return self.scale * x


class TransformerLayer(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        self.self_attn = Attention(a)
        self.mlp = FeedForward(a)
        self.input_layernorm = nn.LayerNorm(a.hidden_size, eps=a.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(a.hidden_size, eps=a.norm_eps)
        self.self_attn_layer_scale = LayerScale(a.hidden_size)
        self.mlp_layer_scale = LayerScale(a.hidden_size)

    def __call__(self, x):
        h = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x)))
        return h + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(h)))


class Transformer(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        self.layers = [TransformerLayer(a) for _ in range(a.num_hidden_layers)]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.cluster_usage = mx.ones((size,))
        self.embed_sum = mx.zeros((size, dim))

    def encode(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """x [B, T, D] -> (nearest codeword ids [B, T], their vectors [B, T, D])."""
        table = self.embed_sum / mx.maximum(self.cluster_usage, 1e-5)[:, None]
        # argmin |x - e|^2 = argmin |e|^2 - 2 x.e (|x|^2 is the same for every codeword)
        scores = (table * table).sum(-1) - 2.0 * (x @ table.T)
        ids = mx.argmin(scores, axis=-1)
        return ids, table[ids]


class VQLayer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.codebook = Codebook(size, dim)


class RVQ(nn.Module):
    def __init__(self, a: EncoderArgs, n: int):
        super().__init__()
        dim = a.vector_quantization_hidden_dimension
        self.layers = [VQLayer(a.codebook_size, dim) for _ in range(n)]
        self.project = dim != a.hidden_size
        if self.project:
            self.input_proj = nn.Conv1d(a.hidden_size, dim, 1, bias=False)

    def encode(self, x: mx.array, n: int) -> list[mx.array]:
        residual = x @ self.input_proj.weight[:, 0].T if self.project else x
        codes = []
        for layer in self.layers[:n]:
            ids, vectors = layer.codebook.encode(residual)
            residual = residual - vectors
            codes.append(ids)
        return codes


class SplitRVQ(nn.Module):
    def __init__(self, a: EncoderArgs):
        super().__init__()
        self.semantic = a.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = RVQ(a, a.num_semantic_quantizers)
        self.acoustic_residual_vector_quantizer = RVQ(a, a.num_quantizers - a.num_semantic_quantizers)

    def encode(self, x: mx.array, n: int) -> mx.array:
        """x [B, T, hidden] -> codes [B, n, T]; residual VQ is sequential, so the first n codes
        are the same as the reference's (which computes all and keeps n)."""
        codes = self.semantic_residual_vector_quantizer.encode(x, min(n, self.semantic))
        if n > self.semantic:
            codes += self.acoustic_residual_vector_quantizer.encode(x, n - self.semantic)
        return mx.stack(codes, axis=1)


class Encoder(nn.Module):
    """`encoder.*` of the speech tokenizer: 24 kHz samples -> codes at 12.5 Hz."""

    def __init__(self, a: EncoderArgs):
        super().__init__()
        self.args = a
        self.encoder = SEANetEncoder(a)
        self.encoder_transformer = Transformer(a)
        ratio = int(a.encodec_frame_rate / a.frame_rate)
        if ratio != 1:
            self.downsample = MimiConv(a, a.hidden_size, a.hidden_size, 2 * ratio, stride=2, bias=False,
                                       pad_mode="replicate")  # fmt: skip
        self.quantizer = SplitRVQ(a)

    def stages(self, audio: mx.array):
        """The encode in bounded pieces: a generator that yields after each strided conv of the
        SEANet encoder (the work shrinks with the rate) and returns the codes, as `__call__`."""
        a = self.args
        h = audio[..., None]
        for layer in self.encoder.layers:
            h = layer(h)
            if isinstance(layer, MimiConv) and layer.stride > 1:
                mx.eval(h)
                yield
        h = self.encoder_transformer(h)
        if "downsample" in self:
            h = self.downsample(h)
        codes = self.quantizer.encode(h, min(a.valid_quantizers, a.num_quantizers))
        return codes[..., : -(-audio.shape[-1] // a.downsample_rate)]

    def __call__(self, audio: mx.array) -> mx.array:
        """audio [B, samples] -> codes [B, valid_quantizers, frames] (frames = ceil(samples / rate))."""
        pieces = self.stages(audio)
        while True:
            try:
                next(pieces)
            except StopIteration as done:
                return done.value


def is_encoder_tensor(name: str) -> bool:
    """Tensors of `encoder.*` that the Encoder holds (the quantizer's output_proj and the
    codebooks' `initialized` flags only serve Mimi's decoder and training)."""
    return name.startswith("encoder.") and not (name.endswith(".initialized") or ".output_proj." in name)
