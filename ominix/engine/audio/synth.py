"""What every text-to-speech model gives the engine, whatever its family.

A TTS kind's loader returns a `SpeechSynthesizer`; the speak job (engine/audio/speak.py) calls
`synthesis(text, options)` once per sentence and then `step()` once per worker turn, so a long text
never holds the inference thread for more than one frame or one decoded chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class VoiceError(ValueError):
    """The request names a voice, language or reference clip this model cannot use (a 400)."""


@dataclass
class SynthesisOptions:
    voice: str | None = None  # a named speaker of the checkpoint
    voice_embedding: np.ndarray | None = None  # a cloned voice's speaker vector (instead of `voice`)
    instructions: str | None = None  # style control ("speak slowly and sadly")
    language: str | None = None  # None / "auto": let the model decide
    temperature: float | None = None  # None: the checkpoint's generation_config; 0: greedy
    seed: int | None = None
    max_frames: int | None = None
    non_streaming_text: bool = True  # the whole text in the prompt (qwen-tts' default for named voices)
    first_chunk_frames: int = 6  # audio frames in the first decoded chunk (short: first audio sooner)
    chunk_frames: int = 24  # and in each later chunk
    sentence: int = 0  # which sentence of the request this is (set by the speak job)


class Synthesis(Protocol):
    done: bool

    def step(self) -> np.ndarray | None:
        """One bounded unit; new float32 samples at the synthesizer's rate, or None."""
        ...


class SpeechSynthesizer(Protocol):
    sample_rate: int
    voices: list[str]
    can_clone: bool

    def synthesis(self, text: str, options: SynthesisOptions) -> Synthesis: ...

    def speaker_embedding(self, audio: np.ndarray) -> np.ndarray:
        """A voice vector from a mono clip at `sample_rate` (voice cloning)."""
        ...
