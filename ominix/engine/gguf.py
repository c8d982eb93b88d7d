"""GGUF files -> the same MLX modules a Hugging Face checkpoint builds.

A GGUF file is metadata (architecture, hyper-parameters, tokenizer, chat template) plus tensors
under llama.cpp's names. Here the metadata becomes a config.json-style dict, the tensors are
renamed to the checkpoint names our modules use (and Llama's Q/K rows put back in Hugging Face's
rotary order), quantized tensors become MLX affine quantization where the format allows (see
gguf_quants.py) and float tensors otherwise; then engine/load.py builds the module as for any
checkpoint. The tokenizer comes from `tokenizer.ggml.*` (gguf_tokenizer.py).

The file is read with numpy over a memory map. mx.load also reads GGUF, but it fails on Q5_K /
Q3_K tensors and its Q4_K dequantization disagrees with ggml's, so it is not used.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine import gguf_quants as quants

MAGIC = b"GGUF"
# metadata value type -> struct format (8: string and 9: array are handled apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}  # fmt: skip
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}  # fmt: skip


class GGUFError(ValueError):
    """The file is not a GGUF file we can run; the message says why."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first), the reverse of ggml's ne[]
    kind: str  # ggml type name: F32, Q4_K, ...
    offset: int  # from the start of the file


