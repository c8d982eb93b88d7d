"""GPT-SoVITS v2's SoVITS half (`s2G*.pth`, SynthesizerTrn), for inference: 25 Hz semantic codes +
the sentence's phonemes + a reference clip's style -> a 32 kHz waveform.

Tensor names are the checkpoint's `weight` state dict: `ssl_proj` + `quantizer` (one residual VQ
codebook: SSL features -> the reference's semantic codes), `enc_p` (TextEncoder: the codes and
the phonemes through relative-position transformer encoders, joined by MRTE cross attention),
`ref_enc` (MelStyleEncoder: the reference's linear spectrogram -> a global style vector `ge`),
`flow` (four mean-only residual couplings, run in reverse) and `dec` (the HiFi-GAN generator).
`enc_q` (the posterior encoder) is training-only and dropped. weight_norm's `weight_g` /
`weight_v` pairs are folded by `sanitize`, which also turns torch's conv layouts into MLX's.

Everything runs channels-last ([B, T, C]); batch 1 with full masks (a single utterance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.cnhubert import fold_weight_norm
from ominix.models.signal_conv import MatmulConv1d as Conv1d
from ominix.models.signal_conv import MatmulConvTranspose1d as ConvTranspose1d

SSL_DIM = 768  # cnhubert's width, fixed by the published architecture
MRTE_HIDDEN, MRTE_HEADS = 512, 4  # MRTE() is built with its defaults
STYLE_BINS = 704  # ref_enc reads the first 704 of the spectrogram's 1025 bins (v2)
LRELU_SLOPE = 0.1


@dataclass
class ModelArgs:
    model_type: str = "gpt_sovits_sovits"
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock: str = "1"
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5]] * 3)
    upsample_rates: list = field(default_factory=lambda: [10, 8, 2, 2, 2])
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: list = field(default_factory=lambda: [16, 16, 8, 2, 2])
    gin_channels: int = 512
    semantic_frame_rate: str = "25hz"
    n_symbols: int = 732  # v2's symbol table
    codebook_size: int = 1024
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        """config.json (the checkpoint's `config` with `model_type`): its `model` and `data` blocks."""
        flat = {**(config.get("data") or {}), **(config.get("model") or {}), **config}
        names = set(cls.__dataclass_fields__) - {"model_type"}
        args = cls(**{k: flat[k] for k in names if k in flat})
        if args.resblock != "1" or args.semantic_frame_rate != "25hz":
            raise ValueError("only v2's generator (resblock '1') and 25 Hz semantic tokens are supported")
        if flat.get("version") in ("v2Pro", "v2ProPlus", "v3", "v4"):
            raise ValueError(f"SoVITS {flat['version']} checkpoints are not supported (v2 only)")
        return args


def mish(x):
    return x * mx.tanh(nn.softplus(x))


class Mish(nn.Module):
    def __call__(self, x):
        return mish(x)


def gated(x, g, n: int):
    """WN's fused add + tanh * sigmoid."""
    a = x + g
    return mx.tanh(a[..., :n]) * mx.sigmoid(a[..., n:])


# --- the text encoder: VITS attention blocks ------------------------------------------------------


class ChannelNorm(nn.Module):
    """VITS' LayerNorm over channels, with `gamma` / `beta`."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = mx.ones((channels,))
        self.beta = mx.zeros((channels,))

    def __call__(self, x):
        return mx.fast.layer_norm(x, self.gamma, self.beta, 1e-5)


class MultiHeadAttention(nn.Module):
    """1x1-conv projections; with `window` the relative-position keys and values of VITS."""

    def __init__(self, channels: int, out_channels: int, heads: int, window: int | None = None):
        super().__init__()
        self.heads, self.window = heads, window
        self.conv_q = Conv1d(channels, channels, 1)
        self.conv_k = Conv1d(channels, channels, 1)
        self.conv_v = Conv1d(channels, channels, 1)
        self.conv_o = Conv1d(channels, out_channels, 1)
        if window is not None:
            d = channels // heads
            self.emb_rel_k = mx.zeros((1, 2 * window + 1, d))
            self.emb_rel_v = mx.zeros((1, 2 * window + 1, d))

    def _heads(self, x):
        B, L, C = x.shape
        return x.reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3)

    def __call__(self, x, c):
        q, k, v = self._heads(self.conv_q(x)), self._heads(self.conv_k(c)), self._heads(self.conv_v(c))
        q = q / math.sqrt(q.shape[-1])
        scores = q @ k.swapaxes(-1, -2)
        if self.window is not None:
            w, L = self.window, x.shape[1]
            i = mx.arange(L)[:, None]
            rel = mx.arange(L)[None] - i + w  # [L, L]: key j relative to query i, shifted to 0..2w
            near = (rel >= 0) & (rel <= 2 * w)
            rel_logits = q @ self.emb_rel_k[0].T  # [B, H, L, 2w+1]
            idx = mx.broadcast_to(mx.clip(rel, 0, 2 * w), rel_logits.shape[:2] + (L, L))
            scores = scores + mx.where(near, mx.take_along_axis(rel_logits, idx, axis=-1), 0.0)
        p = mx.softmax(scores, axis=-1)
        out = p @ v
        if self.window is not None:
            r = mx.arange(2 * w + 1)[None]
            j = i + r - w  # [L, 2w+1]: the key at each relative offset
            inside = (j >= 0) & (j < L)
            jdx = mx.broadcast_to(mx.clip(j, 0, L - 1), p.shape[:2] + (L, 2 * w + 1))
            weights = mx.where(inside, mx.take_along_axis(p, jdx, axis=-1), 0.0)
            out = out + weights @ self.emb_rel_v[0]
        B, H, L, d = out.shape
        return self.conv_o(out.transpose(0, 2, 1, 3).reshape(B, L, H * d))


class FFN(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv_1 = Conv1d(channels, filter_channels, kernel)
        self.conv_2 = Conv1d(filter_channels, channels, kernel)

    def _pad(self, x):  # "same": (k-1)//2 left, k//2 right
        k = self.kernel
        return mx.pad(x, [(0, 0), ((k - 1) // 2, k // 2), (0, 0)]) if k > 1 else x

    def __call__(self, x):
        return self.conv_2(self._pad(nn.relu(self.conv_1(self._pad(x)))))


class AttentionEncoder(nn.Module):
    def __init__(self, hidden: int, filter_channels: int, heads: int, layers: int, kernel: int, window: int = 4):
        super().__init__()
        self.attn_layers = [MultiHeadAttention(hidden, hidden, heads, window) for _ in range(layers)]
        self.norm_layers_1 = [ChannelNorm(hidden) for _ in range(layers)]
        self.ffn_layers = [FFN(hidden, filter_channels, kernel) for _ in range(layers)]
        self.norm_layers_2 = [ChannelNorm(hidden) for _ in range(layers)]

    def __call__(self, x):
        for attn, n1, ffn, n2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = n1(x + attn(x, x))
            x = n2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Cross attention from the semantic stream to the phonemes, plus the style vector."""

    def __init__(self, channels: int):
        super().__init__()
        self.cross_attention = MultiHeadAttention(MRTE_HIDDEN, MRTE_HIDDEN, MRTE_HEADS)
        self.c_pre = Conv1d(channels, MRTE_HIDDEN, 1)
        self.text_pre = Conv1d(channels, MRTE_HIDDEN, 1)
        self.c_post = Conv1d(MRTE_HIDDEN, channels, 1)

    def __call__(self, ssl, text, ge):
        ssl = self.c_pre(ssl)
        return self.c_post(self.cross_attention(ssl, self.text_pre(text)) + ssl + ge)


class TextEncoder(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        h, f = a.hidden_channels, a.filter_channels
        self.out_channels = a.inter_channels
        self.ssl_proj = Conv1d(SSL_DIM, h, 1)
        self.encoder_ssl = AttentionEncoder(h, f, a.n_heads, a.n_layers // 2, a.kernel_size)
        self.encoder_text = AttentionEncoder(h, f, a.n_heads, a.n_layers, a.kernel_size)
        self.text_embedding = nn.Embedding(a.n_symbols, h)
        self.mrte = MRTE(h)
        self.encoder2 = AttentionEncoder(h, f, a.n_heads, a.n_layers // 2, a.kernel_size)
        self.proj = Conv1d(h, 2 * a.inter_channels, 1)

    def __call__(self, ssl, phones, ge):
        """ssl [1, T, 768] (quantized, 50 Hz), phones [1, Tx] -> (m, logs) [1, T, inter] each."""
        y = self.encoder_ssl(self.ssl_proj(ssl))
        text = self.encoder_text(self.text_embedding(phones))
        y = self.encoder2(self.mrte(y, text, ge))
        return mx.split(self.proj(y), 2, axis=-1)


# --- the reference's style: MelStyleEncoder ---------------------------------------------------


class Linear(nn.Module):  # LinearNorm: a Linear under `.fc`
    def __init__(self, din: int, dout: int):
        super().__init__()
        self.fc = nn.Linear(din, dout)

    def __call__(self, x):
        return self.fc(x)


class GLUConv(nn.Module):  # Conv1dGLU: conv1.conv
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv1 = {"conv": Conv1d(channels, 2 * channels, kernel, padding=(kernel - 1) // 2)}

    def __call__(self, x):
        a, b = mx.split(self.conv1["conv"](x), 2, axis=-1)
        return x + a * mx.sigmoid(b)


class StyleAttention(nn.Module):
    """MelStyleEncoder's attention: its temperature is sqrt(d_model), not sqrt(d_head)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.w_qs = nn.Linear(dim, dim)
        self.w_ks = nn.Linear(dim, dim)
        self.w_vs = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, dim)

    def __call__(self, x):
        B, L, D = x.shape
        q, k, v = (p(x).reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3) for p in (self.w_qs, self.w_ks, self.w_vs))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5)
        return self.fc(out.transpose(0, 2, 1, 3).reshape(B, L, D)) + x


class MelStyleEncoder(nn.Module):
    def __init__(self, bins: int, out_dim: int, hidden: int = 128, kernel: int = 5, heads: int = 2):
        super().__init__()
        # the checkpoint's Sequential: Linear, Mish, Dropout, Linear, Mish, Dropout
        self.spectral = [Linear(bins, hidden), Mish(), nn.Identity(), Linear(hidden, hidden), Mish(), nn.Identity()]
        self.temporal = [GLUConv(hidden, kernel), GLUConv(hidden, kernel)]
        self.slf_attn = StyleAttention(hidden, heads)
        self.fc = Linear(hidden, out_dim)

    def __call__(self, spec):
        """spec [1, T, bins] -> ge [1, 1, out_dim] (the time average)."""
        x = spec
        for layer in self.spectral + self.temporal:
            x = layer(x)
        return mx.mean(self.fc(self.slf_attn(x)), axis=1, keepdims=True)


# --- the flow -----------------------------------------------------------------------------------


class WN(nn.Module):
    def __init__(self, hidden: int, kernel: int, dilation_rate: int, layers: int, gin: int):
        super().__init__()
        self.hidden = hidden
        self.cond_layer = Conv1d(gin, 2 * hidden * layers, 1)
        self.in_layers = [Conv1d(hidden, 2 * hidden, kernel, dilation=dilation_rate**i,
                                    padding=(kernel * dilation_rate**i - dilation_rate**i) // 2) for i in range(layers)]  # fmt: skip
        self.res_skip_layers = [Conv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1) for i in range(layers)]

    def __call__(self, x, g):
        h, out = self.hidden, 0.0
        g = self.cond_layer(g)
        last = len(self.in_layers) - 1
        for i, (inp, res) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            acts = res(gated(inp(x), g[..., 2 * h * i : 2 * h * (i + 1)], h))
            if i < last:
                x = x + acts[..., :h]
                out = out + acts[..., h:]
            else:
                out = out + acts
        return out


class CouplingLayer(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int, dilation_rate: int, layers: int, gin: int):
        super().__init__()
        self.half = channels // 2
        self.pre = Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, kernel, dilation_rate, layers, gin)
        self.post = Conv1d(hidden, self.half, 1)  # mean only

    def reverse(self, x, g):
        x0, x1 = x[..., : self.half], x[..., self.half :]
        m = self.post(self.enc(self.pre(x0), g))
        return mx.concatenate([x0, x1 - m], axis=-1)


class Flip(nn.Module):
    def reverse(self, x, g):
        return x[..., ::-1]


class Flow(nn.Module):
    def __init__(self, a: ModelArgs, n_flows: int = 4):
        super().__init__()
        self.flows = []
        for _ in range(n_flows):
            self.flows += [CouplingLayer(a.inter_channels, a.hidden_channels, 5, 1, 4, a.gin_channels), Flip()]

    def reverse(self, x, g):
        for flow in reversed(self.flows):
            x = flow.reverse(x, g)
        return x


# --- the generator (HiFi-GAN) -------------------------------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations):
        super().__init__()
        self.convs1 = [Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations]
        self.convs2 = [Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations]

    def __call__(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(nn.leaky_relu(c1(nn.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class Generator(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        c0 = a.upsample_initial_channel
        self.conv_pre = Conv1d(a.inter_channels, c0, 7, padding=3)
        self.ups = [ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, stride=u, padding=(k - u) // 2)
                    for i, (u, k) in enumerate(zip(a.upsample_rates, a.upsample_kernel_sizes))]  # fmt: skip
        self.resblocks = [ResBlock(c0 // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                          for k, d in zip(a.resblock_kernel_sizes, a.resblock_dilation_sizes)]  # fmt: skip
        self.conv_post = Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3, bias=False)
        self.cond = Conv1d(a.gin_channels, c0, 1)
        self.kernels = len(a.resblock_kernel_sizes)

    def __call__(self, z, g):
        x = self.conv_pre(z) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(nn.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.kernels : (i + 1) * self.kernels]
            x = sum(block(x) for block in blocks) / self.kernels
        return mx.tanh(self.conv_post(nn.leaky_relu(x)))  # torch's default slope (0.01) here


# --- vector quantizer -----------------------------------------------------------------------------


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.embed = mx.zeros((size, dim))


class VQLayer(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.codebook = Codebook(size, dim)  # `_codebook` in the checkpoint (MLX skips `_` names)


class ResidualVQ(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.vq = {"layers": [VQLayer(size, dim)]}

    def encode(self, x):
        """x [1, T, dim] -> codes [1, T] (nearest codebook entry)."""
        e = self.vq["layers"][0].codebook.embed
        dist = mx.sum(x * x, axis=-1, keepdims=True) - 2 * x @ e.T + mx.sum(e * e, axis=-1)
        return mx.argmin(dist, axis=-1)

    def decode(self, codes):
        return self.vq["layers"][0].codebook.embed[codes]


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.enc_p = TextEncoder(args)
        self.dec = Generator(args)
        self.flow = Flow(args)
        self.ref_enc = MelStyleEncoder(STYLE_BINS, args.gin_channels)
        self.ssl_proj = Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        self.quantizer = ResidualVQ(args.codebook_size, SSL_DIM)

    @property
    def samples_per_code(self) -> int:
        return 2 * math.prod(self.args.upsample_rates)  # 25 Hz codes, upsampled x2 to 50 Hz frames

    def extract_latent(self, ssl: mx.array) -> mx.array:
        """cnhubert features [1, T, 768] (50 Hz) -> semantic codes [1, T // 2]."""
        return self.quantizer.encode(self.ssl_proj(ssl))

    def style(self, spec: mx.array) -> mx.array:
        """The reference's linear spectrogram [1, frames, 1025] -> ge [1, 1, gin]."""
        return self.ref_enc(spec[..., :STYLE_BINS])

    def decode(self, codes: mx.array, phones: mx.array, ge: mx.array, noise: mx.array, noise_scale: float = 0.5):
        """codes [1, T], phones [1, Tx], ge [1, 1, gin], noise [1, 2T, inter] -> waveform [1, samples]."""
        q = mx.repeat(self.quantizer.decode(codes), 2, axis=1)  # nearest x2 to 50 Hz
        m, logs = self.enc_p(q, phones, ge)
        z = self.flow.reverse(m + noise * mx.exp(logs) * noise_scale, ge)
        return self.dec(z, ge)[..., 0]

    def sanitize(self, weights: dict) -> dict:
        """The checkpoint's state dict (torch layouts) -> this module's names and layouts."""
        folded, out = {}, {}
        for name, w in weights.items():
            if name.endswith("_g") and name[:-2] + "_v" in weights:
                folded[name[:-2]] = fold_weight_norm(w, weights[name[:-2] + "_v"], dim=0)
            elif not (name.endswith("_v") and name[:-2] + "_g" in weights):
                folded[name] = w
        for name, w in folded.items():
            if name.startswith("enc_q.") or name.endswith(("inited", "cluster_size", "embed_avg")):
                continue  # posterior encoder and codebook statistics: training only
            name = name.replace("._codebook.", ".codebook.")
            if w.ndim == 3 and name.endswith(".weight"):
                # ConvTranspose1d [in, out, k] and Conv1d [out, in, k] -> MLX [out, k, in]
                w = w.transpose(1, 2, 0) if name.startswith("dec.ups.") else w.transpose(0, 2, 1)
            out[name] = w
        return out
