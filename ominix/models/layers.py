"""Shared building blocks for transformers: rope, attention, MLP, masks, chunked attention.

Everything here is parameterized by plain numbers so that a new architecture file can assemble its
layers from these pieces and keep only what is particular to it.
"""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

# --- rope -------------------------------------------------------------------------------------


def read_rope_config(config: dict) -> tuple[float, dict | None]:
    """(rope_theta, scaling dict or None) from either config.json spelling.

    transformers 4.x writes `rope_theta` and `rope_scaling: {"type"|"rope_type", "factor", ...}`;
    5.x writes `rope_parameters: {"rope_theta", "rope_type", "factor", ...}`.
    The returned scaling dict always has `rope_type`; None means plain rope.
    """
    params = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or {})
    theta = params.pop("rope_theta", None) or config.get("rope_theta") or 10000.0
    merged = {**params, **scaling}
    rope_type = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    merged.pop("type", None)
    if rope_type == "default":
        return float(theta), None
    if "original_max_position_embeddings" in config:  # Phi3-style top-level value wins, as in HF
        merged["original_max_position_embeddings"] = config["original_max_position_embeddings"]
    return float(theta), {"rope_type": rope_type, **merged}


def args_from_config(cls, config: dict):
    """A ModelArgs dataclass from config.json: its known fields, rope read in either spelling."""
    known = {f.name for f in dataclasses.fields(cls)}
    args = {k: v for k, v in config.items() if k in known}
    args["rope_theta"], args["rope_scaling"] = read_rope_config(config)
    return cls(**args)


class FrequencyRoPE(nn.Module):
    """Rope with precomputed per-dimension frequencies and an optional input scale (yarn, llama3)."""

    def __init__(self, dims: int, inv_freq: mx.array, input_scale: float = 1.0):
        super().__init__()
        self.dims = dims
        # mx.fast.rope takes periods (1 / inverse frequency); underscore keeps it out of parameters.
        self._freqs = 1.0 / inv_freq
        self.input_scale = input_scale

    def __call__(self, x: mx.array, offset: int = 0) -> mx.array:
        if self.input_scale != 1.0:
            # Scaling both q and k by s multiplies attention logits by s^2, as yarn prescribes.
            x = x * self.input_scale
        return mx.fast.rope(
            x, self.dims, traditional=False, base=None, scale=1.0, offset=offset, freqs=self._freqs
        )


def _yarn(dims: int, base: float, scaling: dict, max_position_embeddings: int) -> FrequencyRoPE:
    factor = scaling.get("factor") or 1.0
    original = scaling.get("original_max_position_embeddings") or max_position_embeddings
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1
    truncate = scaling.get("truncate", True)

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001
    ramp = mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
    extrapolate = 1.0 - ramp  # 1 where the dimension keeps its original frequency
    inv_freq = 1.0 / (base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))
    inv_freq = (inv_freq / factor) * (1 - extrapolate) + inv_freq * extrapolate
    return FrequencyRoPE(dims, inv_freq, input_scale=attention_factor)


def _llama3(dims: int, base: float, scaling: dict) -> FrequencyRoPE:
    factor = scaling["factor"]
    low_freq_factor = scaling.get("low_freq_factor", 1.0)
    high_freq_factor = scaling.get("high_freq_factor", 4.0)
    original = scaling.get("original_max_position_embeddings", 8192)
    low_freq_wavelen = original / low_freq_factor
    high_freq_wavelen = original / high_freq_factor

    inv_freq = 1.0 / (base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))
    wavelen = 2 * math.pi / inv_freq
    scaled = mx.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return FrequencyRoPE(dims, mx.where(is_medium, smoothed, scaled))


def make_rope(
    dims: int, base: float, scaling: dict | None = None, max_position_embeddings: int = 32768
) -> nn.Module:
    """A rope module for `dims` rotated dimensions; `scaling` as returned by read_rope_config."""
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        return nn.RoPE(dims, traditional=False, base=base)
    if rope_type == "linear":
        return nn.RoPE(dims, traditional=False, base=base, scale=1.0 / scaling["factor"])
    if rope_type == "yarn":
        return _yarn(dims, base, scaling, max_position_embeddings)
    if rope_type == "llama3":
        return _llama3(dims, base, scaling)
    if rope_type == "frequency_factors":  # GGUF's rope_freqs: per-dimension divisors (llama.cpp)
        inv_freq = 1.0 / (base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))
        return FrequencyRoPE(dims, inv_freq / mx.array(scaling["factors"], dtype=mx.float32))
    raise ValueError(f"rope_type '{rope_type}' is not supported (default, linear, yarn, llama3)")


# --- caches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheSpec:
    """What one layer keeps between decoding steps; the engine turns it into a cache object, so
    models never import the engine."""

    window: int | None = None  # keep only the last `window` positions (sliding-window attention)
    recurrent: bool = False  # a fixed-size recurrent state instead of keys and values


# --- masks ------------------------------------------------------------------------------------


def causal_mask(length: int, offset: int = 0, window: int | None = None) -> mx.array:
    """Boolean [length, offset + length] mask: query i (at position offset + i) sees keys <= it."""
    query_pos = mx.arange(offset, offset + length)[:, None]
    key_pos = mx.arange(offset + length)[None]
    mask = query_pos >= key_pos
    if window is not None:
        mask = mask & (query_pos < key_pos + window)
    return mask


