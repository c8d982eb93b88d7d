"""CTranslate2 Whisper (`model.bin`, as faster-whisper uses) -> the mlx-whisper layout we load.

CTranslate2's `model.bin` (binary version 6, written by ctranslate2/specs/model_spec.py) is:
    u32 version, string spec name, u32 spec revision, u32 variable count,
    per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count, raw bytes,
    u32 alias count, per alias: string alias, string target;
strings are a u16 length (including a trailing NUL) then the bytes, all little-endian. dtype ids
follow CTranslate2's DataType enum: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16.

Whisper variables are named like `encoder/layer_0/self_attention/linear_0/weight`, with the
self-attention q, k, v projections fused into one `linear_0` (k's zero bias included) and the
cross-attention k, v fused into `linear_1`. This module imports no MLX: numpy and safetensors.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from ominix.hub.files import written_whole

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class CT2Error(ValueError):
    pass


def is_ct2_whisper(path: str | Path) -> bool:
    f = Path(path) / "model.bin"
    if not f.is_file():
        return False
    with open(f, "rb") as fh:
        head = fh.read(64)
    if len(head) < 8:
        return False
    (n,) = struct.unpack_from("<H", head, 4)
    return head[6:6 + n - 1] == b"WhisperSpec"


def read_ct2(file: str | Path) -> tuple[str, int, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, revision, variables, aliases); arrays are views of a memory map."""
    data = np.memmap(file, dtype=np.uint8, mode="r")
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise CT2Error(f"{file} is truncated at byte {pos}")
        value = struct.unpack_from(fmt, data, pos)
        pos += size
        return value[0] if len(value) == 1 else value

    def string() -> str:
        nonlocal pos
        n = take("<H")
        text = bytes(data[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return text

    version = take("<I")
    if version != 6:
        raise CT2Error(f"{file}: CTranslate2 binary version {version} is not supported (expected 6)")
    name, revision, count = string(), take("<I"), take("<I")
    variables = {}
    for _ in range(count):
        var = string()
        rank = take("<B")
        shape = [take("<I") for _ in range(rank)]
        dtype_id, nbytes = take("<B"), take("<I")
        if dtype_id not in _DTYPES:
            raise CT2Error(f"{file}: variable {var} has unknown dtype id {dtype_id}")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        dtype = _DTYPES[dtype_id]
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the bits to float32
            arr = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(dtype)
        variables[var] = arr.reshape(shape) if shape else arr.reshape(())
    aliases = {}
    for _ in range(take("<I")):
        alias = string()
        aliases[alias] = string()
    return name, revision, variables, aliases


def _scalar(v: dict, name: str) -> int:
    return int(np.asarray(v[name]).reshape(-1)[0])


def _layers(v: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in v if (m := re.match(rf"{prefix}/layer_(\d+)/", k))}
    return max(found) + 1 if found else 0


def whisper_weights(v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """CTranslate2 Whisper variables -> (mlx-whisper tensors, mlx-whisper config)."""
    if any(k.endswith("weight_scale") for k in v):
        raise CT2Error("int8-quantized CTranslate2 models are not supported; use a float16 or "
                       "float32 model.bin")
    out: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True):
        out[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            out[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(src: str, dst: str):
        out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def split(src: str, dsts: list[str]):
        w, b = v[f"{src}/weight"], v[f"{src}/bias"]
        n = w.shape[0] // len(dsts)
        for i, dst in enumerate(dsts):
            out[f"{dst}.weight"] = w[i * n:(i + 1) * n]
            if not dst.endswith(".key"):  # k has no bias in Whisper; CTranslate2 stores zeros
                out[f"{dst}.bias"] = b[i * n:(i + 1) * n]

    for conv in ("conv1", "conv2"):
        out[f"encoder.{conv}.weight"] = np.ascontiguousarray(v[f"encoder/{conv}/weight"].transpose(0, 2, 1))
        out[f"encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
    n_enc, n_dec = _layers(v, "encoder"), _layers(v, "decoder")
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        split(f"{s}/self_attention/linear_0", [f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"])
        linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        linear(f"{s}/ffn/linear_0", f"{d}.mlp1")
        linear(f"{s}/ffn/linear_1", f"{d}.mlp2")
    norm("encoder/layer_norm", "encoder.ln_post")
    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        norm(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        split(f"{s}/self_attention/linear_0", [f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"])
        linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        norm(f"{s}/attention/layer_norm", f"{d}.cross_attn_ln")
        linear(f"{s}/attention/linear_0", f"{d}.cross_attn.query")
        split(f"{s}/attention/linear_1", [f"{d}.cross_attn.key", f"{d}.cross_attn.value"])
        linear(f"{s}/attention/linear_2", f"{d}.cross_attn.out")
        norm(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        linear(f"{s}/ffn/linear_0", f"{d}.mlp1")
        linear(f"{s}/ffn/linear_1", f"{d}.mlp2")
    norm("decoder/layer_norm", "decoder.ln")

    conv1 = v["encoder/conv1/weight"]
    config = {
        "model_type": "whisper",
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": _scalar(v, "encoder/num_heads"),
        "n_audio_layer": n_enc,
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(v["decoder/embeddings/weight"].shape[1]),
        "n_text_head": _scalar(v, "decoder/num_heads"),
        "n_text_layer": n_dec,
    }
    return out, config


def convert_ct2(src: str | Path, dst: str | Path, log=lambda message: None) -> Path:
    """Write the mlx-whisper layout of CTranslate2 Whisper directory `src` into new `dst`:
    config.json, weights.safetensors (tensors as stored: fp16 stays fp16), tokenizer.json, and
    generation_config.json with CTranslate2's suppressed tokens. Atomic: dst is complete or absent."""
    from safetensors.numpy import save_file

    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CT2Error(f"{dst} already exists and is not empty; choose a new directory")
    name, revision, variables, _ = read_ct2(src / "model.bin")
    if name != "WhisperSpec":
        raise CT2Error(f"{src}/model.bin holds a {name}, not a Whisper model")
    log(f"reading {src}/model.bin ({name} revision {revision}, {len(variables)} variables)")
    weights, config = whisper_weights(variables)
    ct2_config = json.loads((src / "config.json").read_text()) if (src / "config.json").is_file() else {}
    if ct2_config.get("alignment_heads"):
        weights["alignment_heads"] = np.array(ct2_config["alignment_heads"], dtype=np.int32).reshape(-1, 2)
    generation = {}
    if ct2_config.get("suppress_ids"):
        generation["suppress_tokens"] = ct2_config["suppress_ids"]
    if ct2_config.get("suppress_ids_begin"):
        generation["begin_suppress_tokens"] = ct2_config["suppress_ids_begin"]
    if ct2_config.get("alignment_heads"):
        generation["alignment_heads"] = ct2_config["alignment_heads"]
    with written_whole(dst) as tmp:
        save_file({k: np.ascontiguousarray(a) for k, a in weights.items()}, str(tmp / "weights.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        for side in ("tokenizer.json", "preprocessor_config.json", "vocabulary.txt"):
            if (src / side).is_file():
                shutil.copy2(src / side, tmp / side)
    log(f"wrote {dst}")
    return dst
