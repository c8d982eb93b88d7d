"""GPT-SoVITS v2 on the engine: converting the published checkpoints once, loading them, and the
GPT's token loop.

The published files (lj1995/GPT-SoVITS) are PyTorch pickles: the GPT `s1bert25hz-*.ckpt`
(`{"weight", "config"}`), the SoVITS generator `s2G*.pth` (`{"weight", "config", "info"}`, possibly
with GPT-SoVITS' two-byte version head instead of the zip's "PK"), and chinese-hubert-base's
`pytorch_model.bin`. `convert_gpt`, `convert_sovits` and `convert_hubert` turn each into a folder
of `config.json` + `model.safetensors` without torch (engine/audio/torch_ckpt.py); `load_gpt`,
`load_sovits` and `load_hubert` build the MLX modules from those folders.

`SemanticDecoder` runs the reference's decode loop one token per `step()`: EOS is not allowed for
the first 11 tokens, a repetition penalty (1.35) covers the prompt and every token so far, then
temperature / top-k / top-p; it stops at EOS (greedy or sampled) or after `max_tokens`.
`linear_spectrogram` is the reference clip's STFT magnitude that SoVITS' style encoder reads.
The synthesizer that joins the stages is engine/audio/gpt_sovits_tts.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ominix.engine.audio import torch_ckpt
from ominix.engine.llm.cache import KVCache
from ominix.engine.load import build_model, read_config, read_weights

EOS_BLOCKED_STEPS = 11  # the reference's "at least ~0.4 s of audio" rule


def convert_gpt(ckpt: str | Path, dst: str | Path) -> Path:
    data = torch_ckpt.load(ckpt)
    if not isinstance(data, dict) or "weight" not in data or "config" not in data:
        raise torch_ckpt.CheckpointError(f"{ckpt} is not a GPT-SoVITS GPT checkpoint (no 'weight' / 'config')")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    weights = {k.removeprefix("model."): mx.array(np.ascontiguousarray(v)) for k, v in data["weight"].items()
               if isinstance(v, np.ndarray)}  # fmt: skip
    mx.save_safetensors(str(dst / "model.safetensors"), weights)
    config = {"model_type": "gpt_sovits_gpt", **json.loads(json.dumps(data["config"], default=str))}
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def load_gpt(path: str | Path):
    return _build(path)


# SoVITS .pth files written by newer GPT-SoVITS carry a version in place of the zip's "PK" head.
_SOVITS_HEADS = {b"PK": "v2", b"00": "v1", b"01": "v2", b"02": "v3", b"03": "v3", b"04": "v4",
                 b"05": "v2Pro", b"06": "v2ProPlus"}  # fmt: skip


def convert_sovits(pth: str | Path, dst: str | Path) -> Path:
    raw = Path(pth).read_bytes()
    version = _SOVITS_HEADS.get(raw[:2])
    if version is None:
        raise torch_ckpt.CheckpointError(f"{pth} is not a SoVITS checkpoint (unknown head {raw[:2]!r})")
    if version != "v2":
        raise torch_ckpt.CheckpointError(f"{pth} is a SoVITS {version} checkpoint; only v2 is supported")
    data = torch_ckpt.load(io.BytesIO(b"PK" + raw[2:]))
    if not isinstance(data, dict) or "weight" not in data or "config" not in data:
        raise torch_ckpt.CheckpointError(f"{pth} is not a SoVITS checkpoint (no 'weight' / 'config')")
    weights = data["weight"]
    table = weights.get("enc_p.text_embedding.weight")
    if table is not None and table.shape[0] == 322:
        raise torch_ckpt.CheckpointError(f"{pth} is a SoVITS v1 checkpoint (322 symbols); only v2 is supported")
    config = {"model_type": "gpt_sovits_sovits", **json.loads(json.dumps(data["config"], default=str))}
    if table is not None:
        config["model"]["n_symbols"] = int(table.shape[0])
    return _save(weights, config, dst)


def convert_hubert(src: str | Path, dst: str | Path) -> Path:
    """chinese-hubert-base as published (config.json + pytorch_model.bin) -> config + safetensors."""
    src = Path(src)
    config = json.loads((src / "config.json").read_text())
    if (src / "model.safetensors").is_file():
        weights = {k: np.asarray(v) for k, v in mx.load(str(src / "model.safetensors")).items()}
    else:
        weights = torch_ckpt.load(src / "pytorch_model.bin")
    if not isinstance(weights, dict):
        raise torch_ckpt.CheckpointError(f"{src / 'pytorch_model.bin'} is not a state dict")
    return _save(weights, {**config, "model_type": "hubert"}, dst)


def _save(weights: dict, config: dict, dst: str | Path) -> Path:
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    arrays = {k: mx.array(np.ascontiguousarray(v)) for k, v in weights.items() if isinstance(v, np.ndarray)}
    mx.save_safetensors(str(dst / "model.safetensors"), arrays)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def _build(path: str | Path):
    path = Path(path)
    config = read_config(path)
    weights, origin = read_weights(path)
    model = build_model(config, weights, origin)
    # Evaluate also the non-parameter tables (the GPT's sine positions): arrays left lazy here
    # would belong to the loader thread's stream and fail on the worker.
    mx.eval(model.parameters(), [v for v in model.values() if isinstance(v, mx.array)])
    return model


load_sovits = load_hubert = _build


def linear_spectrogram(wav: np.ndarray, n_fft: int = 2048, hop: int = 640, win: int = 2048) -> np.ndarray:
    """|STFT| of a 32 kHz clip as the reference computes it (reflect padding of (n_fft - hop) / 2
    each side, no centering, periodic Hann window, sqrt(re^2 + im^2 + 1e-8)) -> [frames, n_fft/2+1]."""
    pad = (n_fft - hop) // 2
    x = np.pad(np.asarray(wav, np.float64), (pad, pad), mode="reflect")
    frames = 1 + (len(x) - n_fft) // hop
    if frames < 1:
        raise ValueError("the reference clip is too short for a spectrogram")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(x[idx] * window, axis=-1)
    return np.sqrt(spec.real**2 + spec.imag**2 + 1e-8).astype(np.float32)


class SemanticDecoder:
    def __init__(self, model, phones, bert: np.ndarray, prompt, *, top_k: int = 15, top_p: float = 1.0,
                 temperature: float = 1.0, repetition_penalty: float = 1.35, max_tokens: int = 1500, seed=None):  # fmt: skip
        self.model = model
        self.phones = mx.array([list(phones)], dtype=mx.int32)
        self.bert = mx.array(np.asarray(bert, np.float32))[None]  # [1, Tx, 1024]
        self.prompt = list(prompt)
        self.tokens: list[int] = []
        self.cache = [KVCache() for _ in model.layers]
        self.top_k, self.top_p, self.temperature = top_k, top_p, temperature
        self.penalty, self.max_tokens = repetition_penalty, max_tokens
        self.key = mx.random.key(seed if seed is not None else np.random.randint(2**31))
        self.done = False
        self.trace: list[np.ndarray] | None = None

    def _sample(self, logits: mx.array) -> tuple[int, int]:
        logits = logits.astype(mx.float32)
        if self.trace is not None:
            self.trace.append(np.array(logits[0]))
        if len(self.tokens) < EOS_BLOCKED_STEPS:
            logits = logits[:, :-1]  # EOS is the last id
        seen = mx.array(sorted(set(self.prompt + self.tokens)), dtype=mx.int32) if self.prompt or self.tokens else None
        if seen is not None and self.penalty != 1.0:
            score = logits[:, seen]
            logits[:, seen] = mx.where(score < 0, score * self.penalty, score / self.penalty)
        # The reference penalizes its logits in place, so its "argmax is EOS" stop sees them penalized.
        greedy = int(mx.argmax(logits, axis=-1).item())
        if self.top_p < 1.0:
            order = mx.argsort(-logits, axis=-1)
            probs = mx.softmax(mx.take_along_axis(logits, order, axis=-1), axis=-1)
            remove = mx.cumsum(probs, axis=-1) > self.top_p
            remove[:, 0] = False
            drop = mx.put_along_axis(mx.zeros(logits.shape, mx.bool_), order, remove, axis=-1)
            logits = mx.where(drop, -mx.inf, logits)
        logits = logits / max(self.temperature, 1e-5)
        if self.top_k:
            kth = mx.sort(logits, axis=-1)[:, -min(self.top_k, logits.shape[-1])][:, None]
            logits = mx.where(logits < kth, -mx.inf, logits)
        self.key, sub = mx.random.split(self.key)
        return greedy, int(mx.random.categorical(logits, key=sub).item())

    def step(self) -> int | None:
        """Decode one token; returns it, or None when the sequence ended (EOS is not returned)."""
        if self.done:
            return None
        if not self.tokens and not getattr(self, "_started", False):
            self._started = True
            prompt = mx.array([self.prompt], dtype=mx.int32) if self.prompt else None
            logits = self.model.prefill(self.phones, self.bert, prompt, self.cache)
        else:
            logits = self.model.step(mx.array([[self.tokens[-1]]], dtype=mx.int32),
                                     len(self.prompt) + len(self.tokens) - 1, self.cache)  # fmt: skip
        greedy, token = self._sample(logits)
        eos = self.model.args.EOS
        if greedy == eos or token == eos:
            self.done = True
            return None
        self.tokens.append(token)
        if len(self.tokens) > self.max_tokens:
            self.done = True
        return token