@dataclass
class GGUFFile:
    path: Path
    metadata: dict
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def types(self) -> dict[str, int]:
        """ggml type -> how many tensors have it."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.kind] = counts.get(t.kind, 0) + 1
        return counts


class _Cursor:
    def __init__(self, data: memoryview):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("Q")
        if n > len(self.data) - self.pos:
            raise GGUFError("the file is truncated (a string runs past its end)")
        s = bytes(self.data[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, kind: int):
        if kind == 8:
            return self.string()
        if kind == 9:
            item, count = self.take("I"), self.take("Q")
            if item in _NUMPY:  # numeric arrays in one read (token types, scores)
                dtype = np.dtype(_NUMPY[item]).newbyteorder("<")
                end = self.pos + count * dtype.itemsize
                if end > len(self.data):
                    raise GGUFError("the file is truncated (an array runs past its end)")
                arr = np.frombuffer(self.data[self.pos:end], dtype=dtype).tolist()
                self.pos = end
                return arr
            return [self.value(item) for _ in range(count)]
        if kind not in _SCALARS:
            raise GGUFError(f"unknown metadata value type {kind}")
        return self.take(_SCALARS[kind])


def read_gguf(path: str | Path) -> GGUFFile:
    """Metadata and tensor directory of a GGUF file (no tensor data is read)."""
    path = Path(path)
    try:
        data = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))
    except (OSError, ValueError) as e:
        raise GGUFError(f"{path} cannot be read: {e}") from None
    if bytes(data[:4]) != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (no GGUF magic)")
    cur = _Cursor(data)
    cur.pos = 4
    try:
        version, n_tensors, n_kv = cur.take("I"), cur.take("Q"), cur.take("Q")
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        metadata = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.take("I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("Q") for _ in range(cur.take("I"))]
            kind, offset = cur.take("I"), cur.take("Q")
            if kind not in quants.TYPES:
                raise GGUFError(f"{path}: tensor {name} has ggml type {kind}, not supported")
            infos.append((name, tuple(reversed(dims)), quants.TYPES[kind][0], offset))
    except struct.error:
        raise GGUFError(f"{path} is truncated (its header is incomplete)") from None
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cur.pos // alignment) * alignment
    file = GGUFFile(path, metadata)
    for name, shape, kind, offset in infos:
        info = TensorInfo(name, shape, kind, start + offset)
        if info.offset + _nbytes(info) > len(data):
            raise GGUFError(f"{path} is truncated: tensor {name} ends past the end of the file")
        file.tensors[name] = info
    return file


def _nbytes(info: TensorInfo) -> int:
    _, per_block, block_bytes = next(t for t in quants.TYPES.values() if t[0] == info.kind)
    return int(np.prod(info.shape)) // per_block * block_bytes


def _raw(file: GGUFFile, info: TensorInfo) -> np.ndarray:
    mm = np.memmap(file.path, dtype=np.uint8, mode="r", offset=info.offset, shape=(_nbytes(info),))
    return mm


def read_tensor(file: GGUFFile, info: TensorInfo, dequant_dtype=np.float16) -> dict[str, mx.array]:
    """One GGUF tensor as MLX arrays: {"": float} or {"weight", "scales", "biases"} (quantized
    along the last axis, group 32). Keys are suffixes for the module path. Types without an MLX
    form are dequantized to `dequant_dtype`."""
    raw, shape = _raw(file, info), info.shape
    if info.kind == "F32":
        return {"": mx.array(raw.view(np.float32).reshape(shape))}
    if info.kind == "F16":
        return {"": mx.array(raw.view(np.float16).reshape(shape))}
    if info.kind == "BF16":  # bf16 is the top half of a float32
        as_f32 = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        return {"": mx.array(as_f32.reshape(shape)).astype(mx.bfloat16)}
    _, per_block, block_bytes = next(t for t in quants.TYPES.values() if t[0] == info.kind)
    rows = int(np.prod(shape[:-1]))
    if shape[-1] % per_block:
        raise GGUFError(f"tensor {info.name}: row length {shape[-1]} is not a multiple of "
                        f"{per_block} for {info.kind}")  # fmt: skip
    blocks = raw.reshape(rows, shape[-1] // per_block, block_bytes)
    if info.kind in quants.AFFINE_BITS:
        packed, scales, biases = quants.affine(blocks, info.kind)
        # ggml stores Q4_0/Q4_1/Q8_0 scales in fp16, so fp16 keeps them exactly (float32 where
        # the model computes in it); Q4_K's are products of an fp16 and a 6-bit integer: float32.
        dtype = np.float32 if info.kind == "Q4_K" or dequant_dtype == np.float32 else np.float16
        return {
            "weight": mx.array(packed.reshape(*shape[:-1], -1)),
            "scales": mx.array(scales.astype(dtype).reshape(*shape[:-1], -1)),
            "biases": mx.array(biases.astype(dtype).reshape(*shape[:-1], -1)),
        }
    return {"": mx.array(quants.dequantize(blocks, info.kind).astype(dequant_dtype).reshape(shape))}


# --- architecture ------------------------------------------------------------------------------

# GGUF general.architecture -> (our model_type, rows llama.cpp permuted for its rope)
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
                 "qwen3moe": "qwen3_moe"}  # fmt: skip
PERMUTED = {"llama", "mistral"}  # llama.cpp's convert script permutes Q/K for these only


def gguf_config(file: GGUFFile) -> dict:
    """A config.json-style dict (transformers 4.x spelling) from the file's metadata."""
    meta = file.metadata
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"GGUF architecture '{arch}' is not supported; supported: "
                        f"{', '.join(sorted(ARCHITECTURES))}")  # fmt: skip

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    tokens = meta.get("tokenizer.ggml.tokens") or []
    config = {
        "model_type": ARCHITECTURES[arch],
        "hidden_size": get("embedding_length"),
        "num_hidden_layers": get("block_count"),
        "intermediate_size": get("feed_forward_length"),
        "num_attention_heads": get("attention.head_count"),
        "num_key_value_heads": get("attention.head_count_kv", get("attention.head_count")),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "max_position_embeddings": get("context_length", 4096),
        "rope_theta": get("rope.freq_base", 10000.0),
        "vocab_size": get("vocab_size") or len(tokens) or file.tensors["token_embd.weight"].shape[0],
        "tie_word_embeddings": "output.weight" not in file.tensors,
    }  # fmt: skip
    missing = [k for k, v in config.items() if v is None]
    if missing:
        raise GGUFError(f"GGUF metadata lacks {arch}.* values for {', '.join(missing)}")
    if get("attention.key_length"):
        config["head_dim"] = get("attention.key_length")
    if "blk.0.attn_q.bias" in file.tensors:
        config["attention_bias"] = True  # llama with biases; qwen2 has them by construction
    scaling = get("rope.scaling.type")
    if scaling and scaling != "none":
        config["rope_scaling"] = {"type": scaling, "factor": get("rope.scaling.factor", 1.0)}
        if get("rope.scaling.original_context_length"):
            config["rope_scaling"]["original_max_position_embeddings"] = get(
                "rope.scaling.original_context_length")
    if "rope_freqs.weight" in file.tensors:  # Llama 3.x: llama3 scaling as per-dim divisors
        factors = read_tensor(file, file.tensors["rope_freqs.weight"])[""]
        config["rope_scaling"] = {"type": "frequency_factors", "factors": factors.tolist()}
    experts = get("expert_count", 0)
    if experts and arch in PERMUTED:  # Mixtral in the llama layout
        config.update(model_type="mixtral", num_local_experts=experts,
                      num_experts_per_tok=get("expert_used_count"))  # fmt: skip
    elif experts:
        config.update(num_experts=experts, num_experts_per_tok=get("expert_used_count"),
                      moe_intermediate_size=get("expert_feed_forward_length"),
                      norm_topk_prob=True)  # fmt: skip
    return config


