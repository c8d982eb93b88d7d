"""KV caches. Keys/values are preallocated in steps so decoding appends in place instead of
concatenating (which would copy the whole cache every token)."""

from __future__ import annotations

import mlx.core as mx

from ominix.models.layers import CacheSpec


class KVCache:
    """Per-layer cache of keys and values shaped [batch, kv_heads, tokens, head_dim]."""

    step = 256

    def __init__(self):
        self.keys = None
        self.values = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        prev = self.offset
        needed = prev + keys.shape[2]
        if self.keys is None or needed > self.keys.shape[2]:
            self._grow(keys, values, needed)
        self.offset = needed
        self.keys[..., prev:needed, :] = keys
        self.values[..., prev:needed, :] = values
        return self.keys[..., :needed, :], self.values[..., :needed, :]

    def _grow(self, keys: mx.array, values: mx.array, needed: int) -> None:
        B, H, _, Dk = keys.shape
        Dv = values.shape[3]
        capacity = ((needed + self.step - 1) // self.step) * self.step
        new_k = mx.zeros((B, H, capacity, Dk), keys.dtype)
        new_v = mx.zeros((B, H, capacity, Dv), values.dtype)
        if self.keys is not None and self.offset:
            new_k[..., : self.offset, :] = self.keys[..., : self.offset, :]
            new_v[..., : self.offset, :] = self.values[..., : self.offset, :]
        self.keys, self.values = new_k, new_v

    def trim(self, n: int) -> int:
        """Drop the last n tokens (used when a prompt-cache prefix is reused)."""
        n = min(self.offset, n)
        self.offset -= n
        return n

    @property
    def state(self) -> tuple[mx.array, mx.array] | tuple[()]:
        if self.keys is None:
            return ()
        return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


class RotatingKVCache:
    """Sliding-window cache: keeps only the last `window - 1` tokens between calls.

    Each call returns the kept tokens followed by the new ones, in position order, and
    `make_mask(length)` (used before the call) says which of them each new query may see: keys at
    or before it and fewer than `window` positions back. That equals full attention restricted to
    the window for single tokens, whole prompts longer than the window, and chunked prefill.
    """

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"sliding window must be >= 1, got {window}")
        self.window = window
        self.keys = None
        self.values = None
        self.offset = 0

    @property
    def _kept(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def make_mask(self, length: int) -> mx.array | None:
        if length == 1:
            return None  # at most window - 1 keys are kept, so one query sees them all
        kept = self._kept
        query_pos = mx.arange(self.offset, self.offset + length)[:, None]
        key_pos = mx.arange(self.offset - kept, self.offset + length)[None]
        return (key_pos <= query_pos) & (query_pos - key_pos < self.window)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.offset += keys.shape[2]
        if self.keys is not None:
            keys = mx.concatenate([self.keys, keys], axis=2)
            values = mx.concatenate([self.values, values], axis=2)
        keep = min(self.window - 1, keys.shape[2])
        start = keys.shape[2] - keep
        self.keys, self.values = keys[..., start:, :], values[..., start:, :]
        return keys, values

    def trim(self, n: int) -> int:
        """Tokens dropped from the window cannot be restored, so nothing can be trimmed."""
        return 0

    @property
    def state(self) -> tuple[mx.array, mx.array] | tuple[()]:
        return () if self.keys is None else (self.keys, self.values)

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


class RecurrentStateCache:
    """Fixed-size state of a linear-attention layer ([batch, heads, key_dim, value_dim]) and the
    number of tokens it has absorbed; memory does not grow with the sequence."""

    def __init__(self):
        self.matrix = None
        self.offset = 0

    def trim(self, n: int) -> int:
        return 0  # a recurrent state cannot forget tokens

    @property
    def state(self) -> tuple[mx.array] | tuple[()]:
        return () if self.matrix is None else (self.matrix,)

    @property
    def nbytes(self) -> int:
        return 0 if self.matrix is None else self.matrix.nbytes


def make_cache(model) -> list:
    """One cache per layer, of the kind each layer asks for through `model.cache_specs()`
    (models without it use a plain KVCache everywhere)."""
    if hasattr(model, "cache_specs"):
        specs = model.cache_specs()
    else:
        specs = [CacheSpec()] * len(model.layers)
    return [_cache_for(spec) for spec in specs]


def _cache_for(spec: CacheSpec):
    if spec.recurrent:
        return RecurrentStateCache()
    if spec.window is not None:
        return RotatingKVCache(spec.window)
    return KVCache()
