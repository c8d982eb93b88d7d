"""Audio in: every container the endpoint takes decodes to the same 16 kHz mono speech; bad input
gets its precise AudioError; long files stream with flat memory."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from ominix.engine.audio import decode as D
from ominix.engine.audio.types import SAMPLE_RATE
from tests.speech_fixtures import FORMATS, SENTENCES, encode, resample_linear, speak


@pytest.fixture(scope="module")
def speech():
    samples, rate = speak(SENTENCES[0])
    return samples, rate, resample_linear(samples, rate, SAMPLE_RATE)


def _best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 2400) -> float:
    """Largest normalised correlation of a and b over lags up to 150 ms (codec priming delays)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(0, max_lag, 8):
        for x, y in ((a[lag:lag + n], b[:n]), (a[:n], b[lag:lag + n])):
            best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_every_container_decodes_to_the_same_speech(tmp_path, speech, suffix):
    samples, rate, reference = speech
    path = encode(samples, rate, tmp_path / f"speech.{suffix}")
    audio = D.decode_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # Lossy codecs pad a frame or two at the ends; the length stays within 100 ms.
    assert abs(len(audio) - len(reference)) < 0.1 * SAMPLE_RATE
    assert np.abs(audio).max() <= 1.05
    assert _best_correlation(audio, reference) > 0.9
    # The same bytes from memory and from an open file decode identically.
    data = path.read_bytes()
    assert np.array_equal(D.decode_audio(data), audio)
    with open(path, "rb") as f:
        assert np.array_equal(D.decode_audio(f), audio)


def test_stereo_is_averaged_not_summed(tmp_path, speech):
    samples, rate, _ = speech
    mono = D.decode_audio(encode(samples, rate, tmp_path / "m.wav"))
    stereo = D.decode_audio(encode(samples, rate, tmp_path / "s.wav", channels=2))
    np.testing.assert_allclose(stereo, mono, atol=1e-4)


def test_info_reports_source_format(tmp_path, speech):
    samples, rate, _ = speech
    with D.open_audio(encode(samples, rate, tmp_path / "a.flac")) as stream:
        assert (stream.info.container, stream.info.codec, stream.info.sample_rate) == ("flac", "flac", rate)
        assert stream.info.duration == pytest.approx(len(samples) / rate, abs=0.05)


def _wav(path, samples, rate=SAMPLE_RATE):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def test_bad_input_gets_precise_errors(tmp_path, speech):
    samples, rate, _ = speech
    with pytest.raises(D.EmptyAudioError):
        D.decode_audio(b"")
    with pytest.raises(D.EmptyAudioError):
        D.decode_audio(tmp_path / "missing.wav")
    with pytest.raises(D.UnsupportedAudioError):
        D.decode_audio(b"this is plain text, not audio at all " * 50)
    png = b"\x89PNG\r\n\x1a\n" + bytes(2000)
    with pytest.raises(D.UnsupportedAudioError):
        D.decode_audio(png)
    with pytest.raises(D.EmptyAudioError):
        D.decode_audio(_wav(tmp_path / "zero.wav", np.zeros(0)))
    with pytest.raises(D.SilentAudioError):
        D.decode_audio(_wav(tmp_path / "silent.wav", np.zeros(SAMPLE_RATE * 2)))
    good = encode(samples, rate, tmp_path / "a.mp3").read_bytes()
    with pytest.raises(D.AudioTooLargeError):
        D.decode_audio(good, max_bytes=len(good) - 1)
    with pytest.raises(D.AudioTooLargeError):
        D.decode_audio(good, max_seconds=1.0)
    # Garbage after a valid header: FFmpeg finds no decodable audio.
    flac = encode(samples, rate, tmp_path / "b.flac").read_bytes()
    with pytest.raises(D.AudioError):
        D.decode_audio(flac[:64] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    # Every error is a ValueError with a stable API code.
    for cls in (D.EmptyAudioError, D.UnsupportedAudioError, D.CorruptAudioError, D.SilentAudioError,
                D.AudioTooLargeError):
        assert issubclass(cls, D.AudioError) and cls.code != D.AudioError.code


def test_truncated_file_keeps_what_decodes(tmp_path, speech):
    samples, rate, _ = speech
    data = encode(samples, rate, tmp_path / "a.mp3").read_bytes()
    audio = D.decode_audio(data[: len(data) // 2])
    assert 0.3 * len(samples) / rate < len(audio) / SAMPLE_RATE < 0.7 * len(samples) / rate


def test_long_audio_streams_in_windows_with_flat_memory(tmp_path):
    # 20 minutes of a tone whose frequency encodes the minute: windows come back in order.
    minutes, t = 20, np.arange(60 * SAMPLE_RATE) / SAMPLE_RATE
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for m in range(minutes):
            w.writeframes((0.3 * np.sin(2 * np.pi * (200 + 20 * m) * t) * 32767).astype(np.int16).tobytes())
    window = 30 * SAMPLE_RATE
    with D.open_audio(path) as stream:
        pos, biggest = 0, 0
        while not stream.at_end(pos):
            chunk = stream.read(pos, window)
            biggest = max(biggest, len(stream._buf))
            if pos % (60 * SAMPLE_RATE) == 0 and len(chunk) == window:
                m = pos // (60 * SAMPLE_RATE)
                freq = np.argmax(np.abs(np.fft.rfft(chunk))) * SAMPLE_RATE / len(chunk)
                assert freq == pytest.approx(200 + 20 * m, abs=1)
            pos += window
        assert stream.duration == pytest.approx(minutes * 60, abs=0.01)
    assert biggest < 2 * window  # never more than about one window held
