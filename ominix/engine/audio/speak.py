"""Text to speech on the worker: a loader for the `tts` kind and the stepped SpeakJob.

The text is split at sentence boundaries and spoken one sentence after another, so the first audio
comes after the first sentence's first frames, not after the whole text. Each `step()` is one
bounded unit of the current sentence's synthesis (one frame, or one decoded chunk); decoded audio
leaves as an `AudioChunk` event at once. The result is the request's usage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ominix.engine.audio.synth import SpeechSynthesizer, SynthesisOptions, VoiceError
from ominix.engine.worker import StepJob

MAX_SENTENCE_CHARS = 300  # longer sentences are cut at a comma or space near this length

# A sentence ends at . ! ? ; (and their CJK forms) followed by space or the end, or at a newline.
_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；…])|\n+")
_SOFT = re.compile(r"(?<=[,:，、：])\s*|\s+")


@dataclass
class AudioChunk:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    sentence: int  # index of the sentence it belongs to


@dataclass
class SpeakUsage:
    input_tokens: int = 0  # text tokens of the input (the model's tokenizer)
    output_tokens: int = 0  # audio frames generated (80 ms codec frames for Qwen3-TTS)
    seconds: float = 0.0
    sentences: int = 0
    extra: dict = field(default_factory=dict)

    def body(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens}  # fmt: skip


def _cut(sentence: str, limit: int) -> list[str]:
    out = []
    while len(sentence) > limit:
        cuts = [m.start() for m in _SOFT.finditer(sentence, 0, limit) if m.start() > limit // 3]
        at = cuts[-1] if cuts else limit
        out.append(sentence[:at].strip())
        sentence = sentence[at:].strip()
    return out + ([sentence] if sentence else [])


def split_sentences(text: str, limit: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences to speak one by one; a fragment without any letter or digit joins its neighbour."""
    pieces = [p.strip() for p in _END.split(text) if p and p.strip()]
    merged: list[str] = []
    for p in pieces:
        if merged and not any(ch.isalnum() for ch in p):
            merged[-1] += p
        else:
            merged.append(p)
    return [part for s in merged for part in _cut(s, limit)]


class SpeakJob(StepJob):
    kind = "tts"

    def __init__(self, text: str, options: SynthesisOptions, sentence_chars: int = MAX_SENTENCE_CHARS):
        self.sentences = split_sentences(text, sentence_chars)
        if not self.sentences:
            raise VoiceError("input has nothing to speak")
        self.options = options
        self.current = None
        self.index = -1
        self.usage = SpeakUsage(sentences=len(self.sentences))

    def begin(self, resident, ticket) -> None:
        self.tts: SpeechSynthesizer = resident.model
        self.ticket = ticket
        options = self.options
        if options.voice and options.voice_embedding is None and options.voice.lower() not in self.tts.voices:
            raise VoiceError(f"unknown voice '{options.voice}'; this model has: {', '.join(self.tts.voices) or 'none'}")
        self.usage.input_tokens = sum(len(self.tts.encode(s)) for s in self.sentences)

    def _next_sentence(self) -> bool:
        self.index += 1
        if self.index >= len(self.sentences):
            return False
        # Seeds differ per sentence (else every sentence would repeat the same random choices).
        seed = None if self.options.seed is None else self.options.seed + self.index
        self.current = self.tts.synthesis(self.sentences[self.index], replace(self.options, seed=seed, sentence=self.index))
        return True

    def step(self) -> bool:
        if self.current is None or self.current.done:
            if self.current is not None:
                self.usage.output_tokens += len(self.current.frames)
            if not self._next_sentence():
                self.current = None
                return True
        audio = self.current.step()
        if audio is not None and len(audio):
            self.usage.seconds += len(audio) / self.tts.sample_rate
            self.ticket.emit(AudioChunk(audio, self.tts.sample_rate, self.index))
        return False

    def result(self) -> SpeakUsage:
        return self.usage

    def close(self) -> None:
        self.current = None


def load(path: str | Path):
    """The `tts` kind's loader: (synthesizer, None), by config.json's model_type."""
    path = Path(path)
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        model_type = None
    if model_type == "qwen3_tts":
        from ominix.engine.audio.qwen3_tts import load_qwen3_tts

        return load_qwen3_tts(path), None
    if model_type is None and is_gpt_sovits_folder(path):
        from ominix.engine.audio.gpt_sovits_tts import load_gpt_sovits

        return load_gpt_sovits(path), None
    raise ValueError(f"{path}: text-to-speech model_type '{model_type}' is not supported (qwen3_tts, "
                     "or a GPT-SoVITS folder in the published layout)")  # fmt: skip


def is_gpt_sovits_folder(path: Path) -> bool:
    """lj1995/GPT-SoVITS' layout: a GPT .ckpt, a SoVITS .pth and chinese-hubert-base/ (no config.json)."""
    return (path / "chinese-hubert-base").is_dir() and any(path.rglob("*.ckpt")) and any(path.rglob("*.pth"))


def clip_sample_rate(path: Path) -> int:
    """The rate a reference clip is decoded at for voice cloning (read without loading the model)."""
    if not (path / "config.json").is_file() and is_gpt_sovits_folder(path):
        return 32000  # GPT-SoVITS: SoVITS' rate (cnhubert's 16 kHz is resampled from it)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return 24000
    return int((config.get("speaker_encoder_config") or {}).get("sample_rate") or 24000)


class CloneVoiceJob(StepJob):
    """One step: the speaker vector of a decoded reference clip (at `clip_sample_rate`)."""

    kind = "tts"

    def __init__(self, audio: np.ndarray, text: str | None = None):
        self.audio, self.text = audio, text  # the transcript: GPT-SoVITS needs it, Qwen3-TTS does not
        self.vector = None

    def begin(self, resident, ticket) -> None:
        self.tts: SpeechSynthesizer = resident.model
        if not self.tts.can_clone:
            raise VoiceError("this model cannot clone voices (Qwen3-TTS: use a Base model)")

    def step(self) -> bool:
        if getattr(self.tts, "needs_transcript", False):
            self.vector = self.tts.speaker_embedding(self.audio, self.text)
        else:
            self.vector = self.tts.speaker_embedding(self.audio)
        return True

    def result(self):
        return self.vector

    def close(self) -> None:
        self.audio = None
