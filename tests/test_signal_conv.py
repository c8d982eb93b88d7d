"""The matmul convolutions of ominix/models/signal_conv.py against MLX's own nn.Conv1d /
nn.ConvTranspose1d with the same parameters (shapes the vocoders and waveform encoders use)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from ominix.models.signal_conv import MatmulConv1d, MatmulConvTranspose1d


@pytest.mark.parametrize("k, stride, padding, dilation", [(1, 1, 0, 1), (3, 1, 1, 1), (7, 1, 9, 3), (4, 2, 1, 1),
                                                          (10, 5, 0, 1)])  # fmt: skip
def test_matmul_conv1d_equals_conv1d(k, stride, padding, dilation):
    ours = MatmulConv1d(6, 5, k, stride=stride, padding=padding, dilation=dilation)
    ref = nn.Conv1d(6, 5, k, stride=stride, padding=padding, dilation=dilation)
    ref.update(ours.parameters())
    x = mx.random.normal((2, 37, 6), key=mx.random.key(k))
    np.testing.assert_allclose(np.array(ours(x)), np.array(ref(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k, stride, padding", [(4, 2, 1), (16, 8, 4), (11, 5, 3), (3, 3, 0)])
def test_matmul_conv_transpose1d_equals_conv_transpose1d(k, stride, padding):
    ours = MatmulConvTranspose1d(6, 5, k, stride=stride, padding=padding)
    ref = nn.ConvTranspose1d(6, 5, k, stride=stride, padding=padding)
    ref.update(ours.parameters())
    x = mx.random.normal((2, 13, 6), key=mx.random.key(k))
    np.testing.assert_allclose(np.array(ours(x)), np.array(ref(x)), rtol=1e-5, atol=1e-5)
