"""What Ollama's /api/tags, /api/show and /api/ps say about a model: name, size, digest, details
(format, family, parameter size, quantization level), model_info, template, parameters.

For models pulled from an Ollama registry the answers come from their manifest and GGUF metadata;
for checkpoints (Hugging Face layout, MLX quantized) from config.json and the files on disk. Those
have no registry digest: theirs is the sha256 of the model's id and file list, stable while the
files stay the same. Reads small files only (GGUF headers, JSON); no MLX.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

# GGUF general.file_type -> Ollama's quantization_level words
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
              16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}  # fmt: skip


def rfc3339(seconds: float) -> str:
    """Go's time.Time JSON form with nanoseconds, in UTC."""
    whole = int(seconds)
    nanos = int((seconds - whole) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"


def _gguf_file(path: Path) -> Path | None:
    from ominix.engine.gguf import gguf_in  # numpy only at import; no tensors are read

    return gguf_in(path)


def _ollama_json(path: Path) -> dict | None:
    file = Path(path) / "ollama.json"
    return json.loads(file.read_text()) if file.is_file() else None


def _files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def digest_of(model_id: str, path: Path) -> str:
    info = _ollama_json(path)
    if info and info.get("digest"):
        return info["digest"].removeprefix("sha256:")
    listing = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size)
               for p in _files(path)]  # fmt: skip
    return hashlib.sha256(json.dumps([model_id, listing]).encode()).hexdigest()


def _parameter_count(total: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6)):
        if total >= scale:
            return f"{total / scale:.1f}{unit}".replace(".0", "")
    return str(int(total))


def details(path: Path) -> dict:
    """Ollama's `details` block."""
    gguf = _gguf_file(path)
    if gguf is not None:
        from ominix.engine.gguf import read_gguf

        meta = read_gguf(gguf).metadata
        arch = meta.get("general.architecture", "")
        return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
                "parameter_size": meta.get("general.size_label") or "",
                "quantization_level": FILE_TYPES.get(meta.get("general.file_type"), "unknown")}
    from ominix.hub.files import detect_format_and_quantization

    config = _config(path)
    family = config.get("model_type", "")
    fmt, quant = detect_format_and_quantization(path)
    return {"parent_model": "", "format": fmt, "family": family, "families": [family] if family else None,
            "parameter_size": _parameter_size(config), "quantization_level": quant or "unknown"}


def _config(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _parameter_size(config: dict) -> str:
    """A rough count from the config (embeddings + layers), as Ollama shows it ("7.6B")."""
    try:
        h, n, v = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        inter = config.get("intermediate_size") or 4 * h
        return _parameter_count(v * h + n * (4 * h * h + 3 * h * inter))
    except (KeyError, TypeError):
        return ""


def model_info(path: Path) -> dict:
    """/api/show's model_info: GGUF metadata (scalars; tokenizer arrays as null, as Ollama
    does without verbose), or config.json values under Ollama's key names."""
    gguf = _gguf_file(path)
    if gguf is not None:
        from ominix.engine.gguf import read_gguf

        meta = read_gguf(gguf).metadata
        return {k: (None if isinstance(v, list) and len(v) > 16 else v) for k, v in meta.items()
                if k != "tokenizer.chat_template"}  # fmt: skip
    config = _config(path)
    arch = config.get("model_type", "")
    keys = {"max_position_embeddings": "context_length", "hidden_size": "embedding_length",
            "num_hidden_layers": "block_count", "intermediate_size": "feed_forward_length",
            "num_attention_heads": "attention.head_count",
            "num_key_value_heads": "attention.head_count_kv", "vocab_size": "vocab_size"}  # fmt: skip
    info = {"general.architecture": arch}
    info.update({f"{arch}.{ours}": config[theirs] for theirs, ours in keys.items() if theirs in config})
    return info


def template_and_params(path: Path) -> tuple[str, str, str | None, str | None]:
    """(template, parameters text, system, license) as /api/show gives them."""
    info = _ollama_json(path)
    if info is not None:
        lines = []
        for key, value in (info.get("params") or {}).items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"{key:<24}{json.dumps(item) if isinstance(item, str) else item}")
        return info.get("template") or "", "\n".join(lines), info.get("system"), info.get("license")
    template = ""
    gguf = _gguf_file(path)
    if gguf is not None:
        from ominix.engine.gguf import read_gguf

        template = read_gguf(gguf).metadata.get("tokenizer.chat_template") or ""
    else:
        for name in ("chat_template.jinja",):
            if (Path(path) / name).is_file():
                template = (Path(path) / name).read_text()
        if not template:
            try:
                template = json.loads((Path(path) / "tokenizer_config.json").read_text()).get(
                    "chat_template") or ""
            except (OSError, ValueError):
                template = ""
    generation = {}
    try:
        generation = json.loads((Path(path) / "generation_config.json").read_text())
    except (OSError, ValueError):
        pass
    names = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
             "repetition_penalty": "repeat_penalty"}  # fmt: skip
    lines = [f"{theirs:<24}{generation[ours]}" for ours, theirs in names.items() if ours in generation]
    return (template if isinstance(template, str) else ""), "\n".join(lines), None, None


def capabilities(kind: str, template: str) -> list[str]:
    if kind == "embedding":
        return ["embedding"]
    caps = ["completion"]
    if ".Tools" in template or "tools" in template:
        caps.append("tools")
    if "think" in template.lower():
        caps.append("thinking")
    return caps