_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "ffn_gate_inp": "{moe}.gate",
    "ffn_gate_exps": "{moe}.switch_mlp.gate_proj", "ffn_up_exps": "{moe}.switch_mlp.up_proj",
    "ffn_down_exps": "{moe}.switch_mlp.down_proj",
}  # fmt: skip
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
              "output": "lm_head"}  # fmt: skip
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")


def checkpoint_name(gguf_name: str, model_type: str) -> tuple[str, str]:
    """llama.cpp tensor name -> (module path, "weight" | "bias") in our checkpoint names."""
    moe = "block_sparse_moe" if model_type == "mixtral" else "mlp"
    if m := _BLOCK.match(gguf_name):
        layer, part, kind = m.groups()
        if part not in _LAYER_NAMES:
            raise GGUFError(f"GGUF tensor {gguf_name} has no place in a {model_type} model")
        return f"model.layers.{layer}.{_LAYER_NAMES[part].format(moe=moe)}", kind
    base, _, kind = gguf_name.rpartition(".")
    if base not in _TOP_NAMES or kind not in ("weight", "bias"):
        raise GGUFError(f"GGUF tensor {gguf_name} has no place in a {model_type} model")
    return _TOP_NAMES[base], kind


def unpermute(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation: within each head it stores the rotary pairs
    interleaved (x0, x_half, x1, ...); Hugging Face keeps the halves apart. Acts on rows, so
    packed weights, scales and biases all take it alike."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def gguf_weights(file: GGUFFile, config: dict,
                 dequant_dtype=np.float16) -> tuple[dict[str, mx.array], dict | None]:  # fmt: skip
    """Tensors under our checkpoint names, and the quantization block for config.json
    (per-layer bits where the file mixes types; None when nothing is quantized)."""
    arch = file.metadata["general.architecture"]
    weights, layer_bits = {}, {}
    for info in file.tensors.values():
        if info.name == "rope_freqs.weight":  # in the config (gguf_config), not a parameter
            continue
        path, kind = checkpoint_name(info.name, config["model_type"])
        parts = read_tensor(file, info, dequant_dtype)
        if arch in PERMUTED and path.endswith(("self_attn.q_proj", "self_attn.k_proj")):
            heads = config["num_attention_heads" if path.endswith("q_proj") else
                           "num_key_value_heads"]  # fmt: skip
            parts = {k: unpermute(v, heads) for k, v in parts.items()}
        if "" in parts:
            weights[f"{path}.{kind}"] = parts[""]
        else:
            weights.update({f"{path}.{k}": v for k, v in parts.items()})
            layer_bits[path] = quants.AFFINE_BITS[info.kind]
    if not layer_bits:
        return weights, None
    default = max(set(layer_bits.values()), key=list(layer_bits.values()).count)
    block = {"group_size": 32, "bits": default}
    block.update({p: {"bits": b} for p, b in layer_bits.items() if b != default})
    return weights, block


