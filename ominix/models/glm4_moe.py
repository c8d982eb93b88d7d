"""GLM-4.5 mixture of experts (zai-org/GLM-4.5, GLM-4.5-Air; model_type glm4_moe).

Attention: grouped-query with biased q/k/v, optional per-head q/k RMSNorm, rope on the first
`partial_rotary_factor` of each head. The first `first_k_dense_replace` layers use a dense SwiGLU
MLP; the rest route each token to experts by sigmoid scores: a per-expert correction bias steers
the choice (not the weights), the choice is confined to the best `topk_group` of `n_group`
expert groups, the chosen scores are optionally renormalized and scaled by
`routed_scaling_factor`, and shared experts see every token. Checkpoints carry a multi-token
prediction layer after the last decoder layer; decoding does not use it, so sanitize drops it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
from ominix.models.moe import SwitchGLU, combine_experts, stack_experts, unfuse_experts

_EXPERT_NAMES = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    moe_intermediate_size: int
    n_routed_experts: int  # transformers 5 may write num_local_experts; from_dict reads both
    num_experts_per_tok: int
    head_dim: int | None = None
    n_shared_experts: int | None = 1
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 1
    partial_rotary_factor: float = 0.5  # top-level in 4.x configs, in rope_parameters in 5.x
    use_qk_norm: bool = False
    attention_bias: bool = False
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.n_routed_experts % self.n_group:
            raise ValueError(
                f"n_routed_experts={self.n_routed_experts} is not divisible by "
                f"n_group={self.n_group}"
            )
        if not 0 < self.topk_group <= self.n_group:
            raise ValueError(f"topk_group={self.topk_group} must be between 1 and n_group")
        eligible = self.n_routed_experts // self.n_group * self.topk_group
        if not 0 < self.num_experts_per_tok <= eligible:
            raise ValueError(
                f"num_experts_per_tok={self.num_experts_per_tok} must be between 1 and the "
                f"{eligible} experts of the top {self.topk_group} group(s)"
            )

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        if "n_routed_experts" not in args and "num_local_experts" in config:
            args["n_routed_experts"] = config["num_local_experts"]
        rope_parameters = config.get("rope_parameters") or {}
        if "partial_rotary_factor" in rope_parameters:
            args["partial_rotary_factor"] = rope_parameters["partial_rotary_factor"]
        theta, scaling = read_rope_config(config)
        if scaling is not None:
            scaling.pop("partial_rotary_factor", None)
        args["rope_theta"], args["rope_scaling"] = theta, scaling
        return cls(**args)


def group_limited_topk(
    logits: mx.array,
    correction_bias: mx.array,
    k: int,
    n_group: int,
    topk_group: int,
    normalize: bool,
    scaling: float,
) -> tuple[mx.array, mx.array]:
    """(expert indices, weights) [..., k] from router logits, as GLM-4.5 / DeepSeek-V3 route."""
    scores = mx.sigmoid(logits.astype(mx.float32))
    choice = scores + correction_bias.astype(mx.float32)
    if topk_group < n_group:
        # A group's merit is the sum of its two best biased scores; only the best groups stay.
        grouped = mx.unflatten(choice, -1, (n_group, -1))
        merit = mx.topk(grouped, 2, axis=-1).sum(axis=-1)  # [..., n_group]
        dropped = mx.argpartition(merit, kth=n_group - topk_group - 1, axis=-1)
        dropped = dropped[..., : n_group - topk_group, None]
        grouped = mx.put_along_axis(grouped, dropped, mx.array(-mx.inf, grouped.dtype), axis=-2)
        choice = mx.flatten(grouped, -2, -1)
    indices = mx.stop_gradient(mx.argpartition(-choice, kth=k - 1, axis=-1)[..., :k])
    weights = mx.take_along_axis(scores, indices, axis=-1)
    if normalize:
        weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
    return indices, weights * scaling


class MoEGate(nn.Module):
    """The router: a bias-free projection to expert logits plus the selection bias. Not an
    nn.Linear, so it is never quantized (routing is precision-sensitive; mlx-lm agrees)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.top_k = args.num_experts_per_tok
        self.n_group = args.n_group
        self.topk_group = args.topk_group
        self.norm_topk_prob = args.norm_topk_prob
        self.routed_scaling_factor = args.routed_scaling_factor
        self.weight = mx.zeros((args.n_routed_experts, args.hidden_size))
        self.e_score_correction_bias = mx.zeros((args.n_routed_experts,))

    def __call__(self, x: mx.array) -> tuple[mx.array, mx.array]:
        logits = x.astype(mx.float32) @ self.weight.astype(mx.float32).T
        return group_limited_topk(
            logits, self.e_score_correction_bias, self.top_k, self.n_group, self.topk_group,
            self.norm_topk_prob, self.routed_scaling_factor,
        )  # fmt: skip


class MoE(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate = MoEGate(args)
        self.switch_mlp = SwitchGLU(
            args.hidden_size, args.moe_intermediate_size, args.n_routed_experts
        )
        if args.n_shared_experts:
            shared = args.moe_intermediate_size * args.n_shared_experts
            self.shared_experts = MLP(args.hidden_size, shared)

    def __call__(self, x: mx.array) -> mx.array:
        indices, weights = self.gate(x)
        y = combine_experts(self.switch_mlp(x, indices), weights)
        if "shared_experts" in self:
            y = y + self.shared_experts(x)
        return y


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        rope_dims = int(args.head_dim * args.partial_rotary_factor)
        rope = make_rope(
            rope_dims, args.rope_theta, args.rope_scaling, args.max_position_embeddings
        )
        self.self_attn = Attention(
            args.hidden_size,
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
            rope,
            qkv_bias=args.attention_bias,
            qk_norm_eps=args.rms_norm_eps if args.use_qk_norm else None,
        )
        if layer >= args.first_k_dense_replace:
            self.mlp = MoE(args)
        else:
            self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Glm4MoeModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [TransformerBlock(args, i) for i in range(args.num_hidden_layers)])


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, Glm4MoeModel(args))

    def _is_mtp(self, name: str) -> bool:
        parts = name.split(".")
        return (
            name.startswith("model.layers.")
            and parts[2].isdigit()
            and int(parts[2]) >= self.args.num_hidden_layers
        )

    def sanitize(self, weights: dict) -> dict:
        """Drop the multi-token-prediction layers (numbered from num_hidden_layers on), the
        tied head and rope buffers; stack per-expert or fused experts into switch_mlp."""
        weights = {name: w for name, w in super().sanitize(weights).items() if not self._is_mtp(name)}
        for layer in range(self.args.first_k_dense_replace, self.args.num_hidden_layers):
            prefix = f"model.layers.{layer}.mlp"
            unfuse_experts(weights, prefix)
            stack_experts(weights, prefix, self.args.n_routed_experts, _EXPERT_NAMES)
        return weights
