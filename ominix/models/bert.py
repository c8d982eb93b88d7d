"""BERT encoders (sentence-transformers models such as all-MiniLM-L6-v2, bge, e5).

The module tree is named like the Hugging Face checkpoint (`embeddings.*`, `encoder.layer.N.*`) so
weights load without renames; `sanitize` only drops heads we never run (pooler, MLM/NSP heads).
`Model(input_ids, attention_mask)` returns the last hidden states [B, L, H] (or those after the first
`num_layers` layers); pooling lives in engine/embed.py because it is configured per checkpoint, not
per architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn


@dataclass
class ModelArgs:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = cls.__dataclass_fields__
        args = cls(**{k: v for k, v in config.items() if k in known})
        if args.position_embedding_type != "absolute":
            raise ValueError(
                f"BERT position_embedding_type '{args.position_embedding_type}' is not supported "
                "(only 'absolute')"
            )
        if args.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BERT hidden_act '{args.hidden_act}' is not supported")
        return args


_ACTIVATIONS = {
    "gelu": nn.gelu,  # the exact erf form, as in transformers' "gelu"
    "gelu_new": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
    "relu": nn.relu,
}


class Embeddings(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.word_embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.position_embeddings = nn.Embedding(args.max_position_embeddings, args.hidden_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1])[None]
        h = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.LayerNorm(h)


class SelfAttention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.head_dim = args.hidden_size // args.num_attention_heads
        self.query = nn.Linear(args.hidden_size, args.hidden_size)
        self.key = nn.Linear(args.hidden_size, args.hidden_size)
        self.value = nn.Linear(args.hidden_size, args.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        B, L, _ = x.shape

        def heads(t):
            return t.reshape(B, L, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        out = mx.fast.scaled_dot_product_attention(
            q, k, v, scale=1.0 / math.sqrt(self.head_dim), mask=mask
        )
        return out.transpose(0, 2, 1, 3).reshape(B, L, -1)


class SelfOutput(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.dense = nn.Linear(args.hidden_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, h: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(h) + residual)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self = SelfAttention(args)
        self.output = SelfOutput(args)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.dense = nn.Linear(args.hidden_size, args.intermediate_size)
        self.act = _ACTIVATIONS[args.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class Output(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.dense = nn.Linear(args.intermediate_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, h: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(h) + residual)


class Layer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.intermediate = Intermediate(args)
        self.output = Output(args)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layer = [Layer(args) for _ in range(args.num_hidden_layers)]


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.embeddings = Embeddings(args)
        self.encoder = Encoder(args)

    def __call__(
        self,
        input_ids: mx.array,
        attention_mask: mx.array | None = None,
        token_type_ids: mx.array | None = None,
        num_layers: int | None = None,
    ) -> mx.array:
        """Last hidden states, or with `num_layers` the hidden states after that many layers
        (transformers' `hidden_states[num_layers]`; GPT-SoVITS reads `hidden_states[-3]`)."""
        if token_type_ids is None:
            token_type_ids = mx.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None:
            # Padding keys get -inf-like bias; [B, 1, 1, L] broadcasts over heads and queries.
            keep = attention_mask.astype(mx.bool_)[:, None, None, :]
            mask = mx.where(keep, 0.0, -1e9).astype(h.dtype)
        for layer in self.encoder.layer[:num_layers]:
            h = layer(h, mask)
        return h

    @property
    def layers(self):
        return self.encoder.layer

    def sanitize(self, weights: dict) -> dict:
        """Drop tensors we never run; strip the `bert.` prefix of *ForMaskedLM-style checkpoints."""
        out = {}
        for key, value in weights.items():
            if key.startswith("bert."):
                key = key[len("bert.") :]
            if key.startswith(("pooler.", "cls.")) or key.endswith("position_ids"):
                continue
            out[key] = value
        return out
