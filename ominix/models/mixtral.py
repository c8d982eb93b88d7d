"""Mixtral sparse mixture of experts (mistralai/Mixtral-8x7B, 8x22B): Mistral attention, and in
every layer a `block_sparse_moe` that sends each token to its top-k of `num_local_experts`
SwiGLU experts (w1 = gate, w3 = up, w2 = down), weighted by the softmax of their gate logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import (
    Attention,
    CausalLM,
    DecoderBody,
    attention_mask,
    causal_mask,
    make_rope,
    read_rope_config,
)
from ominix.models.moe import SwitchGLU, combine_experts, stack_experts, topk_softmax_routing, unfuse_experts

# Hugging Face expert names -> the switch layer's
_EXPERT_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_local_experts: int = 8  # transformers 4 configs may say num_experts; from_dict reads both
    num_experts_per_tok: int = 2
    num_key_value_heads: int | None = None
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    sliding_window: int | None = None
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if not 0 < self.num_experts_per_tok <= self.num_local_experts:
            raise ValueError(
                f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and "
                f"num_local_experts={self.num_local_experts}"
            )

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        if "num_local_experts" not in args and "num_experts" in config:
            args["num_local_experts"] = config["num_experts"]
        args["rope_theta"], args["rope_scaling"] = read_rope_config(config)
        return cls(**args)


class SparseMoeBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.top_k = args.num_experts_per_tok
        self.gate = nn.Linear(args.hidden_size, args.num_local_experts, bias=False)
        self.switch_mlp = SwitchGLU(
            args.hidden_size, args.intermediate_size, args.num_local_experts
        )

    def __call__(self, x: mx.array) -> mx.array:
        indices, weights = topk_softmax_routing(self.gate(x), self.top_k, normalize=True)
        return combine_experts(self.switch_mlp(x, indices), weights)


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
        )
        self.block_sparse_moe = SparseMoeBlock(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.block_sparse_moe(self.post_attention_layernorm(h))


class MixtralModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [TransformerBlock(args) for _ in range(args.num_hidden_layers)])
        self.sliding_window = args.sliding_window

    def mask(self, length: int, cache):
        if self.sliding_window is None or (cache is not None and hasattr(cache, "make_mask")):
            return attention_mask(length, cache)
        # The plain KV cache keeps every key, so the window is applied by the mask alone.
        offset = cache.offset if cache is not None else 0
        return causal_mask(length, offset, window=self.sliding_window)


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, MixtralModel(args))

    def quantization_override(self, path: str) -> dict | None:
        """Routers stay at 8 bits when converting: at 4 bits they pick different experts."""
        return {"group_size": 64, "bits": 8} if path.endswith("block_sparse_moe.gate") else None

    def sanitize(self, weights: dict) -> dict:
        """Stack per-expert w1/w2/w3 (Hugging Face, or quantized per expert as early
        mlx-community conversions are) into switch_mlp; drop the tied head and rope buffers."""
        weights = super().sanitize(weights)
        for layer in range(self.args.num_hidden_layers):
            prefix = f"model.layers.{layer}.block_sparse_moe"
            unfuse_experts(weights, prefix)
            stack_experts(weights, prefix, self.args.num_local_experts, _EXPERT_NAMES)
        return weights
