"""SAN-M blocks shared by FunASR's Paraformer and SenseVoice (self-attention with an FSMN memory).

Names follow FunASR's checkpoints (`self_attn.linear_q_k_v`, `self_attn.fsmn_block`,
`feed_forward.w_1`, `norm1`, ...). Convolutions keep PyTorch's (out, in/groups, kernel) layout so a
converted `model.pt` loads name for name with no transposes: the depthwise FSMN memory and the small
CIF convolution are written as sums over shifted copies of the input, which is also what runs
fastest for kernels this small.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

LN_EPS = 1e-12  # FunASR's LayerNorm


def layer_norm(dims: int, eps: float = LN_EPS) -> nn.LayerNorm:
    return nn.LayerNorm(dims, eps=eps)


def sinusoidal_encoding(length: int, depth: int, start: int = 1) -> mx.array:
    """FunASR's SinusoidalPositionEncoder: positions start at 1, [sin | cos] halves, the
    timescale step is log(10000) / (depth/2 - 1)."""
    positions = mx.arange(start, start + length, dtype=mx.float32)[:, None]
    step = math.log(10000.0) / (depth / 2 - 1)
    inv = mx.exp(mx.arange(depth // 2, dtype=mx.float32) * -step)[None, :]
    scaled = positions * inv
    return mx.concatenate([mx.sin(scaled), mx.cos(scaled)], axis=-1)


def shifted_sum(x: mx.array, weight: mx.array, left: int) -> mx.array:
    """Depthwise 1-D convolution along time of x (B, T, C) with weight (C, 1, K), zero padded with
    `left` frames before and K-1-left after (FunASR's ConstantPad1d + grouped Conv1d)."""
    k = weight.shape[-1]
    t = x.shape[1]
    padded = mx.pad(x, [(0, 0), (left, k - 1 - left), (0, 0)])
    taps = weight[:, 0, :].T  # (K, C)
    out = padded[:, 0:t] * taps[0]
    for i in range(1, k):
        out = out + padded[:, i:i + t] * taps[i]
    return out


class TorchConv1d(nn.Module):
    """Dense Conv1d with PyTorch's weight layout (out, in, K), stride 1, explicit zero padding."""

    def __init__(self, in_dims: int, out_dims: int, kernel: int, bias: bool = True):
        super().__init__()
        self.weight = mx.zeros((out_dims, in_dims, kernel))
        if bias:
            self.bias = mx.zeros((out_dims,))

    def __call__(self, x: mx.array, left: int, right: int) -> mx.array:
        k = self.weight.shape[-1]
        t = x.shape[1]
        padded = mx.pad(x, [(0, 0), (left, right), (0, 0)])
        t_out = t + left + right - k + 1
        out = padded[:, 0:t_out] @ self.weight[:, :, 0].T
        for i in range(1, k):
            out = out + padded[:, i:i + t_out] @ self.weight[:, :, i].T
        return out + self.bias if "bias" in self else out


class FSMNBlock(nn.Module):
    """Holds the depthwise `fsmn_block.weight` (C, 1, K); no bias."""

    def __init__(self, dims: int, kernel: int):
        super().__init__()
        self.weight = mx.zeros((dims, 1, kernel))


def fsmn_left_pad(kernel: int, shift: int) -> int:
    left = (kernel - 1) // 2
    return left + shift if shift > 0 else left


class SANMAttention(nn.Module):
    """MultiHeadedAttentionSANM: fused q/k/v projection, softmax attention, plus an FSMN memory
    (depthwise conv over v, with v added back) summed onto the attention output."""

    def __init__(self, heads: int, in_dims: int, dims: int, kernel: int, shift: int = 0):
        super().__init__()
        self.heads, self.dims = heads, dims
        self.linear_q_k_v = nn.Linear(in_dims, 3 * dims)
        self.linear_out = nn.Linear(dims, dims)
        self.fsmn_block = FSMNBlock(dims, kernel)
        self.left = fsmn_left_pad(kernel, shift)

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        b, t, _ = x.shape
        q, k, v = mx.split(self.linear_q_k_v(x), 3, axis=-1)
        memory = self.fsmn(v, mask)
        h, d = self.heads, self.dims // self.heads
        q, k, vh = (a.reshape(b, t, h, d).transpose(0, 2, 1, 3) for a in (q, k, v))
        bias = None if mask is None else mx.where(mask[:, None, None, :], 0.0, -mx.inf).astype(q.dtype)
        out = mx.fast.scaled_dot_product_attention(q, k, vh, scale=d ** -0.5, mask=bias)
        out = out.transpose(0, 2, 1, 3).reshape(b, t, self.dims)
        return self.linear_out(out) + memory

    def fsmn(self, v: mx.array, mask: mx.array | None) -> mx.array:
        if mask is not None:
            v = v * mask[:, :, None]
        out = shifted_sum(v, self.fsmn_block.weight, self.left) + v
        return out if mask is None else out * mask[:, :, None]


class FeedForward(nn.Module):
    """PositionwiseFeedForward: w_2(relu(w_1(x)))."""

    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dims, hidden)
        self.w_2 = nn.Linear(hidden, dims)

    def __call__(self, x: mx.array) -> mx.array:
        return self.w_2(nn.relu(self.w_1(x)))


class EncoderLayerSANM(nn.Module):
    """Pre-norm SAN-M layer; the first layer changes width (560 -> 512), so it has no residual
    around attention (FunASR adds the residual only when in_size == size)."""

    def __init__(self, in_dims: int, dims: int, heads: int, hidden: int, kernel: int, shift: int = 0,
                 eps: float = LN_EPS):
        super().__init__()
        self.residual = in_dims == dims
        self.self_attn = SANMAttention(heads, in_dims, dims, kernel, shift)
        self.feed_forward = FeedForward(dims, hidden)
        self.norm1 = layer_norm(in_dims, eps)
        self.norm2 = layer_norm(dims, eps)

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        attended = self.self_attn(self.norm1(x), mask)
        x = x + attended if self.residual else attended
        return x + self.feed_forward(self.norm2(x))
