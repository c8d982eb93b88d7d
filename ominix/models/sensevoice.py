"""FunAudioLLM SenseVoice-Small: a SAN-M encoder with four query frames and a CTC head.

Before the audio features, SenseVoice puts four learned "query" frames from `embed` (16 x 560):
the language (auto/zh/en/yue/ja/ko), an event and an emotion query (ids 1 and 2), and the text
normalisation style (with/without ITN). The encoder (`encoders0`, `encoders`, `after_norm`, then
`tp_encoders`, `tp_norm`; LayerNorm eps 1e-5, unlike Paraformer) maps them to frames whose CTC
argmax reads back as tags (`<|zh|><|NEUTRAL|><|Speech|><|woitn|>`) followed by the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.sanm import EncoderLayerSANM, layer_norm, sinusoidal_encoding

LN_EPS = 1e-5  # SenseVoice's LayerNorm is torch's default
LANGUAGE_QUERY = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
TEXTNORM_QUERY = {"withitn": 14, "woitn": 15}
EVENT_EMOTION_QUERY = (1, 2)


@dataclass
class ModelArgs:
    input_size: int = 560
    vocab_size: int = 25055
    encoder_conf: dict = field(default_factory=dict)
    blank_id: int = 0

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        if config.get("encoder") not in (None, "SenseVoiceEncoderSmall"):
            raise ValueError(f"SenseVoice encoder '{config.get('encoder')}' is not supported")
        front = config.get("frontend_conf") or {}
        input_size = config.get("input_size") or int(front.get("n_mels", 80)) * int(front.get("lfr_m", 1))
        return cls(input_size=int(input_size), vocab_size=int(config.get("vocab_size", 25055)),
                   encoder_conf=dict(config.get("encoder_conf") or {}),
                   blank_id=int((config.get("model_conf") or {}).get("blank_id", 0)))


class SenseVoiceEncoderSmall(nn.Module):
    def __init__(self, input_size: int, conf: dict):
        super().__init__()
        dims = int(conf.get("output_size", 256))
        heads, hidden = int(conf.get("attention_heads", 4)), int(conf.get("linear_units", 2048))
        kernel, shift = int(conf.get("kernel_size", 11)), int(conf.get("sanm_shfit", 0))
        blocks, tp_blocks = int(conf.get("num_blocks", 6)), int(conf.get("tp_blocks", 0))

        def layer(width):
            return EncoderLayerSANM(width, dims, heads, hidden, kernel, shift, eps=LN_EPS)

        self.dims = dims
        self.encoders0 = [layer(input_size)]
        self.encoders = [layer(dims) for _ in range(blocks - 1)]
        self.tp_encoders = [layer(dims) for _ in range(tp_blocks)]
        self.after_norm = layer_norm(dims, LN_EPS)
        self.tp_norm = layer_norm(dims, LN_EPS)

    def __call__(self, x: mx.array) -> mx.array:
        x = x * (self.dims ** 0.5)
        x = x + sinusoidal_encoding(x.shape[1], x.shape[2]).astype(x.dtype)
        for block in self.encoders0 + self.encoders:
            x = block(x)
        x = self.after_norm(x)
        for block in self.tp_encoders:
            x = block(x)
        return self.tp_norm(x)


class CTC(nn.Module):
    def __init__(self, dims: int, vocab_size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(dims, vocab_size)


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(7 + len(LANGUAGE_QUERY) + len(TEXTNORM_QUERY), args.input_size)
        self.encoder = SenseVoiceEncoderSmall(args.input_size, args.encoder_conf)
        self.ctc = CTC(self.encoder.dims, args.vocab_size)

    def queries(self, language: str = "auto", use_itn: bool = False) -> mx.array:
        ids = [LANGUAGE_QUERY.get(language, 0), *EVENT_EMOTION_QUERY,
               TEXTNORM_QUERY["withitn" if use_itn else "woitn"]]
        return self.embed(mx.array(ids))[None]

    def __call__(self, feats: mx.array, language: str = "auto", use_itn: bool = False) -> mx.array:
        """CTC log-probabilities (1, 4 + T, vocab) for features (1, T, 560)."""
        x = mx.concatenate([self.queries(language, use_itn).astype(feats.dtype), feats], axis=1)
        logits = self.ctc.ctc_lo(self.encoder(x))
        return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def sanitize(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if not k.startswith("criterion_att.")}
