"""Kaldi-compatible log-mel filterbank features, low frame rate stacking and CMVN (numpy).

FunASR's WavFrontend (Paraformer, SenseVoice) computes Kaldi `compute-fbank-feats` features
(torchaudio.compliance.kaldi / kaldi-native-fbank) on int16-scaled samples, stacks 7 frames every
6 (LFR) and applies the global CMVN of `am.mvn`. This is that pipeline, frame for frame:
dither 0 (inference is deterministic), DC offset removal, pre-emphasis 0.97, the configured window,
zero padding to a power of two, power spectrum, Kaldi's triangular mel bins in the mel domain
(20 Hz to Nyquist), log with float epsilon floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

_EPS = np.finfo(np.float32).eps


@dataclass(frozen=True)
class FbankOptions:
    sample_rate: int = 16_000
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "hamming"
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist, Kaldi's convention
    lfr_m: int = 1
    lfr_n: int = 1

    @classmethod
    def from_frontend_conf(cls, conf: dict) -> "FbankOptions":
        return cls(sample_rate=int(conf.get("fs", 16_000)), n_mels=int(conf.get("n_mels", 80)),
                   frame_length_ms=float(conf.get("frame_length", 25)),
                   frame_shift_ms=float(conf.get("frame_shift", 10)),
                   window=str(conf.get("window", "hamming")),
                   lfr_m=int(conf.get("lfr_m", 1)), lfr_n=int(conf.get("lfr_n", 1)))

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()


@lru_cache(maxsize=8)
def _window(kind: str, n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    a = 2 * np.pi / (n - 1)
    if kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "hanning":
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "povey":
        w = (0.5 - 0.5 * np.cos(a * i)) ** 0.85
    elif kind == "rectangular":
        w = np.ones(n)
    elif kind == "blackman":
        w = 0.42 - 0.5 * np.cos(a * i) + 0.08 * np.cos(2 * a * i)
    else:
        raise ValueError(f"unknown fbank window '{kind}'")
    return w


def _mel(f):
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


@lru_cache(maxsize=8)
def mel_banks(n_mels: int, fft_size: int, sample_rate: int, low: float, high: float) -> np.ndarray:
    """Kaldi's MelBanks as an (fft_size//2 + 1, n_mels) matrix (the Nyquist row is zero)."""
    nyquist = sample_rate / 2
    high = high if high > 0 else nyquist + high
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    fft_mel = _mel(np.arange(fft_size // 2) * sample_rate / fft_size)[:, None]
    left = mel_low + np.arange(n_mels)[None, :] * delta
    center, right = left + delta, left + 2 * delta
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([banks, np.zeros((1, n_mels))]).astype(np.float32)


def fbank(audio: np.ndarray, opts: FbankOptions = FbankOptions()) -> np.ndarray:
    """(frames, n_mels) log-mel features of 16 kHz float audio in [-1, 1] (snip_edges=True)."""
    x = np.asarray(audio, dtype=np.float32) * 32768.0  # Kaldi works on int16-scaled samples
    size, shift = opts.window_size, opts.window_shift
    if x.shape[0] < size:
        return np.zeros((0, opts.n_mels), dtype=np.float32)
    n = 1 + (x.shape[0] - size) // shift
    frames = np.lib.stride_tricks.as_strided(x, shape=(n, size), strides=(x.strides[0] * shift, x.strides[0]))
    frames = frames.astype(np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    # pre-emphasis with Kaldi's first-sample rule: x[0] -= k * x[0]
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - opts.preemphasis * previous) * _window(opts.window, size)
    spectrum = np.fft.rfft(frames, n=opts.fft_size, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    banks = mel_banks(opts.n_mels, opts.fft_size, opts.sample_rate, opts.low_freq, opts.high_freq)
    return np.log(np.maximum(power @ banks, _EPS)).astype(np.float32)


def apply_lfr(feats: np.ndarray, m: int, n: int) -> np.ndarray:
    """Stack m frames every n (FunASR's LFR): (m-1)//2 copies of the first frame in front, the
    last frame repeated at the end; ceil(T / n) output frames of m * dim."""
    if m == 1 and n == 1:
        return feats
    t, dim = feats.shape
    if t == 0:
        return np.zeros((0, m * dim), dtype=feats.dtype)
    out_frames = -(-t // n)
    left = (m - 1) // 2
    need = (out_frames - 1) * n + m  # rows the last window reaches into
    index = np.clip(np.arange(need) - left, 0, t - 1)
    padded = feats[index]
    starts = np.arange(out_frames) * n
    return padded[starts[:, None] + np.arange(m)[None, :]].reshape(out_frames, m * dim)


def load_cmvn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of a Kaldi nnet `am.mvn` (<AddShift> and <Rescale> LearnRateCoef rows)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    found = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        if head and head[0] in ("<AddShift>", "<Rescale>"):
            items = lines[i + 1].split()
            if items and items[0] == "<LearnRateCoef>":
                found[head[0]] = np.array(items[3:-1], dtype=np.float32)
    if set(found) != {"<AddShift>", "<Rescale>"}:
        raise ValueError(f"{Path(path).name} has no <AddShift>/<Rescale> rows (not a FunASR am.mvn)")
    return found["<AddShift>"], found["<Rescale>"]


def frontend(audio: np.ndarray, opts: FbankOptions, cmvn: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """WavFrontend: fbank -> LFR -> (x + shift) * scale."""
    feats = apply_lfr(fbank(audio, opts), opts.lfr_m, opts.lfr_n)
    if cmvn is not None:
        shift, scale = cmvn
        dim = feats.shape[1]
        feats = (feats + shift[:dim]) * scale[:dim]
    return feats.astype(np.float32)
