"""Qwen3-TTS 12Hz speech tokenizer, decoder half (`speech_tokenizer/`, keys `decoder.*`).

16 codebooks per 80 ms frame -> split residual VQ (1 semantic + 15 acoustic codebooks) -> causal
conv -> an 8-layer sliding-window transformer -> 2x2 ConvNeXt upsampling -> a SnakeBeta vocoder
(8*5*4*3) -> 24 kHz samples, 1920 per frame. Every conv is causal and attention looks back only, so
audio can be decoded as a stream: a `DecoderStream` carries, from one chunk of frames to the next,
exactly the left context each layer needs (each causal conv's last (k-1)*dilation inputs, each
transposed conv's overlap into the next step, each attention layer's last `sliding_window` - 1 keys
and values, and the frame position for rope), so chunk by chunk decoding computes every sample once
and equals the whole-sequence decode up to float round-off. The encoder half (Mimi, `encoder.*`,
qwen3_tts_encoder.py) turns a reference clip into codes for in-context cloning.

Tensors are channels-last [B, T, C] throughout (MLX convolutions); PyTorch conv weights are moved
to MLX's [out, k, in] in `sanitize`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import MLP, causal_mask
from ominix.models.qwen3_tts import fit_conv_weight
from ominix.models.qwen3_tts_encoder import Encoder, EncoderArgs, LayerScale, is_encoder_tensor


@dataclass
class DecoderArgs:
    codebook_size: int = 2048
    codebook_dim: int = 512
    hidden_size: int = 512
    latent_dim: int = 1024
    head_dim: int | None = 64
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    intermediate_size: int = 1024
    num_hidden_layers: int = 8
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int = 72
    num_quantizers: int = 16
    upsample_rates: list = field(default_factory=lambda: [8, 5, 4, 3])
    upsampling_ratios: list = field(default_factory=lambda: [2, 2])
    decoder_dim: int = 1536

    @classmethod
    def from_dict(cls, config: dict) -> "DecoderArgs":
        names = {f.name for f in dataclasses.fields(cls)}
        args = cls(**{k: v for k, v in (config.get("decoder_config") or config).items() if k in names})
        args.head_dim = args.head_dim or args.hidden_size // args.num_attention_heads
        return args

    @property
    def samples_per_frame(self) -> int:
        return math.prod(list(self.upsample_rates) + list(self.upsampling_ratios))


class CausalConv(nn.Module):
    """Conv1d padded on the left only (stride 1 everywhere in this decoder).

    Computed as one matmul over the k shifted copies of the input (im2col) rather than with
    mx.conv1d: the vocoder's dilated convolutions over tens of thousands of samples are 20-50x
    faster that way on a CPU (a BLAS GEMM), and a matmul is what a GPU is best at too.
    """

    def __init__(self, cin: int, cout: int, k: int, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, dilation=dilation, groups=groups)
        self.k, self.dilation, self.groups = k, dilation, groups
        self.left = (k - 1) * dilation

    def __call__(self, x: mx.array, stream: "DecoderStream | None" = None) -> mx.array:
        T = x.shape[1]
        x = mx.pad(x, [(0, 0), (self.left, 0), (0, 0)]) if stream is None else stream.extend(self, x, self.left)
        w = self.conv.weight  # [out, k, in / groups]
        taps = [x[:, i * self.dilation : i * self.dilation + T] for i in range(self.k)]
        if self.groups == x.shape[-1] and w.shape[-1] == 1:  # depthwise: a weighted sum of shifts
            out = sum(tap * w[:, i, 0] for i, tap in enumerate(taps))
        elif self.k == 1:
            out = x @ w[:, 0].T
        else:
            out = mx.concatenate(taps, axis=-1) @ w.reshape(w.shape[0], -1).T
        return out + self.conv.bias if "bias" in self.conv else out


class CausalTransConv(nn.Module):
    """Transposed conv (kernel = 2 x stride) trimmed on the right to `stride` samples per step.

    One matmul gives every input step's 2s output samples; the first s land on the step's own
    block, the last s overlap-add onto the next block (which the right trim keeps causal)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, k, stride=stride)
        self.stride, self.k = stride, k

    def __call__(self, x: mx.array, stream: "DecoderStream | None" = None) -> mx.array:
        B, T, _ = x.shape
        s, w = self.stride, self.conv.weight  # [out, k, in]
        if self.k == s:  # no overlap between steps: nothing to carry
            return self.conv(x)[:, : T * s]
        if self.k != 2 * s:
            if stream is not None:
                raise ValueError("streaming decode needs transposed convs with kernel = stride or 2 x stride")
            return self.conv(x)[:, : T * s]
        y = (x @ w.reshape(-1, w.shape[-1]).T).reshape(B, T, w.shape[0], self.k)  # [B, T, out, k]
        own, spill = y[..., :s], y[..., s:]
        if stream is None:
            spill = mx.pad(spill, [(0, 0), (1, 0), (0, 0), (0, 0)])[:, :T]
        else:  # the previous chunk's last step spills onto this chunk's first block
            spill = stream.extend(self, spill, 1)[:, :T]
        out = (own + spill).transpose(0, 1, 3, 2).reshape(B, T * s, -1)
        return out + self.conv.bias if "bias" in self.conv else out


