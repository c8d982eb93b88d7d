"""MiniCPM dense decoders (openbmb/MiniCPM-*, MiniCPM4, model_type `minicpm`) and the
MiniCPM-SALA hybrid (openbmb/MiniCPM-SALA, model_type `minicpm_sala`).

Both use muP-style scaling: embeddings times `scale_emb`, every residual branch times
`scale_depth / sqrt(num_hidden_layers)`, and the final hidden state divided by
`hidden_size / dim_model_base` before the head. MiniCPM4 uses MiniCPM's LongRoPE.

SALA chooses a mixer per layer (`mixer_types`):
- "minicpm4": softmax attention over the whole cache, without rope when `attn_use_rope` is false
  (the published checkpoint's "HyPE": no position encoding in these layers), with an optional
  sigmoid output gate `o_gate`. The published code switches these layers to InfLLM-v2 block-sparse
  attention past `sparse_config.dense_len` (8192) tokens; here they stay dense at every length.
- "lightning-attn": Lightning attention, i.e. Simple GLA: per head a fixed decay
  gamma = exp(-slope) (ALiBi slopes of `lightning_nh` heads) and a [head_dim, head_dim] state
      S_t = gamma * S_{t-1} + k_t^T v_t,     o_t = scale * q_t S_t
  after per-head q/k RMSNorm and rope; then RMSNorm over all heads (`o_norm`) and a sigmoid gate
  from `z_proj`. Prefill runs chunk by chunk (quadratic inside a chunk, the state across chunks);
  decoding is the same formula with one-token chunks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import MLP, CacheSpec, CausalLM, FrequencyRoPE, attention_mask, make_rope, read_rope_config

DENSE, LIGHTNING = "minicpm4", "lightning-attn"
LIGHTNING_CHUNK = 64


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
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    attention_bias: bool = False
    scale_emb: float = 1.0
    scale_depth: float = 1.0
    dim_model_base: int | None = None
    # MiniCPM-SALA
    mixer_types: list[str] | None = None
    attn_use_rope: bool = True
    attn_use_output_gate: bool = False
    lightning_nh: int | None = None
    lightning_nkv: int | None = None
    lightning_head_dim: int | None = None
    lightning_scale: str | float = "1/sqrt(d)"
    lightning_use_rope: bool = True
    qk_norm: bool = True
    use_output_norm: bool = False
    use_output_gate: bool = False
    sparse_config: dict = field(default_factory=dict)

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        self.dim_model_base = self.dim_model_base or self.hidden_size
        self.lightning_nh = self.lightning_nh or self.num_attention_heads
        self.lightning_nkv = self.lightning_nkv or self.num_key_value_heads
        self.lightning_head_dim = self.lightning_head_dim or self.head_dim
        if self.mixer_types is None:
            self.mixer_types = [DENSE] * self.num_hidden_layers
        if len(self.mixer_types) != self.num_hidden_layers:
            raise ValueError(f"mixer_types lists {len(self.mixer_types)} layers, "
                             f"num_hidden_layers is {self.num_hidden_layers}")  # fmt: skip
        unknown = sorted(set(self.mixer_types) - {DENSE, LIGHTNING})
        if unknown:
            raise ValueError(f"unknown mixer type(s) {unknown}; supported: {DENSE}, {LIGHTNING}")
        self.lightning_scale_value()  # validate early

    def lightning_scale_value(self) -> float:
        if self.lightning_scale == "1/sqrt(d)":
            return self.lightning_head_dim**-0.5
        if self.lightning_scale == "1/d":
            return 1.0 / self.lightning_head_dim
        if isinstance(self.lightning_scale, (int, float)):
            return float(self.lightning_scale)
        raise ValueError(f"unsupported lightning_scale {self.lightning_scale!r}")

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known and v is not None}
        args["rope_theta"], args["rope_scaling"] = read_rope_config(config)
        return cls(**args)


# --- position encodings -----------------------------------------------------------------------


def minicpm_rope(dims: int, args: ModelArgs) -> nn.Module:
    """Rope for `dims` dimensions; MiniCPM's LongRoPE when the config asks for it.

    MiniCPM's LongRoPE divides each frequency by a per-dimension factor and scales cos and sin by
    sqrt(1 + log(s) / log(original)), s = max_position_embeddings / original. Its reference code
    builds the table once for max_position_embeddings, so the long factors apply whenever that
    exceeds the original length (and the short ones otherwise), whatever the prompt's length.
    """
    scaling = args.rope_scaling
    if not scaling or scaling["rope_type"] not in ("longrope", "su"):
        return make_rope(dims, args.rope_theta, scaling, args.max_position_embeddings)
    original = scaling.get("original_max_position_embeddings") or args.max_position_embeddings
    long = args.max_position_embeddings > original
    factors = mx.array(scaling["long_factor" if long else "short_factor"], dtype=mx.float32)
    if factors.size != dims // 2:
        raise ValueError(f"longrope factors have {factors.size} entries; expected {dims // 2}")
    inv_freq = 1.0 / (args.rope_theta ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims))
    scale = args.max_position_embeddings / original
    magnitude = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
    return FrequencyRoPE(dims, inv_freq / factors, input_scale=magnitude)


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's geometric slopes (Press et al.), as Lightning attention uses them for its decay."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


# --- mixers -----------------------------------------------------------------------------------


class DenseAttention(nn.Module):
    """Grouped-query softmax attention; optional rope and sigmoid output gate (`o_gate`)."""

    def __init__(self, args: ModelArgs, use_rope: bool, use_gate: bool):
        super().__init__()
        dim, heads, kv_heads, head_dim = (args.hidden_size, args.num_attention_heads,
                                          args.num_key_value_heads, args.head_dim)  # fmt: skip
        bias = args.attention_bias
        self.n_heads, self.n_kv_heads = heads, kv_heads
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=bias)
        if use_gate:
            self.o_gate = nn.Linear(dim, heads * head_dim, bias=bias)
        self.rope = minicpm_rope(head_dim, args) if use_rope else None

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if self.rope is not None:
            offset = cache.offset if cache is not None else 0
            q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(B, L, -1)
        if "o_gate" in self:
            out = out * mx.sigmoid(self.o_gate(x))
        return self.o_proj(out)


def simple_gla(q, k, v, log_decay, state, chunk: int = LIGHTNING_CHUNK):
    """Simple GLA over [B, H, L, D] inputs with per-head log decay [H] and state [B, H, Dk, Dv].

    Returns (outputs [B, H, L, Dv], final state). Inside a chunk of n tokens, with t, s positions
    in the chunk: o_t = sum_{s<=t} g^(t-s) (q_t . k_s) v_s + g^(t+1) q_t S, and the state moves
    on as S' = g^n S + sum_s g^(n-1-s) k_s^T v_s. `q` already carries the attention scale.
    """
    g = log_decay[:, None, None]
    outputs = []
    for start in range(0, q.shape[2], chunk):
        qc, kc, vc = (t[:, :, start : start + chunk] for t in (q, k, v))
        n = qc.shape[2]
        pos = mx.arange(n, dtype=mx.float32)
        distance = pos[:, None] - pos[None]
        # exp of a clipped distance: the masked (future) entries must not overflow before masking
        decay = mx.where(distance >= 0, mx.exp(g * mx.maximum(distance, 0)), 0.0)
        intra = ((qc @ kc.swapaxes(-1, -2)) * decay) @ vc
        inter = (qc * mx.exp(g * (pos + 1)[:, None])) @ state
        outputs.append(intra + inter)
        weighted_k = kc * mx.exp(g * (n - 1 - pos)[:, None])
        state = mx.exp(g * n) * state + weighted_k.swapaxes(-1, -2) @ vc
    return mx.concatenate(outputs, axis=2), state


class LightningAttention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, heads, kv_heads, head_dim = (args.hidden_size, args.lightning_nh,
                                          args.lightning_nkv, args.lightning_head_dim)  # fmt: skip
        bias = args.attention_bias
        self.n_heads, self.n_kv_heads = heads, kv_heads
        self.scale = args.lightning_scale_value()
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=bias)
        if args.qk_norm:
            self.q_norm = nn.RMSNorm(head_dim, eps=args.rms_norm_eps)
            self.k_norm = nn.RMSNorm(head_dim, eps=args.rms_norm_eps)
        if args.use_output_norm:
            self.o_norm = nn.RMSNorm(heads * head_dim, eps=args.rms_norm_eps)
        if args.use_output_gate:
            self.z_proj = nn.Linear(dim, heads * head_dim, bias=bias)
        self.rope = minicpm_rope(head_dim, args) if args.lightning_use_rope else None
        # Fixed, not learned: the underscore keeps it out of the parameters.
        self._log_decay = -mx.array(alibi_slopes(heads), dtype=mx.float32)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1)
        if "q_norm" in self:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
        offset = cache.offset if cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if self.n_kv_heads != self.n_heads:
            repeats = self.n_heads // self.n_kv_heads
            k, v = mx.repeat(k, repeats, axis=1), mx.repeat(v, repeats, axis=1)

        state = cache.matrix if cache is not None else None
        if state is None:
            state = mx.zeros((B, self.n_heads, k.shape[-1], v.shape[-1]), dtype=mx.float32)
        out, state = simple_gla(q * self.scale, k, v, self._log_decay, state)
        if cache is not None:
            cache.matrix, cache.offset = state, offset + L

        out = out.astype(x.dtype).transpose(0, 2, 1, 3).reshape(B, L, -1)
        if "o_norm" in self:
            out = self.o_norm(out)
        if "z_proj" in self:
            out = out * mx.sigmoid(self.z_proj(x))
        return self.o_proj(out)


# --- network ----------------------------------------------------------------------------------


class DecoderLayer(nn.Module):
    def __init__(self, args: ModelArgs, mixer: str):
        super().__init__()
        self.mixer = mixer
        if mixer == LIGHTNING:
            self.self_attn = LightningAttention(args)
        else:
            self.self_attn = DenseAttention(args, args.attn_use_rope, args.attn_use_output_gate)
        self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.residual_scale = args.scale_depth / math.sqrt(args.num_hidden_layers)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache) * self.residual_scale
        return h + self.mlp(self.post_attention_layernorm(h)) * self.residual_scale


class MiniCPMModel(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.scale_emb = args.scale_emb
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [DecoderLayer(args, mixer) for mixer in args.mixer_types]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.first_dense = next((i for i, m in enumerate(args.mixer_types) if m == DENSE), None)

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        h = self.embed_tokens(inputs) * self.scale_emb
        cache = cache if cache is not None else [None] * len(self.layers)
        # Only softmax layers use a mask; any of their caches knows the attended length.
        dense_cache = cache[self.first_dense] if self.first_dense is not None else None
        mask = attention_mask(h.shape[1], dense_cache)
        for layer, layer_cache in zip(self.layers, cache):
            h = layer(h, mask, layer_cache)
        return self.norm(h)


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, MiniCPMModel(args))
        self.logit_divisor = args.hidden_size / args.dim_model_base

    def __call__(self, inputs: mx.array, cache=None) -> mx.array:
        """inputs [B, L] token ids -> logits [B, L, vocab] (muP: hidden scaled before the head)."""
        return self.head(self.model(inputs, cache) / self.logit_divisor)

    def cache_specs(self) -> list[CacheSpec]:
        return [CacheSpec(recurrent=layer.mixer == LIGHTNING) for layer in self.layers]

