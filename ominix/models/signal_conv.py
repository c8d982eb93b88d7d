"""Convolutions for long signals (vocoders, waveform encoders) computed as matmuls: on a CPU MLX's
direct convolution is 10-50x slower for long inputs, and a matmul is what a GPU does best anyway.
Same parameters as nn.Conv1d / nn.ConvTranspose1d, so checkpoints load unchanged."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class MatmulConv1d(nn.Conv1d):
    """nn.Conv1d (groups 1) computed as one matmul over the k shifted copies of the input (im2col):
    on a CPU MLX's direct convolution is 10-50x slower for long signals (vocoders, waveform
    encoders), and a matmul is what a GPU does best anyway. Same parameters (`weight` [out, k, in],
    `bias`), so checkpoints load unchanged."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: bool = True):  # fmt: skip
        super().__init__(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
        self.k, self.s, self.p, self.d = k, stride, padding, dilation

    def __call__(self, x: mx.array) -> mx.array:
        w = self.weight
        if self.k == 1 and self.s == 1:
            out = x @ w[:, 0].T
        else:
            if self.p:
                x = mx.pad(x, [(0, 0), (self.p, self.p), (0, 0)])
            n = (x.shape[1] - self.d * (self.k - 1) - 1) // self.s + 1
            taps = [x[:, i * self.d : i * self.d + (n - 1) * self.s + 1 : self.s] for i in range(self.k)]
            out = mx.concatenate(taps, axis=-1) @ w.reshape(w.shape[0], -1).T
        return out + self.bias if "bias" in self else out


class MatmulConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d as one matmul and an overlap-add: each input step gives k output samples
    starting at its step x stride (k padded up to a multiple of the stride), then `padding` is
    trimmed from both ends, as torch does."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, padding: int = 0):
        super().__init__(cin, cout, k, stride=stride, padding=padding)
        self.k, self.s, self.p = k, stride, padding

    def __call__(self, x: mx.array) -> mx.array:
        B, T, _ = x.shape
        k, s, w = self.k, self.s, self.weight  # [out, k, in]
        blocks = -(-k // s)
        y = (x @ w.reshape(-1, w.shape[-1]).T).reshape(B, T, w.shape[0], k)
        y = mx.pad(y, [(0, 0), (0, 0), (0, 0), (0, blocks * s - k)])
        out = 0
        for c in range(blocks):  # block c of each step lands c steps later
            part = y[..., c * s : (c + 1) * s]
            out = out + mx.pad(part, [(0, 0), (c, blocks - 1 - c), (0, 0), (0, 0)])
        out = out.transpose(0, 1, 3, 2).reshape(B, (T + blocks - 1) * s, -1)
        length = (T - 1) * s + k - 2 * self.p
        return out[:, self.p : self.p + length] + self.bias
