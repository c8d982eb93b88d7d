"""GLM-4 dense decoders, in the three layouts their checkpoints use.

- `glm4` (GLM-4-*-0414, transformers Glm4ForCausalLM): four RMSNorms per block ("sandwich": the
  attention and MLP outputs are normalized again before the residual add).
- `glm` (transformers GlmForCausalLM, DecoderBody, the HF port of glm-4-9b-chat): two norms per block.
- `chatglm` (THUDM/glm-4-9b-chat's own code): the `glm` network under other names, with fused
  q/k/v; `sanitize` renames and splits its tensors into the `glm` tree, and `ModelArgs.from_dict`
  reads its config keys (num_layers, ffn_hidden_size, kv_channels, multi_query_group_num, ...).

All three: q/k/v biases, a fused gate_up projection, and rope on only the first half of each
head's dimensions with interleaved pairs ("traditional" rope, GPT-J style).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from ominix.models.layers import Attention, CausalLM, DecoderBody, read_rope_config


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int | None = None
    attention_bias: bool = True
    partial_rotary_factor: float = 0.5
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 131072
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads

    @property
    def sandwich_norms(self) -> bool:
        return self.model_type == "glm4"

    @classmethod
    def from_dict(cls, config: dict) -> "ModelArgs":
        if config.get("model_type") == "chatglm":
            config = _chatglm_config(config)
        known = {f.name for f in dataclasses.fields(cls)}
        args = {k: v for k, v in config.items() if k in known}
        theta, scaling = read_rope_config(config)
        if scaling is not None:
            raise ValueError(f"rope scaling {scaling['rope_type']!r} is not supported for GLM")
        args["rope_theta"] = theta
        # 4.x configs write partial_rotary_factor at the top; 5.x inside rope_parameters.
        rope_parameters = config.get("rope_parameters") or {}
        factor = config.get("partial_rotary_factor", rope_parameters.get("partial_rotary_factor"))
        args["partial_rotary_factor"] = 0.5 if factor is None else float(factor)
        return cls(**args)


def _chatglm_config(config: dict) -> dict:
    """chatglm config keys -> the `glm` spelling, refusing options GLM-4 never used."""
    unsupported = {
        "rmsnorm": (False, "LayerNorm blocks"),
        "apply_residual_connection_post_layernorm": (True, "post-layernorm residuals"),
        "add_bias_linear": (True, "biases on the output and MLP projections"),
        "post_layer_norm": (False, "no final layer norm"),
    }
    for key, (bad, what) in unsupported.items():
        if config.get(key) == bad:
            raise ValueError(f"chatglm with {key}={bad} ({what}) is not supported")
    heads = config["num_attention_heads"]
    kv_heads = config.get("multi_query_group_num", heads) if config.get(
        "multi_query_attention") else heads  # fmt: skip
    return {
        "model_type": "chatglm",
        "hidden_size": config["hidden_size"],
        "num_hidden_layers": config["num_layers"],
        "intermediate_size": config["ffn_hidden_size"],
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": config.get("kv_channels"),
        "vocab_size": config["padded_vocab_size"],
        "attention_bias": config.get("add_qkv_bias", True),
        "partial_rotary_factor": 0.5,  # the original code rotates kv_channels // 2 dimensions
        "rms_norm_eps": config.get("layernorm_epsilon", 1e-5),
        "max_position_embeddings": config.get("seq_length", 131072),
        "tie_word_embeddings": config.get("tie_word_embeddings", False),
        "rope_theta": 10000.0 * config.get("rope_ratio", 1),
    }


class MLP(nn.Module):
    """SwiGLU with gate and up projections fused into one matrix (gate rows first)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        gate, up = mx.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(nn.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        rope = nn.RoPE(
            int(args.head_dim * args.partial_rotary_factor), traditional=True, base=args.rope_theta
        )
        self.self_attn = Attention(
            args.hidden_size,
            args.num_attention_heads,
            args.num_key_value_heads,
            args.head_dim,
            rope,
            qkv_bias=args.attention_bias,
        )
        self.mlp = MLP(args.hidden_size, args.intermediate_size)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.sandwich_norms = args.sandwich_norms
        if self.sandwich_norms:
            self.post_self_attn_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
            self.post_mlp_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        r = self.self_attn(self.input_layernorm(x), mask, cache)
        if self.sandwich_norms:
            r = self.post_self_attn_layernorm(r)
        h = x + r
        r = self.mlp(self.post_attention_layernorm(h))
        if self.sandwich_norms:
            r = self.post_mlp_layernorm(r)
        return h + r


class GlmModel(DecoderBody):
    def __init__(self, args: ModelArgs):
        super().__init__(args, [TransformerBlock(args) for _ in range(args.num_hidden_layers)])


# chatglm tensor-name pieces -> glm ones (a prefix of each name, then pieces inside layers)
_CHATGLM_PREFIXES = {
    "transformer.embedding.word_embeddings.": "model.embed_tokens.",
    "transformer.encoder.final_layernorm.": "model.norm.",
    "transformer.output_layer.": "lm_head.",
    "transformer.encoder.layers.": "model.layers.",
}
_CHATGLM_LAYER_PARTS = {
    ".self_attention.dense.": ".self_attn.o_proj.",
    ".mlp.dense_h_to_4h.": ".mlp.gate_up_proj.",
    ".mlp.dense_4h_to_h.": ".mlp.down_proj.",
}
_FUSED_QKV = ".self_attention.query_key_value."


class Model(CausalLM):
    def __init__(self, args: ModelArgs):
        super().__init__(args, GlmModel(args))

    def sanitize(self, weights: dict) -> dict:
        """chatglm names -> glm names (fused q/k/v split by rows; for MLX-quantized tensors the
        packed weight, scales and biases all have one row per output feature, so the same split
        applies); drop rope buffers and a tied head."""
        out = {}
        for name, w in weights.items():
            if "rotary_emb.inv_freq" in name or "rotary_pos_emb" in name:
                continue
            name = self._rename_chatglm(name)
            if _FUSED_QKV in name:
                out.update(self._split_qkv(name, w))
                continue
            if self.args.tie_word_embeddings and name.startswith("lm_head."):
                continue
            out[name] = w
        return out

    @staticmethod
    def _rename_chatglm(name: str) -> str:
        for old, new in _CHATGLM_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        for old, new in _CHATGLM_LAYER_PARTS.items():
            name = name.replace(old, new)
        return name

    def _split_qkv(self, name: str, w: mx.array) -> dict:
        # A fused tensor of the wrong size leaves v_proj misshapen, which the loader reports.
        args = self.args
        q_rows = args.num_attention_heads * args.head_dim
        kv_rows = args.num_key_value_heads * args.head_dim
        prefix, suffix = name.split(_FUSED_QKV)
        q, k, v = mx.split(w, [q_rows, q_rows + kv_rows], axis=0)
        return {
            f"{prefix}.self_attn.q_proj.{suffix}": q,
            f"{prefix}.self_attn.k_proj.{suffix}": k,
            f"{prefix}.self_attn.v_proj.{suffix}": v,
        }
