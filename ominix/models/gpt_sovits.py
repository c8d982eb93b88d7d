"""GPT-SoVITS v2, the GPT half (`s1bert25hz-*.ckpt`): text phonemes + BERT features -> 25 Hz
semantic tokens, autoregressively, continuing the reference clip's tokens.

Tensor names are the Lightning checkpoint's `weight` state dict without its `model.` prefix:
`ar_text_embedding`, `ar_audio_embedding` (token tables), `ar_text_position` / `ar_audio_position`
(sine positions with a learned `alpha`), `bert_proj` (1024 -> embedding), `h.layers.N` (post-norm
transformer layers with a fused `in_proj` and ReLU MLP) and `ar_predict_layer`.

Attention: phoneme positions see every phoneme and no audio; audio positions see every phoneme
and the audio before them. Only the GPT is here: the SoVITS (VITS) decoder, the cnhubert and
RoBERTa feature models and the text front end are not built yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import CacheSpec


@dataclass
class ModelArgs:
    model_type: str
    hidden_dim: int = 512
    embedding_dim: int = 512
    head: int = 16
    n_layer: int = 24
    vocab_size: int = 1025
    phoneme_vocab_size: int = 732
    EOS: int = 1024
    bert_dim: int = 1024
    norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        """`config` is the checkpoint's config (its `model` block is what matters)."""
        model = config.get("model", config)
        names = {"hidden_dim", "embedding_dim", "head", "n_layer", "vocab_size", "phoneme_vocab_size", "EOS"}
        return cls(model_type="gpt_sovits_gpt", **{k: model[k] for k in names if k in model})


def sine_table(length: int, dim: int) -> mx.array:
    position = mx.arange(length, dtype=mx.float32)[:, None]
    div = mx.exp(mx.arange(0, dim, 2, dtype=mx.float32) * -(math.log(10000.0) / dim))
    table = mx.zeros((length, dim))
    table[:, 0::2] = mx.sin(position * div)
    table[:, 1::2] = mx.cos(position * div)
    return table


class TokenEmbedding(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)

    def __call__(self, ids):
        return self.word_embeddings(ids)


class SinePosition(nn.Module):
    def __init__(self):
        super().__init__()
        self.alpha = mx.ones((1,))

    def __call__(self, x: mx.array, start: int, table: mx.array) -> mx.array:
        return x + self.alpha * table[start : start + x.shape[1]]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = mx.zeros((3 * dim, dim))
        self.in_proj_bias = mx.zeros((3 * dim,))
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array, mask, cache) -> mx.array:
        B, L, D = x.shape
        q, k, v = mx.split(x @ self.in_proj_weight.T + self.in_proj_bias, 3, axis=-1)
        q, k, v = (t.reshape(B, L, self.heads, -1).transpose(0, 2, 1, 3) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5, mask=mask)
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(B, L, D))


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.self_attn = SelfAttention(dim, heads)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def __call__(self, x, mask, cache):
        x = self.norm1(x + self.self_attn(x, mask, cache))  # post-norm, as trained
        return self.norm2(x + self.linear2(nn.relu(self.linear1(x))))


class Encoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.layers = [Layer(args.hidden_dim, args.head, args.norm_eps) for _ in range(args.n_layer)]


class Model(nn.Module):
    MAX_POSITIONS = 4000  # the reference's sine table length

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        E = args.embedding_dim
        self.bert_proj = nn.Linear(args.bert_dim, E)
        self.ar_text_embedding = TokenEmbedding(args.phoneme_vocab_size, E)
        self.ar_text_position = SinePosition()
        self.ar_audio_embedding = TokenEmbedding(args.vocab_size, E)
        self.ar_audio_position = SinePosition()
        self.h = Encoder(args)
        self.ar_predict_layer = nn.Linear(args.hidden_dim, args.vocab_size, bias=False)
        self._table = sine_table(self.MAX_POSITIONS, E)

    @property
    def layers(self) -> list:
        return self.h.layers

    def cache_specs(self) -> list[CacheSpec]:
        return [CacheSpec() for _ in self.h.layers]

    def _run(self, x, mask, cache):
        for layer, c in zip(self.h.layers, cache or [None] * len(self.h.layers)):
            x = layer(x, mask, c)
        return x

    def prefill(self, phones: mx.array, bert: mx.array, prompt: mx.array | None, cache) -> mx.array:
        """phones [1, Tx], bert [1, Tx, 1024], prompt [1, Ty] semantic ids -> logits [1, vocab]."""
        x = self.ar_text_embedding(phones) + self.bert_proj(bert)
        x = self.ar_text_position(x, 0, self._table)
        Tx = x.shape[1]
        Ty = 0 if prompt is None else prompt.shape[1]
        if Ty:
            y = self.ar_audio_position(self.ar_audio_embedding(prompt), 0, self._table)
            x = mx.concatenate([x, y], axis=1)
        rows = mx.arange(Tx + Ty)[:, None]
        cols = mx.arange(Tx + Ty)[None]
        # phonemes: all phonemes; audio: all phonemes and earlier audio
        mask = mx.where(rows < Tx, cols < Tx, (cols < Tx) | (cols <= rows))
        h = self._run(x, mask, cache)
        return self.ar_predict_layer(h[:, -1])

    def step(self, token: mx.array, position: int, cache) -> mx.array:
        """The next semantic id [1, 1] at audio position `position` -> logits [1, vocab]."""
        y = self.ar_audio_position(self.ar_audio_embedding(token), position, self._table)
        return self.ar_predict_layer(self._run(y, None, cache)[:, -1])

    def sanitize(self, weights: dict) -> dict:
        return {k.removeprefix("model."): v for k, v in weights.items()}
