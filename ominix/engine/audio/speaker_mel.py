"""The log-mel spectrogram Qwen3-TTS's speaker encoder reads (24 kHz, 1024-point STFT, hop 256,
128 Slaney mel bands up to 12 kHz, natural log with a 1e-5 floor), in numpy."""

from __future__ import annotations

import numpy as np


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


def slaney_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, Slaney-normalized (librosa's default)."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(audio: np.ndarray, sr: int = 24_000, n_fft: int = 1024, hop: int = 256,
            n_mels: int = 128, fmin: float = 0.0, fmax: float = 12_000.0) -> np.ndarray:  # fmt: skip
    """[frames, n_mels] float32 for a mono float waveform."""
    y = np.asarray(audio, dtype=np.float32)
    pad = (n_fft - hop) // 2
    if len(y) <= pad:
        raise ValueError("the reference clip is too short")
    y = np.pad(y, (pad, pad), mode="reflect")
    frames = 1 + (len(y) - n_fft) // hop
    if frames < 1:
        raise ValueError("the reference clip is too short")
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)  # periodic Hann
    spec = np.fft.rfft(y[idx] * window, axis=-1)
    mag = np.sqrt(spec.real.astype(np.float32) ** 2 + spec.imag.astype(np.float32) ** 2 + 1e-9)
    mel = mag @ slaney_filterbank(sr, n_fft, n_mels, fmin, fmax).T
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32)
