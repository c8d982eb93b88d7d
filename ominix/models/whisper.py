"""Whisper (OpenAI): a convolutional + Transformer audio encoder and a Transformer text decoder
that cross-attends to it.

The module tree is named like the mlx-whisper checkpoints mlx-community publishes
(`encoder.blocks.N.attn.query`, `decoder.token_embedding`, `alignment_heads`, ...); `sanitize`
maps the transformers layout (`model.encoder.layers.N.self_attn.q_proj`, ...) onto it name for
name. Decoding strategy (timestamps, fallback, language detection) lives in the engine; this file
is the network: `embed_audio(mel)`, `cross_kv(audio)`, `decode(tokens, cross_kv, cache)`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np


@dataclass
class ModelArgs:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51865
    n_text_ctx: int = 448
    n_text_state: int = 384
    n_text_head: int = 6
    n_text_layer: int = 4
    n_audio_mlp: int | None = None  # 4 * state unless the config says otherwise
    n_text_mlp: int | None = None

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        if "n_audio_state" in config:  # mlx-whisper / openai-whisper dimensions
            names = cls.__dataclass_fields__
            return cls(**{k: v for k, v in config.items() if k in names})
        # transformers WhisperConfig (4.x and 5.x spell these the same)
        d = config["d_model"]
        return cls(
            n_mels=config.get("num_mel_bins", 80), n_audio_ctx=config.get("max_source_positions", 1500),
            n_audio_state=d, n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"], n_vocab=config["vocab_size"],
            n_text_ctx=config.get("max_target_positions", 448), n_text_state=d,
            n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"],
            n_audio_mlp=config.get("encoder_ffn_dim"), n_text_mlp=config.get("decoder_ffn_dim"),
        )

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= 51865


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> mx.array:
    """The encoder's fixed positional embedding (not stored in checkpoints)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return mx.array(np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32))


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def _heads(self, x: mx.array) -> mx.array:
        B, L, _ = x.shape
        return x.reshape(B, L, self.n_head, -1).transpose(0, 2, 1, 3)

    def _merge(self, x: mx.array) -> mx.array:
        B, _, L, _ = x.shape
        return self.out(x.transpose(0, 2, 1, 3).reshape(B, L, -1))

    def kv(self, xa: mx.array) -> tuple[mx.array, mx.array]:
        return self._heads(self.key(xa)), self._heads(self.value(xa))

    def __call__(self, x: mx.array, mask=None, cache=None, kv=None) -> mx.array:
        """Self-attention (kv None; `cache` appends) or attention to precomputed `kv`."""
        q = self._heads(self.query(x))
        if kv is None:
            k, v = self.kv(x)
            if cache is not None:
                k, v = cache.update_and_fetch(k, v)
        else:
            k, v = kv
        scale = q.shape[-1] ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return self._merge(out)

    def rows(self, x: mx.array, caches=None, kvs=None) -> mx.array:
        """One new token for each of B independent sequences (x [B, 1, D]): the projections run
        batched, attention per row against that row's own cache (self) or keys/values (cross)."""
        q = self._heads(self.query(x))
        if kvs is None:
            k, v = self.kv(x)
            kvs = [cache.update_and_fetch(k[i:i + 1], v[i:i + 1]) for i, cache in enumerate(caches)]
        scale = q.shape[-1] ** -0.5
        out = [mx.fast.scaled_dot_product_attention(q[i:i + 1], k, v, scale=scale)
               for i, (k, v) in enumerate(kvs)]
        return self._merge(mx.concatenate(out, axis=0))

    def qk(self, x: mx.array, kv: tuple[mx.array, mx.array]) -> mx.array:
        """Pre-softmax cross-attention logits [B, heads, L, frames] (word alignment)."""
        q = self._heads(self.query(x))
        return (q @ kv[0].transpose(0, 1, 3, 2)) * q.shape[-1] ** -0.5


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, n_mlp: int, cross_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        if cross_attention:
            self.cross_attn = MultiHeadAttention(n_state, n_head)
            self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp1 = nn.Linear(n_state, n_mlp)
        self.mlp2 = nn.Linear(n_mlp, n_state)
        self.mlp_ln = nn.LayerNorm(n_state)

    def __call__(self, x, mask=None, cache=None, cross_kv=None):
        x = x + self.attn(self.attn_ln(x), mask=mask, cache=cache)
        if cross_kv is not None:
            x = x + self.cross_attn(self.cross_attn_ln(x), kv=cross_kv)
        return x + self.mlp2(nn.gelu(self.mlp1(self.mlp_ln(x))))

    def rows(self, x, caches, cross_kvs):
        x = x + self.attn.rows(self.attn_ln(x), caches=caches)
        x = x + self.cross_attn.rows(self.cross_attn_ln(x), kvs=cross_kvs)
        return x + self.mlp2(nn.gelu(self.mlp1(self.mlp_ln(x))))


class AudioEncoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        d = args.n_audio_state
        self.conv1 = nn.Conv1d(args.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self._positional_embedding = sinusoids(args.n_audio_ctx, d)
        mlp = args.n_audio_mlp or 4 * d
        self.blocks = [ResidualAttentionBlock(d, args.n_audio_head, mlp) for _ in range(args.n_audio_layer)]
        self.ln_post = nn.LayerNorm(d)

    def __call__(self, mel: mx.array) -> mx.array:
        """mel [B, frames (2 x n_audio_ctx), n_mels] -> audio features [B, n_audio_ctx, state]."""
        x = nn.gelu(self.conv1(mel))
        x = nn.gelu(self.conv2(x))
        if x.shape[1] != self._positional_embedding.shape[0]:
            raise ValueError(f"the encoder takes {2 * self._positional_embedding.shape[0]} mel frames, "
                             f"got {mel.shape[1]}")
        x = x + self._positional_embedding.astype(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        d = args.n_text_state
        self.token_embedding = nn.Embedding(args.n_vocab, d)
        self.positional_embedding = mx.zeros((args.n_text_ctx, d))
        mlp = args.n_text_mlp or 4 * d
        self.blocks = [ResidualAttentionBlock(d, args.n_text_head, mlp, cross_attention=True)
                       for _ in range(args.n_text_layer)]
        self.ln = nn.LayerNorm(d)

    def hidden(self, tokens: mx.array, cross_kv: list, cache: list | None = None) -> list[mx.array]:
        """The residual stream entering each block and the final one (before `ln`)."""
        offset = cache[0].offset if cache else 0
        L = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[offset:offset + L]
        mask = "causal" if L > 1 else None
        states = []
        for i, block in enumerate(self.blocks):
            states.append(x)
            x = block(x, mask=mask, cache=cache[i] if cache else None, cross_kv=cross_kv[i])
        states.append(x)
        return states

    def __call__(self, tokens: mx.array, cross_kv: list, cache: list | None = None) -> mx.array:
        x = self.hidden(tokens, cross_kv, cache)[-1]
        return self.token_embedding.as_linear(self.ln(x))

    def rows(self, tokens: mx.array, cross_kvs: list, caches: list) -> mx.array:
        """tokens [B, 1], one per sequence; each sequence has its own audio and cache."""
        offsets = mx.array([cache[0].offset for cache in caches])
        x = self.token_embedding(tokens) + self.positional_embedding[offsets][:, None, :]
        for i, block in enumerate(self.blocks):
            x = block.rows(x, [c[i] for c in caches], [kv[i] for kv in cross_kvs])
        return self.token_embedding.as_linear(self.ln(x))


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.encoder = AudioEncoder(args)
        self.decoder = TextDecoder(args)
        # [k, 2] (layer, head) pairs whose cross-attention tracks time. Checkpoints store them as
        # a tensor of any length, so they are metadata set by sanitize, not a parameter.
        self._alignment_heads = default_alignment_heads(args)

    @property
    def alignment_heads(self) -> mx.array:
        return self._alignment_heads

    def set_alignment_heads(self, heads) -> None:
        heads = np.array(heads, dtype=np.int32).reshape(-1, 2)
        if heads.size and (heads[:, 0].max() >= self.args.n_text_layer or heads[:, 1].max() >= self.args.n_text_head):
            raise ValueError(f"alignment heads {heads.tolist()} do not fit the decoder")
        self._alignment_heads = mx.array(heads)

    def embed_audio(self, mel: mx.array) -> mx.array:
        return self.encoder(mel)

    def cross_kv(self, audio_features: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Each decoder block's cross-attention keys and values, computed once per window. Made
        contiguous once: every decoding step reads them, and a strided (head-transposed) view
        costs a copy per step (on a CPU ~10x the attention itself)."""
        return [tuple(mx.contiguous(t) for t in block.cross_attn.kv(audio_features))
                for block in self.decoder.blocks]

    def decode(self, tokens: mx.array, cross_kv: list, cache: list | None = None) -> mx.array:
        return self.decoder(tokens, cross_kv, cache)

    def decode_rows(self, tokens: mx.array, cross_kvs: list, caches: list) -> mx.array:
        """One decoding step of several independent sequences in one forward (batched requests)."""
        return self.decoder.rows(tokens, cross_kvs, caches)

    def __call__(self, mel: mx.array, tokens: mx.array) -> mx.array:
        return self.decode(tokens, self.cross_kv(self.embed_audio(mel)))

    def alignment_qk(self, tokens: mx.array, cross_kv: list) -> mx.array:
        """Cross-attention logits of the alignment heads, [heads, B, L, frames] (word timing)."""
        states = self.decoder.hidden(tokens, cross_kv)
        out = []
        for layer, head in np.array(self.alignment_heads).tolist():
            block = self.decoder.blocks[layer]
            # The state after this block's self-attention is what its cross-attention queries.
            x = states[layer]
            mask = "causal" if tokens.shape[1] > 1 else None
            x = x + block.attn(block.attn_ln(x), mask=mask)
            out.append(block.cross_attn.qk(block.cross_attn_ln(x), cross_kv[layer])[:, head])
        return mx.stack(out)

    def sanitize(self, weights: dict) -> dict:
        out = {}
        for name, w in weights.items():
            name = _hf_name(name)
            if name is None:
                continue
            if name.endswith(("conv1.weight", "conv2.weight")) and w.shape[1] != 3:
                w = w.transpose(0, 2, 1)  # PyTorch Conv1d (out, in, k) -> MLX (out, k, in)
            out[name] = w
        if "alignment_heads" in out:
            self.set_alignment_heads(np.array(out.pop("alignment_heads")))
        return out


def default_alignment_heads(args: ModelArgs) -> mx.array:
    """The heads of the decoder's second half (openai-whisper's default without a published set)."""
    heads = [(layer, h) for layer in range(args.n_text_layer // 2, args.n_text_layer)
             for h in range(args.n_text_head)]
    return mx.array(np.array(heads, dtype=np.int32).reshape(-1, 2))


_HF_RENAMES = [
    (r"^model\.", ""),
    (r"\.layers\.(\d+)\.", r".blocks.\1."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."), (r"\.k_proj\.", ".key."), (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp1."), (r"\.fc2\.", ".mlp2."),
    (r"^encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^decoder\.layer_norm\.", "decoder.ln."),
    (r"^decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"^decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
]


def _hf_name(name: str) -> str | None:
    """transformers name -> mlx-whisper name (mlx names pass through); None for dropped tensors."""
    if name == "proj_out.weight" or name.endswith("encoder.embed_positions.weight"):
        return None  # the output head is tied to the embedding; encoder positions are sinusoids
    if not name.startswith("model."):
        return name
    for pattern, repl in _HF_RENAMES:
        name = re.sub(pattern, repl, name)
    return name