class SnakeBeta(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.zeros((channels,))
        self.beta = mx.zeros((channels,))

    def __call__(self, x: mx.array, stream=None) -> mx.array:
        return x + (1.0 / (mx.exp(self.beta) + 1e-9)) * mx.sin(x * mx.exp(self.alpha)) ** 2


class ConvNeXt(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = mx.zeros((dim,))

    def __call__(self, x: mx.array, stream=None) -> mx.array:
        h = self.pwconv2(nn.gelu(self.pwconv1(self.norm(self.dwconv(x, stream)))))
        return x + self.gamma * h


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)

    def __call__(self, x, stream=None):
        return x + self.conv2(self.act2(self.conv1(self.act1(x), stream)))


class DecoderBlock(nn.Module):
    def __init__(self, a: DecoderArgs, i: int):
        super().__init__()
        cin, cout, rate = a.decoder_dim // 2**i, a.decoder_dim // 2 ** (i + 1), a.upsample_rates[i]
        self.block = [SnakeBeta(cin), CausalTransConv(cin, cout, 2 * rate, rate)] + [
            ResidualUnit(cout, d) for d in (1, 3, 9)
        ]

    def __call__(self, x, stream=None):
        for layer in self.block:
            x = layer(x, stream)
        return x


class Attention(nn.Module):
    def __init__(self, a: DecoderArgs):
        super().__init__()
        self.heads, self.kv_heads, self.scale = a.num_attention_heads, a.num_key_value_heads, a.head_dim**-0.5
        self.window = a.sliding_window
        self.q_proj = nn.Linear(a.hidden_size, a.num_attention_heads * a.head_dim, bias=False)
        self.k_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=False)
        self.v_proj = nn.Linear(a.hidden_size, a.num_key_value_heads * a.head_dim, bias=False)
        self.o_proj = nn.Linear(a.num_attention_heads * a.head_dim, a.hidden_size, bias=False)
        self.rope = nn.RoPE(a.head_dim, traditional=False, base=a.rope_theta)

    def __call__(self, x: mx.array, mask, stream: "DecoderStream | None" = None) -> mx.array:
        B, L, _ = x.shape
        offset = 0 if stream is None else stream.position
        q = self.rope(self.q_proj(x).reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3), offset=offset)
        k = self.rope(self.k_proj(x).reshape(B, L, self.kv_heads, -1).transpose(0, 2, 1, 3), offset=offset)
        v = self.v_proj(x).reshape(B, L, self.kv_heads, -1).transpose(0, 2, 1, 3)
        if stream is not None:  # the window's earlier keys / values (already rotated) come first
            past = stream.state.get(id(self))
            if past is not None:
                k, v = mx.concatenate([past[0], k], axis=2), mx.concatenate([past[1], v], axis=2)
            start = max(k.shape[2] - (self.window - 1), 0)
            stream.state[id(self)] = (k[:, :, start:], v[:, :, start:])
            mask = window_mask(L, k.shape[2] - L, self.window)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


def window_mask(length: int, past: int, window: int) -> mx.array:
    """[length, past + length]: query i (after `past` earlier keys) sees the `window` keys up to it."""
    q = mx.arange(past, past + length)[:, None]
    k = mx.arange(past + length)[None]
    return (k <= q) & (k > q - window)


class TransformerLayer(nn.Module):
    def __init__(self, a: DecoderArgs):
        super().__init__()
        self.self_attn = Attention(a)
        self.mlp = MLP(a.hidden_size, a.intermediate_size)
        self.input_layernorm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)
        self.self_attn_layer_scale = LayerScale(a.hidden_size)
        self.mlp_layer_scale = LayerScale(a.hidden_size)

    def __call__(self, x, mask, stream=None):
        h = x + self.self_attn_layer_scale(self.self_attn(self.input_layernorm(x), mask, stream))
        return h + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(h)))


