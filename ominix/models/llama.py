"""Llama family decoder (Llama 2, Llama 3.x, SmolLM2, TinyLlama, and Mistral-style checkpoints
published with `model_type: llama`): grouped-query attention, SwiGLU MLP, RMSNorm, and the rope
variants transformers' LlamaForCausalLM applies (default, linear, llama3, yarn).

`attention_bias` puts biases on q/k/v/o, `mlp_bias` on the MLP (both false in Meta's releases).
transformers' Llama has no sliding window, so a `sliding_window` key is ignored here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import MLP, Attention, CausalLM, DecoderBody, make_rope, read_rope_config


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple "
                             f"of num_key_value_heads ({self.num_key_value_heads})")  # fmt: skip

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        args["rope_theta"], args["rope_scaling"] = read_rope_config(config)
        return cls(**args)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        rope = make_rope(
            args.head_dim, args.rope_theta, args.rope_scaling, args.max_position_embeddings
        )
        self.self_attn = Attention(
            args.hidden_size,
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
            rope,
            qkv_bias=args.attention_bias,
            o_bias=args.attention_bias,
        )
        self.mlp = MLP(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [TransformerBlock(args) for _ in range(args.num_hidden_layers)])


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, LlamaModel(args))
