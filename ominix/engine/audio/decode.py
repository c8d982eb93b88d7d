"""Any audio file -> 16 kHz mono float32, decoded and resampled by PyAV (its own FFmpeg).

`AudioStream` decodes lazily: a transcription job asks for the samples of one window at a time and
the stream keeps only what has not been consumed yet, so an hour of audio never sits in memory.
`open_audio` checks a file up front (container, an audio stream, the first frames decode) so an
HTTP handler can answer 400 before any work is queued. Every failure is an `AudioError` subclass
with a stable `code` (the API's error code) and a message a person can act on.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ominix.engine.audio.types import SAMPLE_RATE

MAX_AUDIO_BYTES = 1 << 30  # 1 GiB of compressed audio per request unless the caller says otherwise
MAX_AUDIO_SECONDS = 4 * 3600.0
SILENCE_PEAK = 1e-4  # below this peak amplitude (-80 dBFS) nothing can be heard


class AudioError(ValueError):
    """Audio that cannot be transcribed; the API answers 400 with `code`."""

    code = "invalid_audio"


class EmptyAudioError(AudioError):
    code = "empty_audio"


class UnsupportedAudioError(AudioError):
    code = "unsupported_audio_format"


class CorruptAudioError(AudioError):
    code = "corrupt_audio"


class SilentAudioError(AudioError):
    code = "silent_audio"


class AudioTooLargeError(AudioError):
    code = "audio_too_large"


Source = str | os.PathLike | bytes | BinaryIO


@dataclass
class AudioInfo:
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None  # seconds, from the container (None when it does not say)


def _size_of(source: Source) -> int:
    if isinstance(source, (bytes, bytearray)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stat().st_size
    here = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(here)
    return size


def _open_container(source: Source, max_bytes: int):
    import av  # imported here: `ominix list` and friends never pay for FFmpeg

    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise EmptyAudioError(f"no such audio file: {source}")
    size = _size_of(source)
    if size == 0:
        raise EmptyAudioError("the audio file is empty (0 bytes)")
    if size > max_bytes:
        raise AudioTooLargeError(f"the audio file is {size:,} bytes; the limit is {max_bytes:,}")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    try:
        container = av.open(source if not isinstance(source, os.PathLike) else str(source), mode="r",
                            metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        raise UnsupportedAudioError("not a recognised audio or video file (FFmpeg could not "
                                    "identify its format)") from e
    except (av.error.FFmpegError, OSError) as e:
        raise CorruptAudioError(f"the file could not be opened as audio: {e}") from e
    if not container.streams.audio:
        container.close()
        raise UnsupportedAudioError(f"the {container.format.name} file has no audio stream")
    return container


class AudioStream:
    """16 kHz mono float32 samples of one file, decoded on demand, read front to back.

    `read(start, n)` returns samples [start, start + n) (fewer at the end); `start` may only move
    forward, and everything before it is dropped, so memory stays at about one window.
    """

    def __init__(self, source: Source, *, max_bytes: int = MAX_AUDIO_BYTES,
                 max_seconds: float = MAX_AUDIO_SECONDS):
        import av

        self._container = _open_container(source, max_bytes)
        self._stream = self._container.streams.audio[0]
        ctx = self._stream.codec_context
        duration = None
        if self._stream.duration is not None and self._stream.time_base:
            duration = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration:
            duration = self._container.duration / 1_000_000
        self.info = AudioInfo(self._container.format.name, ctx.name, ctx.sample_rate or 0,
                              ctx.channels or 0, duration)
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        # Planar float in the source layout; channels are averaged here, because FFmpeg's mono
        # downmix adds them at -3 dB each and can push stereo speech past full scale.
        self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        self._frames = self._decode_frames()
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self._done = False
        self.peak = 0.0  # loudest sample seen so far
        self.decoded = 0  # samples decoded so far
        # Decode the first chunk now: a broken file fails here, before any job is queued.
        self._fill(SAMPLE_RATE)
        if self._done and self.decoded == 0:
            raise EmptyAudioError("the audio stream holds no samples")

    def _decode_frames(self) -> Iterator[np.ndarray]:
        import av

        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    frame.pts = None  # let the resampler count samples, not trust timestamps
                    for out in self._resampler.resample(frame):
                        yield out.to_ndarray().mean(axis=0)
            for out in self._resampler.resample(None):
                yield out.to_ndarray().mean(axis=0)
        except av.error.FFmpegError as e:
            if self.decoded == 0:
                raise CorruptAudioError(f"the audio could not be decoded: {e}") from e
            # A damaged tail: keep what decoded (FFmpeg's own tools do the same).

    def _fill(self, want_end: int) -> None:
        """Decode until the buffer reaches sample `want_end` or the audio ends."""
        parts = [self._buf]
        have = self._buf_start + len(self._buf)
        while have < want_end and not self._done:
            chunk = next(self._frames, None)
            if chunk is None:
                self._done = True
                break
            chunk = chunk.astype(np.float32, copy=False)
            if len(chunk):
                self.peak = max(self.peak, float(np.abs(chunk).max()))
            parts.append(chunk)
            have += len(chunk)
            self.decoded += len(chunk)
            if self.decoded > self.max_samples:
                raise AudioTooLargeError(f"the audio is longer than the limit of "
                                         f"{self.max_samples / SAMPLE_RATE:,.0f} s")
        self._buf = np.concatenate(parts) if len(parts) > 1 else parts[0]

    def read(self, start: int, n: int) -> np.ndarray:
        if start < self._buf_start:
            raise ValueError("AudioStream reads only move forward")
        self._fill(start + n)
        drop = min(start - self._buf_start, len(self._buf))
        self._buf = self._buf[drop:]
        self._buf_start += drop
        return self._buf[:n].copy()

    def at_end(self, position: int) -> bool:
        """True when no samples exist at or after `position`."""
        self._fill(position + 1)
        return self._done and position >= self._buf_start + len(self._buf)

    @property
    def duration(self) -> float | None:
        """Seconds of audio: exact once decoding finished, the container's figure before."""
        if self._done:
            return self.decoded / SAMPLE_RATE
        return self.info.duration

    def close(self) -> None:
        self._frames.close()
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_audio(source: Source, **limits) -> AudioStream:
    """Open and check an audio file (raises AudioError); read windows from the result."""
    return AudioStream(source, **limits)


def decode_audio(source: Source, *, reject_silence: bool = True, **limits) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array (for short clips; jobs stream instead)."""
    with AudioStream(source, **limits) as stream:
        stream._fill(stream.max_samples + 1)
        audio = stream.read(0, stream.decoded)
        if reject_silence and stream.peak < SILENCE_PEAK:
            raise SilentAudioError("the audio is silent (no sample above -80 dBFS)")
    return audio