class PreTransformer(nn.Module):
    def __init__(self, a: DecoderArgs):
        super().__init__()
        self.window = a.sliding_window
        self.input_proj = nn.Linear(a.latent_dim, a.hidden_size)
        self.layers = [TransformerLayer(a) for _ in range(a.num_hidden_layers)]
        self.norm = nn.RMSNorm(a.hidden_size, eps=a.rms_norm_eps)
        self.output_proj = nn.Linear(a.hidden_size, a.latent_dim)

    def __call__(self, x, stream=None):
        mask = causal_mask(x.shape[1], window=self.window) if stream is None else None
        h = self.input_proj(x)
        for layer in self.layers:
            h = layer(h, mask, stream)
        if stream is not None:
            stream.position += x.shape[1]
        return self.output_proj(self.norm(h))


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.cluster_usage = mx.ones((size,))
        self.embedding_sum = mx.zeros((size, dim))

    def __call__(self, codes: mx.array) -> mx.array:
        table = self.embedding_sum / mx.maximum(self.cluster_usage, 1e-5)[:, None]
        return table[codes]


class VQLayer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.codebook = Codebook(size, dim)  # `_codebook` in the checkpoint (see sanitize)


class _VQ(nn.Module):
    def __init__(self, n: int, size: int, dim: int):
        super().__init__()
        self.layers = [VQLayer(size, dim) for _ in range(n)]


class RVQ(nn.Module):
    def __init__(self, n: int, size: int, dim: int, out_dim: int):
        super().__init__()
        self.vq = _VQ(n, size, dim)
        self.output_proj = nn.Conv1d(dim, out_dim, 1, bias=False)

    def __call__(self, codes: mx.array) -> mx.array:
        """codes [B, n, T] -> [B, T, out_dim]: the sum of each codebook's vector, projected."""
        total = sum(layer.codebook(codes[:, i]) for i, layer in enumerate(self.vq.layers))
        return self.output_proj(total)


class SplitRVQ(nn.Module):
    def __init__(self, a: DecoderArgs):
        super().__init__()
        dim = a.codebook_dim // 2
        self.rvq_first = RVQ(1, a.codebook_size, dim, a.codebook_dim)
        self.rvq_rest = RVQ(a.num_quantizers - 1, a.codebook_size, dim, a.codebook_dim)

    def __call__(self, codes):
        return self.rvq_first(codes[:, :1]) + self.rvq_rest(codes[:, 1:])


