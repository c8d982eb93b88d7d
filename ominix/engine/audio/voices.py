"""Cloned voices: a speaker vector per (model, name), kept under OMINIX_HOME/voices/.

A voice is made once from a reference clip (the model's speaker encoder, on the worker) and then
named in speech requests like a built-in speaker. Files: `<model>/<voice id>.npy` (the vector),
`<model>/<voice id>.codes.npy` (the clip's speech-tokenizer codes, when a transcript came with it)
and `<model>/<voice id>.json` (name, transcript, mode, clip length, created). A voice with codes and
transcript clones in context (`mode` "icl": Qwen3-TTS' x_vector_only_mode false); without, from
the vector only ("x_vector"); GPT-SoVITS voices pack the clip's and transcript's features
("reference"). numpy and JSON only: no MLX.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from ominix.config import ominix_home
from ominix.engine.audio.synth import VoiceError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_lock = threading.Lock()
MIN_CLIP_SECONDS, MAX_CLIP_SECONDS = 1.0, 60.0


def _root(model: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    return ominix_home() / "voices" / safe


def check_name(name: str) -> str:
    if not name or not _NAME.match(name):
        raise VoiceError("voice name must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return name


def decode_clip(data: bytes, sample_rate: int) -> np.ndarray:
    """Any audio file PyAV reads -> mono float32 at `sample_rate`; a VoiceError if it cannot."""
    import av

    if not data:
        raise VoiceError("the reference clip is empty")
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise VoiceError("the reference clip has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            parts = []
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except VoiceError:
        raise
    except Exception as e:  # av.error.InvalidDataError and friends
        raise VoiceError(f"the reference clip could not be decoded as audio: {e}") from None
    audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    seconds = len(audio) / sample_rate
    if not MIN_CLIP_SECONDS <= seconds <= MAX_CLIP_SECONDS:
        raise VoiceError(f"the reference clip must last {MIN_CLIP_SECONDS:g}-{MAX_CLIP_SECONDS:g} s; it lasts {seconds:.2f} s")
    return audio


def save(model: str, name: str, vector: np.ndarray, seconds: float, text: str | None = None,
         codes: np.ndarray | None = None, mode: str | None = None) -> dict:  # fmt: skip
    check_name(name)
    root = _root(model)
    with _lock:
        root.mkdir(parents=True, exist_ok=True)
        for old in list_voices(model):  # a name is unique per model: replace it
            if old["name"] == name:
                delete(model, old["id"])
        voice_id = "voice_" + uuid.uuid4().hex[:16]
        icl = codes is not None and bool(text)
        meta = {"id": voice_id, "object": "audio.voice", "name": name, "model": model,
                "created_at": int(time.time()), "seconds": round(seconds, 3), "text": text,
                "mode": mode or ("icl" if icl else "x_vector")}  # fmt: skip
        np.save(root / f"{voice_id}.npy", np.asarray(vector, dtype=np.float32))
        if icl:
            np.save(root / f"{voice_id}.codes.npy", np.asarray(codes, dtype=np.int32))
        (root / f"{voice_id}.json").write_text(json.dumps(meta))
    return meta


def list_voices(model: str) -> list[dict]:
    root = _root(model)
    if not root.is_dir():
        return []
    out = []
    for f in sorted(root.glob("voice_*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return out


def clone_options(model: str, name_or_id: str) -> dict | None:
    """SynthesisOptions fields for the cloned voice named (or with the id) `name_or_id`, or None.
    In-context voices bring the clip's codes and transcript; every cloned voice speaks with the
    text streamed into the prompt, qwen-tts' default for generate_voice_clone."""
    for meta in list_voices(model):
        if name_or_id not in (meta["id"], meta["name"]):
            continue
        root = _root(model)
        try:
            vector = np.load(root / f"{meta['id']}.npy")
            codes = np.load(root / f"{meta['id']}.codes.npy") if meta.get("mode") == "icl" else None
        except OSError:
            return None
        return {"voice": None, "voice_embedding": vector, "voice_codes": codes,
                "voice_text": meta.get("text") if codes is not None else None, "non_streaming_text": False}  # fmt: skip
    return None


def delete(model: str, voice_id: str) -> bool:
    root = _root(model)
    found = False
    for suffix in (".npy", ".codes.npy", ".json"):
        f = root / f"{voice_id}{suffix}"
        if f.exists():
            f.unlink()
            found = True
    return found
