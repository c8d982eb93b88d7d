"""Llama family decoder (Llama 2, Llama 3.x, SmolLM2, TinyLlama, and Mistral-style checkpoints
published with `model_type: llama`): grouped-query attention, SwiGLU MLP, RMSNorm, and the rope
variants transformers' LlamaForCausalLM applies (default, linear, llama3, yarn).

`attention_bias` puts biases on q/k/v/o, `mlp_bias` on the MLP (both false in Meta's releases).
transformers' Llama has no sliding window, so a `sliding_window` key is ignored here too.
"""

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
        return args_from_config(cls, config)


class LlamaModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [DenseBlock(args, {"qkv_bias": args.attention_bias, "o_bias": args.attention_bias}, args.mlp_bias) for _ in range(args.num_hidden_layers)])


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, LlamaModel(args))
