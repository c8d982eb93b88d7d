"""Qwen3-TTS 12Hz (Qwen/Qwen3-TTS-12Hz-*; mlx-community's CustomVoice / Base conversions).

Three networks share config.json; the 12 Hz speech tokenizer's decoder (codes -> waveform) lives in
`speech_tokenizer/` and in qwen3_tts_codec.py:
- the talker (`talker.*`): Qwen3 blocks over summed text + codec embeddings; each step predicts the
  first codebook of one 80 ms frame (`codec_head`);
- the code predictor (`talker.code_predictor.*`): a small Qwen3 decoder that, given the talker's
  hidden state and the first code, predicts the other codebooks one after another;
- the speaker encoder (`speaker_encoder.*`, Base models): ECAPA-TDNN over a 128-bin log-mel of a
  reference clip; its x-vector stands in for a named speaker's embedding (voice cloning).

The talker's rope is multimodal (mrope) in the reference, but text-only prompts give all three
position streams the same index, which makes it ordinary 1-D rope: we use plain rope.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models import qwen3
from ominix.models.layers import CacheSpec, DenseBlock, attention_mask


def _known(cls, config: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (config or {}).items() if k in names}


@dataclass
class PredictorArgs:
    vocab_size: int = 2048
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 5
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    num_code_groups: int = 16


@dataclass
class TalkerArgs:
    vocab_size: int = 3072
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    num_code_groups: int = 16
    text_hidden_size: int = 2048
    text_vocab_size: int = 151936
    codec_eos_token_id: int = 2150
    codec_think_id: int = 2154
    codec_nothink_id: int = 2155
    codec_think_bos_id: int = 2156
    codec_think_eos_id: int = 2157
    codec_pad_id: int = 2148
    codec_bos_id: int = 2149
    codec_language_id: dict = field(default_factory=dict)
    spk_id: dict = field(default_factory=dict)
    spk_is_dialect: dict = field(default_factory=dict)
    code_predictor_config: PredictorArgs = field(default_factory=PredictorArgs)


@dataclass
class SpeakerEncoderArgs:
    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: list = field(default_factory=lambda: [512, 512, 512, 512, 1536])
    enc_kernel_sizes: list = field(default_factory=lambda: [5, 3, 3, 3, 1])
    enc_dilations: list = field(default_factory=lambda: [1, 2, 3, 4, 1])
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000


@dataclass
class ModelArgs:
    model_type: str
    talker_config: TalkerArgs
    speaker_encoder_config: SpeakerEncoderArgs | None = None
    tts_model_type: str = "custom_voice"  # custom_voice | base | voice_design
    tts_model_size: str = "1b7"
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        talker = dict(config.get("talker_config") or {})
        talker.setdefault("rope_theta", talker.get("rope_theta") or 1000000.0)
        predictor = PredictorArgs(**_known(PredictorArgs, talker.get("code_predictor_config")))
        talker_args = TalkerArgs(**{**_known(TalkerArgs, talker), "code_predictor_config": predictor})
        for key in ("codec_language_id", "spk_id", "spk_is_dialect"):
            setattr(talker_args, key, dict(getattr(talker_args, key) or {}))
        args = {k: v for k, v in _known(cls, config).items()
                if k not in ("talker_config", "speaker_encoder_config")}  # fmt: skip
        speaker = None
        if config.get("tts_model_type", "custom_voice") == "base":
            speaker = SpeakerEncoderArgs(**_known(SpeakerEncoderArgs, config.get("speaker_encoder_config")))
        return cls(talker_config=talker_args, speaker_encoder_config=speaker, **args)


def _qwen3_args(a, vocab_size: int) -> qwen3.ModelArgs:
    return qwen3.ModelArgs(
        model_type="qwen3", hidden_size=a.hidden_size, num_hidden_layers=a.num_hidden_layers,
        intermediate_size=a.intermediate_size, num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_key_value_heads, vocab_size=vocab_size, head_dim=a.head_dim,
        rms_norm_eps=a.rms_norm_eps, rope_theta=a.rope_theta,
    )  # fmt: skip


class _Stack(nn.Module):
    """Qwen3 blocks + final norm, fed embeddings (these decoders have no token embedding of their own)."""

    def __init__(self, args: qwen3.ModelArgs):
        super().__init__()
        self.layers = [DenseBlock(args, args.attention_options()) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def run(self, h: mx.array, cache=None) -> mx.array:
        cache = cache if cache is not None else [None] * len(self.layers)
        mask = attention_mask(h.shape[1], cache[0])
        for layer, c in zip(self.layers, cache):
            h = layer(h, mask, c)
        return self.norm(h)


class TalkerModel(_Stack):
    def __init__(self, a: TalkerArgs):
        super().__init__(_qwen3_args(a, a.vocab_size))
        self.codec_embedding = nn.Embedding(a.vocab_size, a.hidden_size)
        self.text_embedding = nn.Embedding(a.text_vocab_size, a.text_hidden_size)


class PredictorModel(_Stack):
    def __init__(self, p: PredictorArgs, talker_hidden: int):
        super().__init__(_qwen3_args(p, p.vocab_size))
        # Codebook i (1..G-1) is embedded at the talker's width, like the first one.
        self.codec_embedding = [nn.Embedding(p.vocab_size, talker_hidden) for _ in range(p.num_code_groups - 1)]


class CodePredictor(nn.Module):
    def __init__(self, p: PredictorArgs, talker_hidden: int):
        super().__init__()
        self.model = PredictorModel(p, talker_hidden)
        self.lm_head = [nn.Linear(p.hidden_size, p.vocab_size, bias=False) for _ in range(p.num_code_groups - 1)]
        self.project = p.hidden_size != talker_hidden
        if self.project:
            self.small_to_mtp_projection = nn.Linear(talker_hidden, p.hidden_size, bias=True)

    def __call__(self, embeds: mx.array, step: int, cache) -> mx.array:
        """embeds [B, L, talker_hidden] -> logits of codebook `step + 1` at the last position."""
        h = self.small_to_mtp_projection(embeds) if self.project else embeds
        h = self.model.run(h, cache)
        return self.lm_head[step](h[:, -1:])


class ResizeMLP(nn.Module):
    def __init__(self, dims: int, hidden: int, out: int):
        super().__init__()
        self.linear_fc1 = nn.Linear(dims, hidden, bias=True)
        self.linear_fc2 = nn.Linear(hidden, out, bias=True)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_fc2(nn.silu(self.linear_fc1(x)))


class Talker(nn.Module):
    def __init__(self, a: TalkerArgs):
        super().__init__()
        self.args = a
        self.model = TalkerModel(a)
        self.text_projection = ResizeMLP(a.text_hidden_size, a.text_hidden_size, a.hidden_size)
        self.codec_head = nn.Linear(a.hidden_size, a.vocab_size, bias=False)
        self.code_predictor = CodePredictor(a.code_predictor_config, a.hidden_size)

    def text(self, ids) -> mx.array:
        """Projected text embeddings [1, L, hidden] for token ids."""
        return self.text_projection(self.model.text_embedding(mx.array(ids, dtype=mx.int32)[None]))

    def codec(self, ids) -> mx.array:
        return self.model.codec_embedding(mx.array(ids, dtype=mx.int32)[None])

    def __call__(self, embeds: mx.array, cache=None) -> tuple[mx.array, mx.array]:
        """embeds [1, L, hidden] -> (first-codebook logits [1, vocab], last hidden [1, 1, hidden])."""
        h = self.model.run(embeds, cache)[:, -1:]
        return self.codec_head(h)[:, 0], h

    def frame_embedding(self, codes: mx.array) -> mx.array:
        """The next talker input for one frame's codes [G]: the sum of all codebooks' embeddings."""
        return self.codes_embedding(codes[None])

    def codes_embedding(self, codes: mx.array) -> mx.array:
        """Codes [T, G] of T frames -> talker inputs [1, T, hidden] (each frame's codebooks summed)."""
        total = self.model.codec_embedding(codes[:, 0])
        for i, emb in enumerate(self.code_predictor.model.codec_embedding):
            total = total + emb(codes[:, i + 1])
        return total[None]


# --- speaker encoder (ECAPA-TDNN), channels-last [B, T, C] --------------------------------------


def _reflect_pad(x: mx.array, p: int) -> mx.array:
    if p == 0:
        return x
    return mx.concatenate([x[:, p:0:-1], x, x[:, -2 : -p - 2 : -1]], axis=1)


class SameConv(nn.Module):
    """Conv1d with padding='same', padding_mode='reflect' (odd kernels)."""

    def __init__(self, cin: int, cout: int, k: int, dilation: int = 1):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        self.bias = mx.zeros((cout,))
        self.pad = dilation * (k - 1) // 2
        self.dilation = dilation

    def __call__(self, x: mx.array) -> mx.array:
        return mx.conv1d(_reflect_pad(x, self.pad), self.weight, dilation=self.dilation) + self.bias


class TDNN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, dilation: int):
        super().__init__()
        self.conv = SameConv(cin, cout, k, dilation)

    def __call__(self, x):
        return nn.relu(self.conv(x))


