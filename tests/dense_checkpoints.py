"""Tiny random checkpoints in the exact published layouts for the dense architectures
(Mistral, GLM `glm`/`glm4`/`chatglm`, MiniCPM, MiniCPM-SALA), for tests.

transformers builds the ones it implements (Mistral, Glm, Glm4); the chatglm layout is written
from a `glm` checkpoint by the inverse of the name map transformers' GLM port documents; MiniCPM
and SALA (no transformers class) are written tensor by tensor under their checkpoint names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = 256


def tiny_hf_config(arch: str, *, window: int | None = None, tied: bool = False,
                   layers: int = 2) -> dict:  # fmt: skip
    """transformers 5.x-style kwargs: hidden 64, 4 heads / 2 kv heads of 16 dims."""
    config = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    if arch == "mistral":
        config["sliding_window"] = window
    else:  # glm, glm4: half the head's dimensions rotate
        config["rope_parameters"]["partial_rotary_factor"] = 0.5
        config["attention_bias"] = True
    return config


def randomize_torch(model, seed: int) -> None:
    """Random values everywhere (norm weights and biases too: their constant init hides bugs)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif "embed" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def build_hf(path, arch: str, *, style: str = "v5", window: int | None = None,
             tied: bool = False, layers: int = 2, seed: int = 0) -> Path:  # fmt: skip
    """A random transformers checkpoint of `arch` in mistral | glm | glm4."""
    import torch
    import transformers

    classes = {"mistral": "Mistral", "glm": "Glm", "glm4": "Glm4"}[arch]
    config_cls = getattr(transformers, f"{classes}Config")
    model_cls = getattr(transformers, f"{classes}ForCausalLM")
    torch.manual_seed(seed)
    model = model_cls(config_cls(**tiny_hf_config(arch, window=window, tied=tied, layers=layers)))
    randomize_torch(model, seed)
    path = Path(path)
    model.eval().save_pretrained(path, safe_serialization=True)
    if style == "v4":
        to_v4_config(path)
    return path


def to_v4_config(path: Path) -> None:
    """Rewrite config.json with transformers 4.x keys: rope_theta (and partial_rotary_factor)
    at the top level instead of rope_parameters, torch_dtype instead of dtype."""
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    rope = dict(config.pop("rope_parameters", None) or {})
    config["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if "partial_rotary_factor" in rope:
        config["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    config["rope_scaling"] = None
    if "dtype" in config:
        config["torch_dtype"] = config.pop("dtype")
    config["transformers_version"] = "4.51.3"
    config_file.write_text(json.dumps(config, indent=2))


def glm_to_chatglm(src, dst) -> Path:
    """The `glm` checkpoint `src` rewritten in THUDM's chatglm layout: transformer.* names, fused
    query_key_value, chatglm config keys (rope base = 10000 * rope_ratio). Works on float and on
    MLX-quantized checkpoints (every suffix: weight, bias, scales, biases)."""
    import mlx.core as mx

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True)
    glm = json.loads((src / "config.json").read_text())
    rope = glm.get("rope_parameters") or {"rope_theta": glm["rope_theta"]}
    config = {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "add_bias_linear": False, "add_qkv_bias": True,
        "apply_residual_connection_post_layernorm": False,
        "ffn_hidden_size": glm["intermediate_size"], "hidden_size": glm["hidden_size"],
        "kv_channels": glm["head_dim"], "layernorm_epsilon": glm["rms_norm_eps"],
        "multi_query_attention": True, "multi_query_group_num": glm["num_key_value_heads"],
        "num_attention_heads": glm["num_attention_heads"], "num_layers": glm["num_hidden_layers"],
        "original_rope": True, "padded_vocab_size": glm["vocab_size"], "post_layer_norm": True,
        "rmsnorm": True, "rope_ratio": rope["rope_theta"] / 10000.0, "seq_length": 512,
        "tie_word_embeddings": False, "torch_dtype": "float32",
    }  # fmt: skip
    if "quantization" in glm:
        config["quantization"] = glm["quantization"]
    (dst / "config.json").write_text(json.dumps(config, indent=2))

    weights = {}
    for file in sorted(src.glob("*.safetensors")):
        weights.update(mx.load(str(file)))
    renames = [("model.embed_tokens.", "transformer.embedding.word_embeddings."),
               ("model.norm.", "transformer.encoder.final_layernorm."),
               ("lm_head.", "transformer.output_layer."),
               ("model.layers.", "transformer.encoder.layers."),
               (".self_attn.o_proj.", ".self_attention.dense."),
               (".mlp.gate_up_proj.", ".mlp.dense_h_to_4h."),
               (".mlp.down_proj.", ".mlp.dense_4h_to_h.")]  # fmt: skip
    out = {}
    for name, w in weights.items():
        if ".self_attn.q_proj." in name:
            layer, suffix = name.split(".self_attn.q_proj.")
            parts = [weights[f"{layer}.self_attn.{p}_proj.{suffix}"] for p in "qkv"]
            name, w = f"{layer}.self_attention.query_key_value.{suffix}", mx.concatenate(parts)
        elif ".self_attn.k_proj." in name or ".self_attn.v_proj." in name:
            continue
        for old, new in renames:
            name = name.replace(old, new)
        out[name] = w
    mx.save_safetensors(str(dst / "model.safetensors"), out, metadata={"format": "pt"})
    return dst


# --- MiniCPM / SALA: tensors written by name -------------------------------------------------


def minicpm_tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor name -> shape of a MiniCPM / MiniCPM-SALA checkpoint for `config`."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    hd = config.get("head_dim") or hidden // heads
    mixers = config.get("mixer_types") or ["minicpm4"] * config["num_hidden_layers"]
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], hidden),
              "model.norm.weight": (hidden,)}  # fmt: skip
    if not config.get("tie_word_embeddings"):
        shapes["lm_head.weight"] = (config["vocab_size"], hidden)
    for i, mixer in enumerate(mixers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        if mixer == "lightning-attn":
            nh = config.get("lightning_nh") or heads
            nkv = config.get("lightning_nkv") or kv
            lhd = config.get("lightning_head_dim") or hd
            a = p + "self_attn."
            shapes.update({a + "q_proj.weight": (nh * lhd, hidden),
                           a + "k_proj.weight": (nkv * lhd, hidden),
                           a + "v_proj.weight": (nkv * lhd, hidden),
                           a + "o_proj.weight": (hidden, nh * lhd)})  # fmt: skip
            if config.get("qk_norm", True):
                shapes[a + "q_norm.weight"] = (lhd,)
                shapes[a + "k_norm.weight"] = (lhd,)
            if config.get("use_output_norm"):
                shapes[a + "o_norm.weight"] = (nh * lhd,)
            if config.get("use_output_gate"):
                shapes[a + "z_proj.weight"] = (nh * lhd, hidden)
        else:
            a = p + "self_attn."
            shapes.update({a + "q_proj.weight": (heads * hd, hidden),
                           a + "k_proj.weight": (kv * hd, hidden),
                           a + "v_proj.weight": (kv * hd, hidden),
                           a + "o_proj.weight": (hidden, heads * hd)})  # fmt: skip
            if config.get("attn_use_output_gate"):
                shapes[a + "o_gate.weight"] = (heads * hd, hidden)
    return shapes


def random_tensors(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        noise = rng.standard_normal(shape).astype(np.float32)
        if "norm" in name:
            out[name] = 1.0 + 0.2 * noise
        elif "embed" in name:
            out[name] = 0.5 * noise
        else:
            out[name] = noise / np.sqrt(shape[-1])
        out[name] = out[name].astype(np.float32)
    return out


def write_checkpoint(path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
