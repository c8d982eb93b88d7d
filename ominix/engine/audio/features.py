"""Speech front ends computed from first principles (no downloaded filter files).

Whisper's log-mel spectrogram: 25 ms Hann windows every 10 ms (n_fft 400, hop 160 at 16 kHz),
power spectrum, Slaney-normalised mel filters (librosa's default, 80 or 128 bands up to 8 kHz),
log10, floored 8 (80 dB) below the peak and scaled to about [-1, 1].
"""

from __future__ import annotations

import functools

import numpy as np

from ominix.engine.audio.types import SAMPLE_RATE

N_FFT = 400
HOP = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # one Whisper window
N_FRAMES = N_SAMPLES // HOP  # 3000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 100


def _hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f = np.asarray(f, np.float64)
    mel = f / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step, mel)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)  # periodic


def log_mel(audio: np.ndarray, n_mels: int = 80, pad_to: int | None = N_SAMPLES) -> np.ndarray:
    """[frames, n_mels] float32 log-mel features of 16 kHz mono audio, zero-padded to `pad_to`
    samples (one 30 s window: 3000 frames)."""
    audio = np.asarray(audio, np.float32)
    if pad_to is not None:
        audio = np.pad(audio[:pad_to], (0, max(0, pad_to - len(audio))))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")  # centred frames, like torch.stft
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, N_FFT), (padded.strides[0] * HOP, padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * _hann(N_FFT), axis=-1)) ** 2
    power = power[:-1]  # Whisper drops the last frame (3001 -> 3000 per window)
    mel = power.astype(np.float32) @ mel_filters(n_mels).T
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)
