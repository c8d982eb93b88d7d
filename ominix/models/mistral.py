"""Mistral dense decoder (mistralai/Mistral-7B-*): Llama-style grouped-query attention, with
sliding-window attention when the config sets `sliding_window` (v0.1); v0.2/v0.3 set it to null."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ominix.models.layers import CacheSpec, CausalLM, DecoderBody, DenseBlock, attention_mask, args_from_config


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
    sliding_window: int | None = None
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive integer or null, "
                             f"got {self.sliding_window}")  # fmt: skip

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        return args_from_config(cls, config)


class MistralModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [DenseBlock(args) for _ in range(args.num_hidden_layers)])
        self.sliding_window = args.sliding_window

    def mask(self, length: int, cache):
        # Without a cache nothing trims old keys, so the window is applied by the mask.
        if cache is None and self.sliding_window is not None and length > self.sliding_window:
            return _window_mask(length, self.sliding_window)
        return attention_mask(length, cache)


def _window_mask(length: int, window: int) -> mx.array:
    pos = mx.arange(length)
    return (pos[None] <= pos[:, None]) & (pos[:, None] - pos[None] < window)


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, MistralModel(args))

    def cache_specs(self) -> list[CacheSpec]:
        return [CacheSpec(window=self.args.sliding_window) for _ in self.layers]