def describe(file: GGUFFile, dequant_dtype: str | None = None) -> dict:
    """What loading does with each tensor type, for `show`: kept (MLX affine), dequantized (to
    float32 where the model computes in it, see _runs_float32)."""
    dequant_dtype = dequant_dtype or ("float32" if _runs_float32(file) else "float16")
    out = {}
    for kind, count in sorted(file.types().items()):
        if kind in quants.AFFINE_BITS:
            how = f"MLX affine {quants.AFFINE_BITS[kind]}-bit, group 32"
        elif kind in ("F32", "F16", "BF16"):
            how = "as stored"
        else:
            how = f"dequantized to {dequant_dtype}"
        out[kind] = {"tensors": count, "loaded_as": how}
    return out


def is_gguf(path: str | Path) -> bool:
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


def gguf_in(path: str | Path) -> Path | None:
    """The GGUF file a path names: the file itself, or the single .gguf in a directory that has
    no config.json (an Ollama blob or a hub download of one GGUF file)."""
    path = Path(path)
    if is_gguf(path):
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = [p for p in sorted(path.glob("*.gguf")) if is_gguf(p)]
        if len(found) == 1:
            return found[0]
    return None


def _runs_float32(file: GGUFFile) -> bool:
    """On a CPU a quantized file computes in float32, as quantized checkpoints do (load.py's
    policy); that covers K-quants dequantized to float16 too (MLX's CPU gather_mm and fp16
    matmuls are float32-only or slow). On Metal the stored dtypes are kept."""
    quantized = any(k not in ("F32", "F16", "BF16") for k in file.types())
    return quantized and mx.default_device().type != mx.DeviceType.gpu


def load_gguf_model(path: str | Path, *, dtype=None, lazy: bool = False):
    """(model, config) for a GGUF file; config["_ominix"]["gguf"] says how each type loaded."""
    from ominix.engine.load import LoadError, assemble_model

    try:
        file = read_gguf(path)
        config = gguf_config(file)
        float32 = dtype is None and not os.environ.get("OMINIX_DTYPE") and _runs_float32(file)
        # Where the model computes in float32 anyway, dequantize to it: fp16 would only add
        # rounding (the weights are cast to float32 at load).
        weights, quantization = gguf_weights(file, config, np.float32 if float32 else np.float16)
    except GGUFError as e:
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise LoadError(message) from None
    if quantization is not None:
        config["quantization"] = quantization
    config["_ominix"] = {"gguf": describe(file, "float32" if float32 else "float16")}
    dtype = mx.float32 if float32 else dtype
    origin = dict.fromkeys(weights, Path(path).name)
    model, config = assemble_model(config, weights, origin, dtype=dtype, lazy=lazy)
    return model, config


def load_gguf(path: str | Path, *, dtype=None):
    """(model, tokenizer) for a GGUF file, as engine/load.py's load() gives for a directory."""
    from ominix.engine.gguf_tokenizer import gguf_tokenizer
    from ominix.engine.load import LoadError

    model, config = load_gguf_model(path, dtype=dtype)
    try:
        tokenizer = gguf_tokenizer(read_gguf(path).metadata)
    except ValueError as e:
        raise LoadError(f"{path}: {e}") from None
    model.gguf_config = config  # what `show` reports (types kept / dequantized)
    return model, tokenizer
