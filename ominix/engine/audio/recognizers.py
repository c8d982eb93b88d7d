"""One loader for the speech-recognition families in this package (the ASR kind's loader hook).

`load(path)` -> (recognizer, None): FunASR directories (config.yaml: Paraformer, SeACo-Paraformer,
SenseVoice) and config.json model_type qwen3_asr / fun_asr_nano. Each entry of `LOADERS` returns
the recognizer itself, so the same lines fit any model_type -> loader table (Whisper's included).
"""

from __future__ import annotations

import json
from pathlib import Path

LOADERS = {
    "funasr": "ominix.engine.audio.funasr:load_funasr",
    "qwen3_asr": "ominix.engine.audio.qwen3_asr:load_qwen3_asr",
    "fun_asr_nano": "ominix.engine.audio.fun_asr_nano:load_fun_asr_nano",
}


def family(path: str | Path) -> str | None:
    """Which loader a checkpoint directory needs (reads only small config files)."""
    path = Path(path)
    if (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        return "funasr"
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return model_type if model_type in LOADERS else None


def load(path: str | Path):
    import importlib

    from ominix.engine.load import LoadError

    name = family(path)
    if name is None:
        raise LoadError(f"{path} is not a speech recognition checkpoint this build can load "
                        f"({', '.join(LOADERS)})")
    module, _, fn = LOADERS[name].partition(":")
    return getattr(importlib.import_module(module), fn)(path), None