class Decoder(nn.Module):
    def __init__(self, a: DecoderArgs):
        super().__init__()
        self.args = a
        self.quantizer = SplitRVQ(a)
        self.pre_conv = CausalConv(a.codebook_dim, a.latent_dim, 3)
        self.pre_transformer = PreTransformer(a)
        self.upsample = [[CausalTransConv(a.latent_dim, a.latent_dim, f, f), ConvNeXt(a.latent_dim)]
                         for f in a.upsampling_ratios]  # fmt: skip
        out_dim = a.decoder_dim // 2 ** len(a.upsample_rates)
        self.decoder = (
            [CausalConv(a.latent_dim, a.decoder_dim, 7)]
            + [DecoderBlock(a, i) for i in range(len(a.upsample_rates))]
            + [SnakeBeta(out_dim), CausalConv(out_dim, 1, 7)]
        )

    def latent(self, codes: mx.array, stream: "DecoderStream | None" = None) -> mx.array:
        """codes [B, num_quantizers, T] -> the transformer's output [B, T, latent_dim]."""
        return self.pre_transformer(self.pre_conv(self.quantizer(codes), stream), stream)

    def vocode(self, h: mx.array, stream: "DecoderStream | None" = None) -> mx.array:
        """[B, T, latent_dim] -> waveform [B, T * samples_per_frame] in [-1, 1]."""
        for up, block in self.upsample:
            h = block(up(h, stream), stream)
        for layer in self.decoder:
            h = layer(h, stream)
        return mx.clip(h[..., 0], -1.0, 1.0)

    def __call__(self, codes: mx.array, stream: "DecoderStream | None" = None) -> mx.array:
        """codes [B, num_quantizers, T] -> waveform [B, T * samples_per_frame] in [-1, 1].
        With a `stream`, T frames that follow the frames it has seen (chunked decode)."""
        return self.vocode(self.latent(codes, stream), stream)

    def vocoder_context(self) -> int:
        """Frames of left context the convolutions after the transformer reach back (their
        receptive field): each causal conv sees (k-1)*dilation samples at its layer's rate, each
        2x-stride transposed conv one input step."""
        rate, reach = 1, 0.0
        for up, block in self.upsample:
            rate *= up.stride
            reach += block.dwconv.left / rate
        for layer in self.decoder:
            parts = layer.block if isinstance(layer, DecoderBlock) else [layer]
            for part in parts:
                if isinstance(part, CausalTransConv):
                    reach += 1 / rate
                    rate *= part.stride
                elif isinstance(part, ResidualUnit):
                    reach += part.conv1.left / rate
                elif isinstance(part, CausalConv):
                    reach += part.left / rate
        return math.ceil(reach)

    def stages(self, codes: mx.array, stream: "DecoderStream", context: int = 0):
        """The streamed decode of `codes` in bounded pieces: a generator that yields after the
        transformer, upsampling and first conv, then after each vocoder block but the last (the
        blocks cost about the same: channels halve as the rate grows 4-8x), and returns the
        waveform [B, T * samples_per_frame]. `context`: only the last `context` frames go past
        the transformer (see `warm`)."""
        h = self.latent(codes, stream)
        if context:
            h = h[:, -context:]
        for up, block in self.upsample:
            h = block(up(h, stream), stream)
        last_block = max(i for i, layer in enumerate(self.decoder) if isinstance(layer, DecoderBlock))
        for i, layer in enumerate(self.decoder):
            h = layer(h, stream)
            if i < last_block and (i == 0 or isinstance(layer, DecoderBlock)):
                mx.eval(h)
                yield
        return mx.clip(h[..., 0], -1.0, 1.0)

    def warm_stages(self, codes: mx.array, stream: "DecoderStream"):
        """Feed frames whose audio is not wanted (a cloned voice's reference codes) into `stream`,
        in pieces like `stages`: the transformer sees all of them (its state spans windows), the
        vocoder only the last `vocoder_context() + 1`, which leaves its state exactly as after
        all of them (its convolutions reach back no further)."""
        yield from self.stages(codes, stream, context=self.vocoder_context() + 1)
        stream.evaluate()

    def warm(self, codes: mx.array, stream: "DecoderStream") -> None:
        for _ in self.warm_stages(codes, stream):
            pass


class DecoderStream:
    """What one utterance's chunked decode carries between chunks (see the module docstring)."""

    def __init__(self):
        self.state: dict[int, object] = {}
        self.position = 0

    def extend(self, module, x: mx.array, left: int) -> mx.array:
        """x with the module's last `left` inputs before it (zeros at the start: causal padding);
        keeps x's last `left` steps for the next chunk."""
        if left == 0:
            return x
        past = self.state.get(id(module))
        if past is None:
            past = mx.zeros((x.shape[0], left) + tuple(x.shape[2:]), dtype=x.dtype)
        x = mx.concatenate([past, x], axis=1)
        self.state[id(module)] = x[:, x.shape[1] - left :]
        return x

    def evaluate(self) -> None:
        """Materialize the carried state (so the next chunk's graph does not hold this one's)."""
        arrays = [a for v in self.state.values() for a in (v if isinstance(v, tuple) else (v,))]
        mx.eval(arrays)


class SpeechTokenizer(nn.Module):
    """The `speech_tokenizer/` checkpoint: the decoder, and the encoder when `encoder` is given
    (voice cloning in context; checkpoints without `encoder.*` tensors decode only)."""

    def __init__(self, a: DecoderArgs, encoder: EncoderArgs | None = None):
        super().__init__()
        self.decoder = Decoder(a)
        if encoder is not None:
            self.encoder = Encoder(encoder)

    def _keep(self, name: str) -> bool:
        if name.startswith("encoder."):
            return "encoder" in self and is_encoder_tensor(name)
        # the decoder's quantizer has no use for its encoder-side input projections
        return name.startswith("decoder.") and not (".input_proj.weight" in name and "quantizer" in name)

    def sanitize(self, weights: dict) -> dict:
        from mlx.utils import tree_flatten

        expected = dict(tree_flatten(self.parameters()))
        out = {}
        for name, w in weights.items():
            if not self._keep(name):
                continue
            if name.startswith("decoder."):
                name = name.replace("._codebook.", ".codebook.")
            if w.ndim == 3 and name in expected:
                # Transposed convs: the decoder's upsample stages' `.0.conv` and blocks' `.block.1`.
                transposed = name.startswith("decoder.") and (
                    ".upsample." in name and name.endswith(".0.conv.weight") or ".block.1.conv.weight" in name
                )
                w = fit_conv_weight(w, expected[name].shape, transposed=transposed)
            out[name] = w
        return out
