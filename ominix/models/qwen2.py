"""Qwen2 / Qwen2.5 dense decoder: Qwen3's network with biases on the q/k/v projections instead of
per-head q/k norms, and head_dim derived from the hidden size."""

from __future__ import annotations

from dataclasses import dataclass

from ominix.models import qwen3


@dataclass
class ModelArgs(qwen3.ModelArgs):
    head_dim: int | None = None  # hidden_size / num_attention_heads unless the config sets it

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        super().__post_init__()

    def attention_options(self) -> dict:
        return {"qkv_bias": True}


Model = qwen3.Model
