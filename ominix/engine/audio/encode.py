"""Synthesized audio -> the bytes a client asked for, chunk by chunk (PyAV for compressed formats).

`AudioEncoder(fmt, sample_rate, speed)`: `feed(samples)` returns the bytes ready so far, `finish()`
the rest, so a stream can send audio as it is made. Formats (OpenAI's): mp3 (LAME), opus (in Ogg),
aac (ADTS), flac, wav (16-bit PCM; a streamed wav has the 0xFFFFFFFF "unknown length" sizes that
players accept), pcm (raw 16-bit little-endian mono at the model's rate, 24 kHz for OpenAI).

Speed is a time-stretch that keeps the pitch: FFmpeg's `atempo` filter (WSOLA), chained because one
instance covers 0.5-2.0. Plain numpy and PyAV: no MLX, safe to run off the inference thread.
"""

from __future__ import annotations

import struct

import av
import numpy as np

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
        "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
_CONTAINERS = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"),
               "flac": ("flac", "flac")}  # fmt: skip
MIN_SPEED, MAX_SPEED = 0.25, 4.0


def _int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """RIFF/WAVE header for 16-bit mono; data_bytes=None writes the streaming 'unknown' sizes."""
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate,
            sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", size))  # fmt: skip


class _Collect:
    """A write-only file for PyAV: keeps what the muxer writes until the encoder hands it out."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class _Tempo:
    """Pitch-preserving time-stretch by `speed` through a chain of atempo filters."""

    def __init__(self, sample_rate: int, speed: float):
        factors = []
        while speed > 2.0:
            factors.append(2.0)
            speed /= 2.0
        while speed < 0.5:
            factors.append(0.5)
            speed /= 0.5
        factors.append(speed)
        self.graph = av.filter.Graph()
        node = self.graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono")
        for f in factors:
            nxt = self.graph.add("atempo", f"{f:.6f}")
            node.link_to(nxt)
            node = nxt
        sink = self.graph.add("abuffersink")
        node.link_to(sink)
        self.graph.configure()
        self.rate = sample_rate
        self.pts = 0

    def _drain(self) -> np.ndarray:
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self.pts
        self.pts += len(samples)
        self.graph.push(frame)
        return self._drain()

    def finish(self) -> np.ndarray:
        self.graph.push(None)
        return self._drain()


class AudioEncoder:
    def __init__(self, fmt: str, sample_rate: int, speed: float = 1.0, streaming: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(FORMATS)}; got '{fmt}'")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}; got {speed}")
        self.fmt, self.rate, self.streaming = fmt, sample_rate, streaming
        self.tempo = _Tempo(sample_rate, speed) if abs(speed - 1.0) > 1e-6 else None
        self.samples_out = 0  # after the time-stretch
        self._pcm: list[bytes] = []  # a non-streamed wav waits for its length
        self._header_sent = False
        if fmt in _CONTAINERS:
            container, codec = _CONTAINERS[fmt]
            self._sink = _Collect()
            self._container = av.open(self._sink, "w", format=container)
            self._stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")

    def _encode(self, samples: np.ndarray, last: bool) -> bytes:
        self.samples_out += len(samples)
        if self.fmt == "pcm":
            return _int16(samples).tobytes()
        if self.fmt == "wav":
            data = _int16(samples).tobytes()
            if not self.streaming:
                self._pcm.append(data)
                if not last:
                    return b""
                body = b"".join(self._pcm)
                return wav_header(self.rate, len(body)) + body
            head = b"" if self._header_sent else wav_header(self.rate, None)
            self._header_sent = True
            return head + data
        if len(samples):
            frame = av.AudioFrame.from_ndarray(_int16(samples)[None], format="s16", layout="mono")
            frame.sample_rate = self.rate
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        if last:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.take()

    def feed(self, samples: np.ndarray) -> bytes:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.tempo is not None and len(samples):
            samples = self.tempo.feed(samples)
        return self._encode(samples, last=False)

    def finish(self) -> bytes:
        tail = self.tempo.finish() if self.tempo is not None else np.zeros(0, np.float32)
        return self._encode(tail, last=True)

    @property
    def seconds(self) -> float:
        return self.samples_out / self.rate
