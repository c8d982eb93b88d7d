"""FunASR-Qwen4B (OminiX-MLX's funasr-qwen4b-mlx crate): SenseVoice's encoder, a trained Transformer
adaptor into Qwen3-4B's embedding space, and Qwen3-4B itself (ominix/models/qwen3.py, loaded from
its own directory).

The adaptor (adaptor_phase3_final.safetensors / adaptor_phase2_final.safetensors) was trained in
PyTorch as `input_proj` Linear(512 -> 2048), a stack of `nn.TransformerEncoderLayer(2048, 8 heads,
8192, activation="gelu", batch_first=True)` (post-norm: x = norm1(x + attn(x)); x = norm2(x +
ffn(x))), `output_proj` Linear(2048 -> 2560) and a final LayerNorm(2560). The published file has
the crate's converted names: `input_proj.*`, `layers.N.{q,k,v,out}_proj.*`,
`layers.N.{ffn_linear1|linear1, ffn_linear2|linear2, norm1, norm2}.*`, `output_proj.*`, `norm.*`;
`sanitize_adaptor` also reads PyTorch's own TransformerEncoder names (fused `in_proj_weight`).

The encoder file is a SenseVoice-Small (`encoder.*`) or a Fun-ASR-Nano (`audio_encoder.*`) state
dict; only the encoder's tensors are kept. Neither file carries a config: shapes give every width,
the head counts are the crate's (encoder 4, adaptor 8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models.sensevoice import SenseVoiceEncoderSmall

LN_EPS = 1e-5  # torch.nn.LayerNorm / TransformerEncoderLayer defaults


@dataclass
class AdaptorArgs:
    input_dim: int = 512
    hidden_dim: int = 2048
    output_dim: int = 2560
    num_layers: int = 4
    num_heads: int = 8
    ffn_dim: int = 8192

    @classmethod
    def from_weights(cls, weights: dict, num_heads: int = 8) -> "AdaptorArgs":
        hidden, input_dim = weights["input_proj.weight"].shape
        layers = {int(m.group(1)) for k in weights if (m := re.match(r"layers\.(\d+)\.", k))}
        return cls(input_dim=int(input_dim), hidden_dim=int(hidden),
                   output_dim=int(weights["output_proj.weight"].shape[0]), num_layers=len(layers),
                   num_heads=num_heads, ffn_dim=int(weights["layers.0.ffn_linear1.weight"].shape[0]))


class AdaptorLayer(nn.Module):
    """nn.TransformerEncoderLayer in eval mode, post-norm, GELU."""

    def __init__(self, dims: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(dims, dims), nn.Linear(dims, dims)
        self.v_proj, self.out_proj = nn.Linear(dims, dims), nn.Linear(dims, dims)
        self.ffn_linear1, self.ffn_linear2 = nn.Linear(dims, ffn), nn.Linear(ffn, dims)
        self.norm1, self.norm2 = nn.LayerNorm(dims, eps=LN_EPS), nn.LayerNorm(dims, eps=LN_EPS)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        h = self.heads
        q, k, v = (p(x).reshape(b, t, h, d // h).transpose(0, 2, 1, 3) for p in (self.q_proj, self.k_proj, self.v_proj))
        attn = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // h) ** -0.5)
        x = self.norm1(x + self.out_proj(attn.transpose(0, 2, 1, 3).reshape(b, t, d)))
        return self.norm2(x + self.ffn_linear2(nn.gelu(self.ffn_linear1(x))))


class Adaptor(nn.Module):
    def __init__(self, args: AdaptorArgs):
        super().__init__()
        self.input_proj = nn.Linear(args.input_dim, args.hidden_dim)
        self.layers = [AdaptorLayer(args.hidden_dim, args.num_heads, args.ffn_dim) for _ in range(args.num_layers)]
        self.output_proj = nn.Linear(args.hidden_dim, args.output_dim)
        self.norm = nn.LayerNorm(args.output_dim, eps=LN_EPS)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.input_proj(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(self.output_proj(x))


def sanitize_adaptor(weights: dict) -> dict:
    """The crate's converted names, from either spelling of the adaptor file."""
    out = {}
    for name, w in weights.items():
        name = name.removeprefix("module.").removeprefix("adaptor.")
        name = re.sub(r"^(?:transformer|encoder)\.layers\.", "layers.", name)
        if name.endswith(("self_attn.in_proj_weight", "self_attn.in_proj_bias")):  # PyTorch's fused q/k/v
            stem, kind = name.split(".self_attn.")[0], "weight" if name.endswith("weight") else "bias"
            for part, piece in zip("qkv", mx.split(w, 3, axis=0)):
                out[f"{stem}.{part}_proj.{kind}"] = piece
            continue
        name = name.replace(".self_attn.out_proj.", ".out_proj.")
        name = re.sub(r"\.linear([12])\.", r".ffn_linear\1.", name)
        out[name] = w
    return out


def encoder_conf(weights: dict, heads: int = 4) -> dict:
    """SenseVoiceEncoderSmall's conf from an (already sanitized) encoder state dict's shapes."""
    def count(prefix: str) -> int:
        return len({int(m.group(1)) for k in weights if (m := re.match(prefix + r"\.(\d+)\.", k))})

    dims = int(weights["after_norm.weight"].shape[0])
    return {"output_size": dims, "attention_heads": heads, "num_blocks": count("encoders") + 1,
            "tp_blocks": count("tp_encoders"),
            "linear_units": int(weights["encoders0.0.feed_forward.w_1.weight"].shape[0]),
            "kernel_size": int(weights["encoders0.0.self_attn.fsmn_block.weight"].shape[-1])}


def sanitize_encoder(weights: dict) -> dict:
    """The encoder's tensors of a SenseVoice-Small or Fun-ASR-Nano state dict, FSMN as (C, 1, K)."""
    out = {}
    for name, w in weights.items():
        name = name.removeprefix("module.")
        for prefix in ("audio_encoder.", "encoder."):
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        else:
            if not name.startswith(("encoders", "tp_encoders", "after_norm", "tp_norm")):
                continue  # the CTC head, the query embeddings, Fun-ASR-Nano's adaptor and LLM
        if name.endswith("fsmn_block.weight") and w.ndim == 3 and w.shape[1] != 1:
            w = w.transpose(0, 2, 1)  # MLX conv layout (C, K, 1) -> (C, 1, K)
        out[name] = w
    return out


class AudioModel(nn.Module):
    """Encoder + adaptor: LFR fbank features (1, T, 560) -> Qwen3-4B input embeddings (1, T, 2560)."""

    def __init__(self, encoder: dict, adaptor: AdaptorArgs, input_size: int = 560):
        super().__init__()
        self.encoder = SenseVoiceEncoderSmall(input_size, encoder)
        self.adaptor = Adaptor(adaptor)

    def __call__(self, feats: mx.array) -> mx.array:
        return self.adaptor(self.encoder(feats))

    @classmethod
    def from_weights(cls, encoder_weights: dict, adaptor_weights: dict,
                     adaptor_heads: int = 8) -> tuple["AudioModel", dict]:
        enc, ada = sanitize_encoder(encoder_weights), sanitize_adaptor(adaptor_weights)
        input_size = int(enc["encoders0.0.self_attn.linear_q_k_v.weight"].shape[1])
        model = cls(encoder_conf(enc), AdaptorArgs.from_weights(ada, adaptor_heads), input_size)
        weights = {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"adaptor.{k}": v for k, v in ada.items()}}
        return model, weights
