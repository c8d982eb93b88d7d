"""What every speech-recognition model gives the engine, whatever its family.

An ASR kind's loader returns an object with this shape (a `SpeechRecognizer`); the transcription
job cuts audio into windows and calls `transcribe_window` once per worker step, so a long file
never holds the inference thread for more than one window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000  # every recognizer takes 16 kHz mono float32 in [-1, 1]


@dataclass
class Word:
    start: float  # seconds from the start of the whole audio
    end: float
    word: str
    probability: float | None = None


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    compression_ratio: float | None = None
    token_logprobs: list[float] = field(default_factory=list)  # of its text tokens (Whisper)


@dataclass
class Transcript:
    text: str
    language: str | None
    duration: float  # seconds of audio
    segments: list[Segment] = field(default_factory=list)


class SpeechRecognizer(Protocol):
    """Compatible extension (optional): a recognizer that sets `reports_consumed = True` returns a
    third value, the seconds of the window it consumed; the next window starts there (Whisper
    stops at its last complete segment). Without it, the job cuts each window at its quietest
    moment near the end and the next window starts at the cut.

    Also optional: `window_steps(audio, **same options)`, a generator doing the same work one
    bounded unit per `next()` (the encoder, one decoder pass) and returning what
    `transcribe_window` returns; the job then runs one unit per worker step. It may yield a row
    request (an object with `.logits`, None until computed) instead: the job submits it to the
    recognizer's `batcher` and sends back the logits once `batcher.flush()` has run it, so
    concurrent requests to one model share each forward pass."""

    window_seconds: float  # the audio one call handles (Whisper: 30 s)

    def transcribe_window(self, audio: np.ndarray, *, offset: float = 0.0, language: str | None = None,
                          prompt: str | None = None, task: str = "transcribe", temperature: float = 0.0,
                          word_timestamps: bool = False) -> tuple[list[Segment], str | None]:
        """Recognise one window (16 kHz mono float32) starting `offset` seconds into the audio;
        return its segments (times global) and the language it detected or was given."""
        ...