class Res2Net(nn.Module):
    def __init__(self, channels: int, scale: int, k: int, dilation: int):
        super().__init__()
        self.scale = scale
        self.blocks = [TDNN(channels // scale, channels // scale, k, dilation) for _ in range(scale - 1)]

    def __call__(self, x):
        parts = mx.split(x, self.scale, axis=-1)
        out = [parts[0]]
        for i in range(1, self.scale):
            y = parts[i] if i == 1 else parts[i] + out[-1]
            out.append(self.blocks[i - 1](y))
        return mx.concatenate(out, axis=-1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, se: int):
        super().__init__()
        self.conv1 = SameConv(channels, se, 1)
        self.conv2 = SameConv(se, channels, 1)

    def __call__(self, x):
        s = nn.relu(self.conv1(x.mean(axis=1, keepdims=True)))
        return x * mx.sigmoid(self.conv2(s))


class SERes2NetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: int, se: int, k: int, dilation: int):
        super().__init__()
        self.tdnn1 = TDNN(cin, cout, 1, 1)
        self.res2net_block = Res2Net(cout, scale, k, dilation)
        self.tdnn2 = TDNN(cout, cout, 1, 1)
        self.se_block = SqueezeExcite(cout, se)

    def __call__(self, x):
        return x + self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))


