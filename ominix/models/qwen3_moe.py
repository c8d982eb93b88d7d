"""Qwen3-MoE decoder (Qwen/Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3 attention, routed experts.

Each sparse layer routes a token to its top-k experts by softmax gate (renormalized when
`norm_topk_prob`); every `decoder_sparse_step`-th layer is sparse unless listed in
`mlp_only_layers`, the others use a dense SwiGLU MLP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import (
    MLP,
    Attention,
    CausalLM,
    DecoderBody,
    make_rope,
    read_rope_config,
)
from ominix.models.moe import SwitchGLU, combine_experts, stack_experts, topk_softmax_routing, unfuse_experts


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    num_experts: int  # transformers 5 writes num_local_experts; from_dict reads both
    num_experts_per_tok: int
    moe_intermediate_size: int
    intermediate_size: int = 0  # dense layers only (mlp_only_layers / decoder_sparse_step)
    head_dim: int = 128
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    norm_topk_prob: bool = False
    attention_bias: bool = False
    use_sliding_window: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        if self.use_sliding_window:
            raise ValueError("use_sliding_window=true is not supported for qwen3_moe")
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and "
                f"num_experts={self.num_experts}"
            )

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        if "num_experts" not in args and "num_local_experts" in config:
            args["num_experts"] = config["num_local_experts"]
        args["mlp_only_layers"] = list(config.get("mlp_only_layers") or [])
        args["rope_theta"], args["rope_scaling"] = read_rope_config(config)
        return cls(**args)

    def is_sparse(self, layer: int) -> bool:
        return (
            layer not in self.mlp_only_layers
            and self.num_experts > 0
            and (layer + 1) % self.decoder_sparse_step == 0
        )


class SparseMoeBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.top_k = args.num_experts_per_tok
        self.norm_topk_prob = args.norm_topk_prob
        self.gate = nn.Linear(args.hidden_size, args.num_experts, bias=False)
        self.switch_mlp = SwitchGLU(args.hidden_size, args.moe_intermediate_size, args.num_experts)

    def __call__(self, x: mx.array) -> mx.array:
        indices, weights = topk_softmax_routing(self.gate(x), self.top_k, self.norm_topk_prob)
        return combine_experts(self.switch_mlp(x, indices), weights)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
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
            qk_norm_eps=args.rms_norm_eps,
        )
        if args.is_sparse(layer):
            self.mlp = SparseMoeBlock(args)
        else:
            self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Qwen3MoeModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [TransformerBlock(args, i) for i in range(args.num_hidden_layers)])


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, Qwen3MoeModel(args))

    def quantization_override(self, path: str) -> dict | None:
        """Routers stay at 8 bits when converting: at 4 bits they pick different experts."""
        return {"group_size": 64, "bits": 8} if path.endswith("mlp.gate") else None

    def sanitize(self, weights: dict) -> dict:
        """Stack per-expert (Hugging Face) or fused (transformers 5) experts into switch_mlp;
        drop the tied head and rope buffers. Already-stacked (mlx-community) tensors pass."""
        weights = super().sanitize(weights)
        names = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}
        for layer in range(self.args.num_hidden_layers):
            prefix = f"model.layers.{layer}.mlp"
            unfuse_experts(weights, prefix)
            stack_experts(weights, prefix, self.args.num_experts, names)
        return weights