def attention_mask(length: int, cache: Any = None) -> mx.array | str | None:
    """The mask for `length` new tokens appended after what `cache` holds.

    A cache that knows better (batched with padding, sliding window) provides `make_mask(length)`.
    Otherwise a single token needs no mask, and several tokens use SDPA's "causal" mask, which is
    aligned to the last key, so it stays correct when the cache already holds earlier tokens.
    """
    if cache is not None and hasattr(cache, "make_mask"):
        return cache.make_mask(length)
    return None if length == 1 else "causal"


# --- the body -------------------------------------------------------------------------------------


class DecoderBody(nn.Module):
    """embed_tokens -> layers -> norm: the `model.*` tensors of most decoder families. A family
    with its own masking (sliding windows) overrides `mask`."""

    def __init__(self, args, layers: list):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = layers
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def mask(self, length: int, cache):
        return attention_mask(length, cache)

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        h = self.embed_tokens(inputs)
        cache = cache if cache is not None else [None] * len(self.layers)
        mask = self.mask(h.shape[1], cache[0])
        for layer, layer_cache in zip(self.layers, cache):
            h = layer(h, mask, layer_cache)
        return self.norm(h)


# --- the outer model ----------------------------------------------------------------------------


class CausalLM(nn.Module):
    """The outer module every decoder family shares: `model` (the body: embed_tokens, layers,
    norm) and the output head, `lm_head` or the input embedding when tied."""

    def __init__(self, args, body: nn.Module):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = body
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        """inputs [B, L] token ids -> logits [B, L, vocab]."""
        return self.head(self.model(inputs, cache))

    def head(self, h: mx.array) -> mx.array:
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    @property
    def layers(self) -> list:
        return self.model.layers

    def sanitize(self, weights: dict) -> dict:
        """Drop tensors the module tree has no place for: rope buffers and a tied head."""
        return {
            name: w
            for name, w in weights.items()
            if "rotary_emb.inv_freq" not in name
            and not (self.args.tie_word_embeddings and name.startswith("lm_head."))
        }


# --- attention and MLP -------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with grouped key/value heads.

    qkv_bias: biases on q/k/v projections (qwen2); o_bias: on the output projection.
    qk_norm_eps: per-head RMSNorm on queries and
    keys before rope (qwen3); None disables it.
    """

    def __init__(
        self,
        hidden_size: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        rope: nn.Module,
        *,
        qkv_bias: bool = False,
        o_bias: bool = False,
        qk_norm_eps: float | None = None,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden_size, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, hidden_size, bias=o_bias)
        self.use_qk_norm = qk_norm_eps is not None
        if self.use_qk_norm:
            self.q_norm = nn.RMSNorm(head_dim, eps=qk_norm_eps)
            self.k_norm = nn.RMSNorm(head_dim, eps=qk_norm_eps)
        self.rope = rope

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1)
        if self.use_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))

        offset = cache.offset if cache is not None else 0
        q = self.rope(q, offset=offset)
        k = self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)

        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DenseBlock(nn.Module):
    """The pre-norm decoder layer of Llama, Mistral and Qwen (RMSNorm -> attention, RMSNorm ->
    SwiGLU MLP). `attention` is what a family's attention adds: biases, q/k norms."""

    def __init__(self, args, attention: dict | None = None, mlp_bias: bool = False):
        super().__init__()
        rope = make_rope(args.head_dim, args.rope_theta, args.rope_scaling, args.max_position_embeddings)
        self.self_attn = Attention(args.hidden_size, args.num_attention_heads, args.num_key_value_heads,
                                   args.head_dim, rope, **(attention or {}))
        self.mlp = MLP(args.hidden_size, args.intermediate_size, bias=mlp_bias)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


# Attention over long sequences (image transformers, VAEs): MLX's unfused attention path (the CPU
# one) materialises the (batch, heads, queries, keys) score matrix and its softmax, 2 GB each for
# FLUX.2 at 1024x1024 px. Splitting the queries into chunks of at most this many scores bounds
# that to 1 GB (float32) at the same arithmetic; a fused kernel does not notice. Measured on a
# FLUX.2-width step at 1024 px (2 cores): no chunks 36.4 s, peak 6.1 GB; 2^28 scores 36.4 s,
# 4.7 GB; 2^26 36.9 s, 3.9 GB (many small softmax passes cost more than they save).
ATTENTION_CHUNK_SCORES = 2**28


def chunked_attention(q: mx.array, k: mx.array, v: mx.array, scale: float,
                      mask: mx.array | None = None) -> mx.array:  # fmt: skip
    """scaled_dot_product_attention (B, H, L, D) over query chunks; `mask` broadcasts over
    queries (shape (..., 1, L_k)) or is a full (..., L_q, L_k) mask."""
    b, h, n, _ = q.shape
    rows = max(1, ATTENTION_CHUNK_SCORES // (b * h * k.shape[2]))
    if n <= rows:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    outs = []
    for i in range(0, n, rows):
        m = mask if mask is None or mask.shape[-2] == 1 else mask[..., i : i + rows, :]
        out = mx.fast.scaled_dot_product_attention(q[:, :, i : i + rows], k, v, scale=scale, mask=m)
        # Evaluated here: MLX allocates an op's output when it schedules it, ahead of the
        # compute, so a lazy graph would hold every chunk's scores at once.
        mx.eval(out)
        outs.append(out)
    return mx.concatenate(outs, axis=2)