class AttentiveStatsPool(nn.Module):
    def __init__(self, channels: int, attention: int):
        super().__init__()
        self.tdnn = TDNN(channels * 3, attention, 1, 1)
        self.conv = SameConv(attention, channels, 1)

    @staticmethod
    def _stats(x, w):
        mean = (w * x).sum(axis=1)
        std = mx.sqrt(mx.maximum((w * (x - mean[:, None]) ** 2).sum(axis=1), 1e-12))
        return mean, std

    def __call__(self, x):
        T = x.shape[1]
        mean, std = self._stats(x, mx.full((1, T, 1), 1.0 / T))
        ctx = mx.concatenate([x, mx.repeat(mean[:, None], T, 1), mx.repeat(std[:, None], T, 1)], axis=-1)
        w = mx.softmax(self.conv(mx.tanh(self.tdnn(ctx))), axis=1)
        mean, std = self._stats(x, w)
        return mx.concatenate([mean, std], axis=-1)[:, None]


class SpeakerEncoder(nn.Module):
    def __init__(self, a: SpeakerEncoderArgs):
        super().__init__()
        ch, ks, dil = a.enc_channels, a.enc_kernel_sizes, a.enc_dilations
        self.blocks = [TDNN(a.mel_dim, ch[0], ks[0], dil[0])] + [
            SERes2NetBlock(ch[i - 1], ch[i], a.enc_res2net_scale, a.enc_se_channels, ks[i], dil[i])
            for i in range(1, len(ch) - 1)
        ]
        self.mfa = TDNN(ch[-1], ch[-1], ks[-1], dil[-1])  # input: blocks 1.. concatenated
        self.asp = AttentiveStatsPool(ch[-1], a.enc_attention_channels)
        self.fc = SameConv(ch[-1] * 2, a.enc_dim, 1)

    def __call__(self, mels: mx.array) -> mx.array:
        """mels [B, frames, mel_dim] (log-mel, see engine/audio) -> x-vectors [B, enc_dim]."""
        h, outs = mels, []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        h = self.mfa(mx.concatenate(outs[1:], axis=-1))
        return self.fc(self.asp(h))[:, 0]


# --- the whole model ----------------------------------------------------------------------------


def fit_conv_weight(w: mx.array, expected: tuple, transposed: bool = False) -> mx.array:
    """A PyTorch conv weight ([out, in, k], or [in, out, k] for a transposed conv) in MLX's
    [out, k, in]; checkpoints converted for MLX already have it, so only a mismatch is moved."""
    if tuple(w.shape) == tuple(expected):
        return w
    moved = w.transpose(1, 2, 0) if transposed else w.transpose(0, 2, 1)
    return moved if tuple(moved.shape) == tuple(expected) else w


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.talker = Talker(args.talker_config)
        if args.speaker_encoder_config is not None:
            self.speaker_encoder = SpeakerEncoder(args.speaker_encoder_config)

    @property
    def layers(self) -> list:
        return self.talker.model.layers

    def cache_specs(self) -> list[CacheSpec]:
        return [CacheSpec() for _ in self.talker.model.layers]

    def sanitize(self, weights: dict) -> dict:
        from mlx.utils import tree_flatten

        expected = dict(tree_flatten(self.parameters()))
        out = {}
        for name, w in weights.items():
            if "rotary_emb.inv_freq" in name or "position_ids" in name:
                continue
            if name.startswith("speaker_encoder.") and not hasattr(self, "speaker_encoder"):
                continue  # some conversions keep it in CustomVoice files, which never use it
            if w.ndim == 3 and name in expected:
                w = fit_conv_weight(w, expected[name].shape)
            out[name] = w
        return out
