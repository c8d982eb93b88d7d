"""What the runtime serves, in one table: chat, embedding, speech in and out, images, vision chat.

A `Kind` says how a checkpoint is recognised (catalog category; else the files: model_index.json
for a diffusers pipeline or an mflux pack's index, config.yaml for FunASR, sentence-transformers'
modules.json, config.json's `model_type` / `architectures`), which loader builds it (a dotted path,
imported only when a model loads), which job kind it runs, and which HTTP routes and CLI verbs
accept it. Everything else asks this module: the pool, the store, the API and the CLI. It imports
no MLX.

A loader is `fn(path) -> (model, tokenizer_or_None)`; it runs on the pool's loader thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Kind:
    name: str
    noun: str  # "a chat model", for messages
    category: str  # the catalog category of this kind
    loader: str | None  # "module:function"; None while this build has no loader for the kind
    routes: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()  # config.json model_type values that mean this kind


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("chat", "a chat model", "llm", "ominix.engine.load:load",
         ("POST /v1/chat/completions", "POST /v1/completions"), ("run", "bench")),
    Kind("embedding", "an embedding model", "embedding", "ominix.engine.embed:load",
         ("POST /v1/embeddings",), (), ("bert", "xlm_roberta", "nomic_bert", "modernbert")),
    Kind("asr", "a speech recognition model", "asr", "ominix.engine.audio.asr:load",
         ("POST /v1/audio/transcriptions", "POST /v1/audio/translations"), ("transcribe", "bench"),
         ("whisper", "paraformer", "qwen3_asr", "funasr", "sensevoice", "fun_asr_nano", "funasr_qwen4b")),
    Kind("tts", "a text-to-speech model", "tts", "ominix.engine.audio.speak:load", ("POST /v1/audio/speech",), ("say",),
         ("qwen3_tts", "gpt_sovits")),
    Kind("image", "an image generation model", "image_gen", "ominix.engine.image.pipeline:load",
         ("POST /v1/images/generations", "POST /v1/images/edits"), ("image",)),
    Kind("vlm", "a vision chat model", "vlm", "ominix.engine.vlm:load", ("POST /v1/chat/completions",), ("run",),
         ("qwen3_vl", "moxin_vlm", "prismatic")),
)}

BY_CATEGORY = {k.category: k for k in KINDS.values()}
EMBEDDING_ARCHITECTURES = ("BertModel", "Qwen3Model")


class WrongKindError(ValueError):
    """A model asked to do what its kind does not do (HTTP 400, `model_not_supported`)."""

    param = "model"
    code = "model_not_supported"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def is_mflux_pack(path: Path | str) -> bool:
    """A pipeline saved by mflux (`mflux-save`, the mlx-community FLUX.2 [klein] packs): component
    folders whose safetensors index names an mflux version, and no model_index.json."""
    if (Path(path) / "model_index.json").is_file():
        return False
    index = _read_json(Path(path) / "transformer" / "model.safetensors.index.json")
    metadata = index.get("metadata")
    return isinstance(metadata, dict) and "mflux_version" in metadata


def is_image_pipeline(path: Path | str) -> bool:
    """A diffusers pipeline folder (model_index.json) or an mflux pack."""
    return (Path(path) / "model_index.json").is_file() or is_mflux_pack(path)


def detect(path: Path | str | None, entry=None) -> Kind:
    """The kind of a checkpoint: its catalog entry's category wins, else its files say. Reads
    only small JSON files."""
    category = getattr(entry, "category", None)
    if category in BY_CATEGORY:
        return BY_CATEGORY[category]
    if path is None:
        return KINDS["chat"]
    path = Path(path)
    if is_image_pipeline(path):
        return KINDS["image"]
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        return KINDS["asr"]  # FunASR checkpoints (Paraformer, SenseVoice, FSMN-VAD)
    if (path / "modules.json").is_file():  # sentence-transformers layout
        return KINDS["embedding"]
    if (path / "chinese-hubert-base").is_dir() and not (path / "config.json").is_file():
        return KINDS["tts"]  # GPT-SoVITS as lj1995/GPT-SoVITS publishes it (.ckpt + .pth + feature models)
    config = _read_json(path / "config.json")
    if "n_audio_state" in config:  # mlx-whisper dimensions (early ones carry no model_type)
        return KINDS["asr"]
    model_type = str(config.get("model_type") or "").lower().replace("-", "_")
    for kind in KINDS.values():
        if model_type in kind.model_types:
            return kind
    if any(a in EMBEDDING_ARCHITECTURES for a in config.get("architectures") or []):
        return KINDS["embedding"]
    if isinstance(config.get("vision_config"), dict):
        return KINDS["vlm"]
    return KINDS["chat"]


def runs(kind: Kind) -> bool:
    return kind.loader is not None


def mismatch(name: str, kind: Kind, asked: str) -> WrongKindError:
    """The error for asking `kind` to do `asked` ("chat completions", "`ominix run`"), naming
    where the model does belong."""
    where = [f"`ominix {v}`" for v in kind.verbs] + list(kind.routes)
    hint = f"; use {' or '.join(where)}" if where else ""
    return WrongKindError(f"The model '{name}' is {kind.noun}; it does not support {asked}{hint}.")


def load_function(kind: Kind):
    """The loader callable of a kind (imports its module now)."""
    import importlib

    if kind.loader is None:
        raise LookupError(f"this build cannot load {kind.noun} yet")
    module, _, fn = kind.loader.partition(":")
    return getattr(importlib.import_module(module), fn)
