"""Chunked attention (ominix/models/layers.py) equals one attention call over all queries."""

import mlx.core as mx
import numpy as np
import pytest

from ominix.models import layers


@pytest.mark.parametrize("mask_kind", [None, "keys", "full"])
def test_chunked_attention_matches_unchunked(monkeypatch, mask_kind):
    b, h, n, d = 2, 3, 37, 16
    q, k, v = (mx.random.normal((b, h, n, d), key=mx.random.key(i)) for i in range(3))
    mask = None
    if mask_kind == "keys":  # padding keys, broadcast over queries
        mask = (mx.arange(n)[None] < mx.array([n, 30])[:, None])[:, None, None, :]
    elif mask_kind == "full":
        mask = mx.arange(n)[:, None] >= mx.arange(n)[None]
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5, mask=mask)
    monkeypatch.setattr(layers, "ATTENTION_CHUNK_SCORES", b * h * n * 5)  # 5 query rows a chunk
    got = layers.chunked_attention(q, k, v, d**-0.5, mask)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-6)


def test_chunked_attention_bounds_the_score_memory(monkeypatch):
    """Peak memory of a long attention drops with the chunk size (the point of chunking)."""
    b, h, n, d = 1, 4, 2048, 32
    q, k, v = (mx.random.normal((b, h, n, d), key=mx.random.key(i)) for i in range(3))
    mx.eval(q, k, v)
    peaks = []
    for scores in (b * h * n * n, b * h * n * 128):
        monkeypatch.setattr(layers, "ATTENTION_CHUNK_SCORES", scores)
        mx.clear_cache()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        mx.eval(layers.chunked_attention(q, k, v, d**-0.5))
        peaks.append(mx.get_peak_memory() - base)
    full_scores = b * h * n * n * 4
    assert peaks[0] >= full_scores  # unchunked: the whole score matrix exists at once
    assert peaks[1] < full_scores / 2, peaks
