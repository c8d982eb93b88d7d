"""Tiny random GGUF files in llama.cpp's layout, written with the `gguf` package, each paired with
the transformers model holding exactly the values the file encodes (its reference).

A transformers model of the architecture gets random weights; each 2-D weight is quantized in
Hugging Face row order (gguf's quantizer for Q8_0/Q4_0/Q4_1; random but well-formed blocks for the
K-quants, which gguf cannot quantize), dequantized again by gguf's reference dequantizer into the
transformers model, and written under llama.cpp's tensor names, with the Q/K rows permuted for
the llama layout as llama.cpp's converter does. Experts are stacked [experts, out, in].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOCAB = 256
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")  # fmt: skip
# one layer's HF tensor names (after "model.layers.N.") -> llama.cpp's
_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
    "block_sparse_moe.gate": "ffn_gate_inp",
}  # fmt: skip
_EXPERTS = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps",
            "w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}  # fmt: skip
# byte offsets of each K-quant block's fp16 scale fields (set to small values: random bytes
# would make inf/nan scales)
_K_SCALE_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2),
                   "Q6_K": (208,)}  # fmt: skip
GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe",
             "mixtral": "llama"}  # fmt: skip


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}  # fmt: skip


def hf_model(arch: str, *, wide: bool, seed: int = 0, rope: dict | None = None):
    """A random transformers model; wide=True makes rows 256 long, as K-quant blocks need."""
    import torch
    import transformers

    from tests.dense_checkpoints import randomize_torch

    hidden, inter = (256, 512) if wide else (64, 128)
    config = dict(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inter,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, **(rope or {})},
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    if arch in ("qwen3", "qwen3_moe"):
        config["head_dim"] = hidden // 4 * 2  # != hidden / heads, as Qwen3 allows
    if arch == "qwen3_moe":
        config.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=inter,
                      norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[])  # fmt: skip
    if arch == "mixtral":
        config.update(num_local_experts=4, num_experts_per_tok=2)
    names = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "qwen3_moe": "Qwen3Moe",
             "mixtral": "Mixtral"}  # fmt: skip
    torch.manual_seed(seed)
    cls = getattr(transformers, f"{names[arch]}ForCausalLM")
    model = cls(getattr(transformers, f"{names[arch]}Config")(**config))
    randomize_torch(model, seed)
    return model.eval()


def _blocks(w: np.ndarray, kind: str, rng) -> np.ndarray:
    """w [..., in] quantized to `kind` blocks [..., bytes] (gguf's quantizer or random K blocks)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    if kind not in _K_SCALE_FIELDS:
        return gguf.quants.quantize(w.astype(np.float32), qtype)
    per_block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n = w.shape[-1] // per_block
    raw = rng.integers(0, 256, (*w.shape[:-1], n, block_bytes), dtype=np.uint8)
    for offset in _K_SCALE_FIELDS[kind]:
        d = rng.uniform(0.5, 1.5, (*w.shape[:-1], n)) * 2.0 / per_block / w.shape[-1] ** 0.5
        raw[..., offset:offset + 2] = d.astype(np.float16)[..., None].view(np.uint8)
    return raw.reshape(*w.shape[:-1], n * block_bytes)


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (rotary halves interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def _unfused(state: dict):
    """(name, float array) per stored tensor; fused expert banks [E, 2 * inter, hidden] come out
    as their gate and up halves (named `...experts.gate_proj` / `...experts.up_proj`)."""
    for name, t in state.items():
        w = t.float().numpy()
        if name.endswith("experts.gate_up_proj"):
            base = name.removesuffix("gate_up_proj")
            gate, up = np.split(w, 2, axis=1)
            yield base + "gate_proj", gate
            yield base + "up_proj", up
        else:
            yield name, w


def _gguf_name(name: str) -> tuple[str, str | None]:
    """HF name -> (llama.cpp name, expert bank part or None)."""
    if name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
                "output_norm.weight", "lm_head.weight": "output.weight"}[name], None  # fmt: skip
    _, _, layer, rest = name.split(".", 3)
    module, _, kind = rest.rpartition(".")
    if module.endswith(".experts"):  # mlp.experts.{gate,up,down}_proj: [E, out, in] banks
        return f"blk.{layer}.{_EXPERTS[kind]}.weight", kind
    return f"blk.{layer}.{_NAMES[module]}.{kind}", None


def write_gguf(path, arch: str, kind: str = "Q8_0", *, seed: int = 0, llama3_rope: bool = False):
    """(gguf file, transformers reference model) for `arch`, 2-D weights stored as `kind`
    (F32 / F16 / Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K ...); norms and biases stay F32."""
    import gguf
    import torch

    wide = kind.endswith("_K")
    model = hf_model(arch, wide=wide, seed=seed, rope=LLAMA3_ROPE if llama3_rope else None)
    cfg = model.config
    rng = np.random.default_rng(seed)
    refs: dict[str, np.ndarray] = {}
    qtype = gguf.GGMLQuantizationType[kind]
    llama_layout = GGUF_ARCH[arch] == "llama"
    state, tensors, banks = model.state_dict(), {}, {}
    for name, w in list(_unfused(state)):
        gname, part = _gguf_name(name)
        if w.ndim >= 2 and ("norm" not in name) and kind not in ("F32", "F16"):
            blocks = _blocks(w, kind, rng)
            w_ref = gguf.quants.dequantize(blocks, qtype).reshape(w.shape)
            data, raw_dtype = blocks, qtype
        else:
            w_ref = w.astype(np.float16).astype(np.float32) if kind == "F16" and w.ndim == 2 else w
            data = w.astype(np.float16) if kind == "F16" and w.ndim == 2 else w
            raw_dtype = None
        refs[name] = w_ref
        if llama_layout and (".q_proj." in name or ".k_proj." in name):
            heads = cfg.num_attention_heads if ".q_proj." in name else cfg.num_key_value_heads
            data = permute(data, heads)
        if part is not None:
            banks.setdefault(gname, []).append((data, raw_dtype))
        else:
            tensors[gname] = (data, raw_dtype)
    for gname, items in banks.items():  # one [experts, out, in] tensor
        tensors[gname] = items[0]
    for name in state:
        if name.endswith("experts.gate_up_proj"):  # transformers 5 keeps gate and up fused
            base = name.removesuffix("gate_up_proj")
            fused = np.concatenate([refs[base + "gate_proj"], refs[base + "up_proj"]], axis=1)
            state[name] = torch.from_numpy(fused)
        else:
            state[name] = torch.from_numpy(np.ascontiguousarray(refs[name]))
    model.load_state_dict(state)

    writer = gguf.GGUFWriter(str(path), GGUF_ARCH[arch])
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    if getattr(cfg, "head_dim", None) and arch in ("qwen3", "qwen3_moe"):
        writer.add_key_length(cfg.head_dim)
        writer.add_value_length(cfg.head_dim)
    experts = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
    if experts:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(cfg.num_experts_per_tok)
        if arch == "qwen3_moe":
            writer.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    add_byte_tokenizer(writer)
    if llama3_rope:  # llama.cpp stores llama3 scaling as rope_freqs: default / scaled frequency
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        default = 1.0 / 10000.0 ** (np.arange(0, head_dim, 2) / head_dim)
        scaled = model.model.rotary_emb.inv_freq.numpy()
        writer.add_tensor("rope_freqs.weight", (default / scaled).astype(np.float32))
    for gname, (data, raw_dtype) in tensors.items():
        writer.add_tensor(gname, np.ascontiguousarray(data), raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path), model


def add_byte_tokenizer(writer) -> None:
    """A 256-token byte-level vocabulary without merges (every byte its own token)."""
    from tests.smollm2 import byte_alphabet

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(byte_alphabet())
    writer.add_token_types([1] * VOCAB)
    writer.add_token_merges([])
    writer.add_chat_template(CHAT_TEMPLATE)
