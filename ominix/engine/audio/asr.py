"""The speech-recognition kind's loader: a checkpoint directory -> (SpeechRecognizer, None).

One line per family in RECOGNIZERS (config.json `model_type` -> loader); FunASR checkpoints
(config.yaml, no config.json) go to the `funasr` entry, FunASR-Qwen4B bundles (an adaptor*.safetensors,
no config) to `funasr_qwen4b`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ominix.engine.load import LoadError

RECOGNIZERS = {
    "whisper": "ominix.engine.audio.whisper:load_whisper",
    "funasr": "ominix.engine.audio.funasr:load_funasr",  # Paraformer, SeACo-Paraformer, SenseVoice
    "qwen3_asr": "ominix.engine.audio.qwen3_asr:load_qwen3_asr",
    "fun_asr_nano": "ominix.engine.audio.fun_asr_nano:load_fun_asr_nano",
    "funasr_qwen4b": "ominix.engine.audio.funasr_qwen4b:load_funasr_qwen4b",  # no config: known by its files
}


def model_type(path: Path) -> str:
    config = path / "config.json"
    if not config.is_file():
        if (path / "config.yaml").is_file():
            return "funasr"
        if any(path.glob("adaptor*.safetensors")) or any(path.glob("models/adaptor*.safetensors")):
            return "funasr_qwen4b"
        raise LoadError(f"{path} has no config.json")
    try:
        data = json.loads(config.read_text())
    except ValueError as e:
        raise LoadError(f"{config} is not valid JSON: {e}") from None
    if "n_audio_state" in data:  # early mlx-whisper configs carry no model_type
        return "whisper"
    if (path / "model.bin").is_file() and "model_type" not in data:
        raise LoadError(f"{path} is a CTranslate2 (faster-whisper) model: convert it once with "
                        f"`ominix convert {path} DST`")
    return str(data.get("model_type") or "")


def load(path) -> tuple[object, None]:
    path = Path(path)
    kind = model_type(path)
    target = RECOGNIZERS.get(kind)
    if target is None:
        raise LoadError(f"model_type '{kind}' is not a speech recognizer this build runs "
                        f"({', '.join(sorted(RECOGNIZERS))})")
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)(path), None
