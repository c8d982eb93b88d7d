"""Batched decoding: B sequences of different lengths go through the model as one [B, 1] step.

Each layer's `BatchKVCache` holds the sequences' keys/values left-padded, so that every row appends
its next token at the same column. Padding columns are hidden from attention by `make_mask()`, and
rope gets each row's own position through `offset` (a [B] array: `mx.fast.rope` takes a vector of
offsets), so a row sees exactly the positions and keys it would see decoding alone.

Sequences are prefilled alone (a plain KVCache per layer), then `join()` the batch; `leave()`
drops rows at once, and trims padding no row needs any more.
"""

from __future__ import annotations

import mlx.core as mx

from ominix.engine.llm.cache import KVCache, make_cache

STEP = 256  # columns are allocated in steps so decoding writes in place


def _round_up(n: int) -> int:
    return ((n + STEP - 1) // STEP) * STEP


class BatchKVCache:
    """One layer's keys/values for B sequences: [B, kv_heads, columns, head_dim], right-aligned at
    column `used`; row b holds `lengths[b]` tokens in columns [used - lengths[b], used)."""

    def __init__(self):
        self.keys = None
        self.values = None
        self.used = 0
        self.lengths: list[int] = []
        self._offsets = None

    # -- the interface the models use (Attention, attention_mask) --

    @property
    def offset(self) -> mx.array:
        """Each row's position of the next token, for rope."""
        if self._offsets is None:
            self._offsets = mx.array(self.lengths, dtype=mx.int32)
        return self._offsets

    def make_mask(self, length: int) -> mx.array:
        """[B, 1, length, used + length]: query j of row b sees its own keys up to itself."""
        pads = mx.array([self.used - n for n in self.lengths], dtype=mx.int32)[:, None, None]
        columns = mx.arange(self.used + length)[None, None, :]
        queries = mx.arange(self.used, self.used + length)[None, :, None]
        return ((columns >= pads) & (columns <= queries))[:, None]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        n = keys.shape[2]
        end = self.used + n
        if end > self.keys.shape[2]:
            self._resize(_round_up(end))
        self.keys[..., self.used : end, :] = keys
        self.values[..., self.used : end, :] = values
        self.used = end
        self.lengths = [length + n for length in self.lengths]
        self._offsets = None
        return self.keys[..., :end, :], self.values[..., :end, :]

    # -- membership --

    def _resize(self, capacity: int) -> None:
        B, H, _, Dk = self.keys.shape
        Dv = self.values.shape[3]
        keys = mx.zeros((B, H, capacity, Dk), self.keys.dtype)
        values = mx.zeros((B, H, capacity, Dv), self.values.dtype)
        keys[..., : self.used, :] = self.keys[..., : self.used, :]
        values[..., : self.used, :] = self.values[..., : self.used, :]
        self.keys, self.values = keys, values

    def join(self, keys: mx.array, values: mx.array) -> None:
        """Add one sequence ([1, H, n, D] keys/values of its whole history) as the last row."""
        n = keys.shape[2]
        if self.keys is None:
            self.keys, self.values, self.used, self.lengths = keys, values, n, [n]
            self._resize(_round_up(n + 1))
            self._offsets = None
            return
        if n > self.used:  # the newcomer is longer: shift every existing row right
            shift = n - self.used
            self.keys = _pad_left(self.keys[..., : self.used, :], shift)
            self.values = _pad_left(self.values[..., : self.used, :], shift)
            self.used = n
        capacity = max(self.keys.shape[2], _round_up(self.used + 1))
        if capacity != self.keys.shape[2]:
            self._resize(capacity)
        row_k = _pad_left(keys, self.used - n, capacity)
        row_v = _pad_left(values, self.used - n, capacity)
        self.keys = mx.concatenate([self.keys, row_k], axis=0)
        self.values = mx.concatenate([self.values, row_v], axis=0)
        self.lengths.append(n)
        self._offsets = None

    def leave(self, keep: list[int]) -> None:
        """Keep only the rows in `keep` (in that order)."""
        self.lengths = [self.lengths[i] for i in keep]
        self._offsets = None
        if not keep:
            self.keys = self.values = None
            self.used = 0
            return
        index = mx.array(keep, dtype=mx.int32)
        unused = self.used - max(self.lengths)  # padding columns every remaining row has
        self.keys = self.keys[index, :, unused:, :]
        self.values = self.values[index, :, unused:, :]
        self.used -= unused

    def row(self, b: int) -> tuple[mx.array, mx.array]:
        """Row b's keys and values without padding: [1, H, lengths[b], D]."""
        start = self.used - self.lengths[b]
        return self.keys[b : b + 1, :, start : self.used, :], self.values[b : b + 1, :, start : self.used, :]

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


def _pad_left(x: mx.array, pad: int, capacity: int | None = None) -> mx.array:
    """Prepend `pad` zero columns (axis 2), then append zeros up to `capacity` columns."""
    B, H, n, D = x.shape
    right = 0 if capacity is None else capacity - pad - n
    parts = [x]
    if pad:
        parts.insert(0, mx.zeros((B, H, pad, D), x.dtype))
    if right:
        parts.append(mx.zeros((B, H, right, D), x.dtype))
    return mx.concatenate(parts, axis=2) if len(parts) > 1 else x


def batchable(model) -> bool:
    """True when every layer uses a plain KVCache and no sliding window is applied by the mask:
    the only layout BatchKVCache reproduces exactly. Other models decode one sequence at a time."""
    args = getattr(model, "args", None)
    if getattr(args, "sliding_window", None) or getattr(args, "use_sliding_window", False):
        return False
    return all(type(c) is KVCache for c in make_cache(model))


class Batch:
    """The running decode batch of one model: its rows' caches, one BatchKVCache per layer."""

    def __init__(self, model):
        self.model = model
        self.caches = [BatchKVCache() for _ in model.layers]
        self.size = 0

    def join(self, layer_caches: list[KVCache]) -> int:
        """Append a prefilled sequence (its per-layer KVCache); returns its row."""
        for batch_cache, cache in zip(self.caches, layer_caches):
            keys, values = cache.state
            batch_cache.join(keys, values)
        self.size += 1
        return self.size - 1

    def leave(self, keep: list[int]) -> None:
        for cache in self.caches:
            cache.leave(keep)
        self.size = len(keep)

    def step(self, tokens: list[int]) -> mx.array:
        """Logits [B, vocab] for each row's next token (lazy)."""
        x = mx.array(tokens, dtype=mx.uint32)[:, None]
        return self.model(x, cache=self.caches)[:, -1, :]

    def row_state(self, b: int) -> list[tuple[mx.array, mx.array]]:
        return [cache.row(b) for cache in self.caches]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches)


def cache_from_state(state: list[tuple[mx.array, mx.array]], length: int | None = None) -> list[KVCache]:
    """Fresh per-layer KVCaches holding the first `length` tokens of `state` (copied on write:
    the next update allocates a new buffer, so the arrays in `state` are never changed)."""
    caches = []
    for keys, values in state:
        n = keys.shape[2] if length is None else length
        cache = KVCache()
        cache.keys, cache.values, cache.offset = keys[..., :n, :], values[..., :n, :], n
        caches.append(cache)
    return caches
