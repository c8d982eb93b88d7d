"""Qwen3-ASR: a Whisper-style audio encoder whose frames replace <|audio_pad|> tokens in a Qwen3
decoder prompt (ominix/models/qwen3.py).

The module tree is mlx-community's (mlx-audio's conversion): `audio_tower.*` (conv2d1..3 in MLX
layout, conv_out, layers.N.{self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2,
final_layer_norm}, ln_post, proj1, proj2) and the decoder's `model.*` / `lm_head`. `sanitize` maps
the two other published layouts onto it: Qwen's original (`thinker.` prefix, PyTorch convs) and
transformers' `-hf` one (`model.audio_tower`, `model.multi_modal_projector.linear_1/2`,
`model.language_model`). config.json comes in the same three spellings (`thinker_config`, flat
`audio_config`/`text_config`).

The encoder cuts the log-mel into 1 s chunks (2 * n_window frames, zero padded), runs the conv
stack per chunk (positions restart at 0 in each chunk), keeps the valid frames, and attends within
windows of n_window_infer mel frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ominix.models import qwen3
from ominix.models.layers import CausalLM


def _text_config(config: dict) -> dict:
    text = dict(config.get("text_config") or {})
    text.setdefault("model_type", "qwen3")
    scaling = text.get("rope_scaling") or text.get("rope_parameters")
    if isinstance(scaling, dict) and "mrope_section" in scaling:
        # audio + text positions are the same on all three M-RoPE axes: plain 1-D RoPE
        text["rope_theta"] = scaling.get("rope_theta", text.get("rope_theta", 1000000.0))
        text.pop("rope_scaling", None)
        text.pop("rope_parameters", None)
    text.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", True))
    return text


@dataclass
class AudioArgs:
    num_mel_bins: int = 128
    encoder_layers: int = 24
    encoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    d_model: int = 1024
    n_window: int = 50
    n_window_infer: int = 800
    output_dim: int = 2048
    downsample_hidden_size: int = 480

    @classmethod
    def from_dict(cls, config: dict) -> "AudioArgs":
        return cls(**{k: v for k, v in config.items() if k in cls.__dataclass_fields__})


@dataclass
class ModelArgs:
    audio: AudioArgs
    text: qwen3.ModelArgs
    audio_token_id: int = 151676
    audio_start_token_id: int = 151669
    audio_end_token_id: int = 151670
    eos_token_ids: tuple = (151643, 151645)
    support_languages: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        outer = dict(config)
        if "thinker_config" in outer:  # Qwen's original config.json
            outer = {**outer, **outer["thinker_config"]}
        eos = outer.get("eos_token_id", (151643, 151645))
        return cls(audio=AudioArgs.from_dict(outer.get("audio_config") or {}),
                   text=qwen3.ModelArgs.from_dict(_text_config(outer)),
                   audio_token_id=int(outer.get("audio_token_id", 151676)),
                   audio_start_token_id=int(outer.get("audio_start_token_id", 151669)),
                   audio_end_token_id=int(outer.get("audio_end_token_id", 151670)),
                   eos_token_ids=tuple(eos) if isinstance(eos, (list, tuple)) else (eos,),
                   support_languages=list(outer.get("support_languages") or []))


def sinusoids(length: int, channels: int) -> mx.array:
    step = math.log(10000.0) / (channels // 2 - 1)
    inv = mx.exp(-step * mx.arange(channels // 2, dtype=mx.float32))
    t = mx.arange(length, dtype=mx.float32)[:, None] * inv[None, :]
    return mx.concatenate([mx.sin(t), mx.cos(t)], axis=1)


def conv_length(n: int) -> int:
    """Frames after the three stride-2 convolutions (kernel 3, padding 1)."""
    for _ in range(3):
        n = (n - 1) // 2 + 1 if n > 0 else 0
    return n


class AudioAttention(nn.Module):
    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dims, dims)
        self.k_proj = nn.Linear(dims, dims)
        self.v_proj = nn.Linear(dims, dims)
        self.out_proj = nn.Linear(dims, dims)

    def __call__(self, x: mx.array, windows: list[int]) -> mx.array:
        t, d = x.shape
        h = self.heads
        q, k, v = (p(x).reshape(t, h, d // h).transpose(1, 0, 2)[None] for p in (self.q_proj, self.k_proj, self.v_proj))
        outs, start = [], 0
        for size in windows:  # attention stays inside each window
            sl = slice(start, start + size)
            outs.append(mx.fast.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl],
                                                             scale=(d // h) ** -0.5))
            start += size
        out = mx.concatenate(outs, axis=2)[0].transpose(1, 0, 2).reshape(t, d)
        return self.out_proj(out)


class AudioEncoderLayer(nn.Module):
    def __init__(self, args: AudioArgs):
        super().__init__()
        self.self_attn = AudioAttention(args.d_model, args.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(args.d_model)
        self.fc1 = nn.Linear(args.d_model, args.encoder_ffn_dim)
        self.fc2 = nn.Linear(args.encoder_ffn_dim, args.d_model)
        self.final_layer_norm = nn.LayerNorm(args.d_model)

    def __call__(self, x: mx.array, windows: list[int]) -> mx.array:
        x = x + self.self_attn(self.self_attn_layer_norm(x), windows)
        return x + self.fc2(nn.gelu(self.fc1(self.final_layer_norm(x))))


class AudioEncoder(nn.Module):
    def __init__(self, args: AudioArgs):
        super().__init__()
        self.args = args
        c = args.downsample_hidden_size
        self.conv2d1 = nn.Conv2d(1, c, 3, stride=2, padding=1)
        self.conv2d2 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.conv2d3 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        freq = conv_length(args.num_mel_bins)
        self.conv_out = nn.Linear(c * freq, args.d_model, bias=False)
        self.layers = [AudioEncoderLayer(args) for _ in range(args.encoder_layers)]
        self.ln_post = nn.LayerNorm(args.d_model)
        self.proj1 = nn.Linear(args.d_model, args.d_model)
        self.proj2 = nn.Linear(args.d_model, args.output_dim)

    def windows(self, frames: int) -> list[int]:
        """Attention windows over the kept frames (n_window_infer mel frames each)."""
        chunk = 2 * self.args.n_window
        full, rest = divmod(frames, chunk)
        lengths = [conv_length(chunk)] * full + ([conv_length(rest)] if rest else [])
        window = max(lengths) * (self.args.n_window_infer // chunk)
        total = sum(lengths)
        return [window] * (total // window) + ([total % window] if total % window else [])

    def __call__(self, mel: mx.array, frames: int) -> mx.array:
        """mel (n_mels, >= frames) log-mel; returns (audio tokens, output_dim)."""
        chunk = 2 * self.args.n_window
        n_chunks = -(-frames // chunk)
        valid = mel[:, :frames]
        valid = mx.pad(valid, [(0, 0), (0, n_chunks * chunk - frames)])  # chunks are zero padded
        x = valid.reshape(mel.shape[0], n_chunks, chunk).transpose(1, 0, 2)[..., None]
        x = nn.gelu(self.conv2d1(x))
        x = nn.gelu(self.conv2d2(x))
        x = nn.gelu(self.conv2d3(x))
        b, f, t, c = x.shape
        x = self.conv_out(x.transpose(0, 2, 3, 1).reshape(b, t, c * f))
        x = x + sinusoids(t, x.shape[-1]).astype(x.dtype)
        kept = [conv_length(min(chunk, frames - i * chunk)) for i in range(n_chunks)]
        x = mx.concatenate([x[i, :n] for i, n in enumerate(kept)], axis=0)
        windows = self.windows(frames)
        for layer in self.layers:
            x = layer(x, windows)
        x = self.ln_post(x)
        return self.proj2(nn.gelu(self.proj1(x)))


def run_embeddings(lm: CausalLM, h: mx.array, cache=None) -> mx.array:
    """A decoder's logits for input embeddings (1, L, H) instead of token ids."""
    body = lm.model
    cache = cache if cache is not None else [None] * len(body.layers)
    mask = body.mask(h.shape[1], cache[0])
    for layer, layer_cache in zip(body.layers, cache):
        h = layer(h, mask, layer_cache)
    return lm.head(body.norm(h))


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args.text, qwen3.Qwen3Model(args.text))
        self.config = args
        self.audio_tower = AudioEncoder(args.audio)

    def audio_tokens(self, frames: int) -> int:
        chunk = 2 * self.config.audio.n_window
        full, rest = divmod(frames, chunk)
        return full * conv_length(chunk) + conv_length(rest)

    def embed(self, input_ids: mx.array, audio: mx.array | None) -> mx.array:
        """Token embeddings (1, L, H) with the audio frames at the <|audio_pad|> positions."""
        h = self.model.embed_tokens(input_ids)
        if audio is None:
            return h
        positions = np.nonzero(np.array(input_ids[0]) == self.config.audio_token_id)[0]
        if len(positions) != audio.shape[0]:
            raise ValueError(f"prompt has {len(positions)} audio tokens for {audio.shape[0]} audio frames")
        start, end = int(positions[0]), int(positions[-1]) + 1
        return mx.concatenate([h[:, :start], audio.astype(h.dtype)[None], h[:, end:]], axis=1)

    def forward_embeddings(self, h: mx.array, cache=None) -> mx.array:
        return run_embeddings(self, h, cache)

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            torch_layout = name.startswith(("thinker.", "model.audio_tower."))
            name = name.removeprefix("thinker.")
            name = name.replace("model.multi_modal_projector.linear_1.", "audio_tower.proj1.")
            name = name.replace("model.multi_modal_projector.linear_2.", "audio_tower.proj2.")
            name = name.replace("model.audio_tower.", "audio_tower.").replace("model.language_model.", "model.")
            if torch_layout and ".conv2d" in name and name.endswith(".weight") and w.ndim == 4:
                w = w.transpose(0, 2, 3, 1)  # PyTorch (O, I, kH, kW) -> MLX (O, kH, kW, I)
            out[name] = w
        return super().sanitize(out)
