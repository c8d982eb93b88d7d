"""Qwen3 dense decoder (Qwen/Qwen3-*): grouped-query attention with per-head q/k RMSNorm."""

from __future__ import annotations

from dataclasses import dataclass


from ominix.models.layers import CausalLM, DecoderBody, DenseBlock, args_from_config


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int = 128  # Qwen3 sets it explicitly; it need not equal hidden_size / heads
    attention_bias: bool = False
    use_sliding_window: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        if self.use_sliding_window:
            raise ValueError(f"use_sliding_window=true is not supported for {self.model_type}")

    def attention_options(self) -> dict:
        """What sets this family's attention apart (Qwen2 overrides it: q/k/v biases, no norms)."""
        return {
            "qkv_bias": self.attention_bias,
            "o_bias": self.attention_bias,
            "qk_norm_eps": self.rms_norm_eps,
        }

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        return args_from_config(cls, config)


class Qwen3Model(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [DenseBlock(args, args.attention_options()) for _ in range(args.num_hidden_layers)])


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, Qwen3Model(args))
