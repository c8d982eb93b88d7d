"""Prompt cache: keys/values of token sequences already computed, reused for shared prefixes.

A second chat turn repeats the whole first turn; many requests share one long system prompt. After a
sequence finishes, its keys/values (prompt + generated tokens) are stored here under the model and
token ids. A new prompt takes the entry with the longest common token prefix and prefills only the
rest. Entries are bounded by bytes and evicted least recently used. Stored arrays are never changed:
a reused prefix is copied into a fresh cache on its first write (engine/batch.cache_from_state).

Runs on the inference thread only (it holds MLX arrays); `stats()` may be read from anywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MIN_REUSE = 4  # shorter common prefixes are not worth a lookup hit


@dataclass
class Entry:
    model: str
    tokens: np.ndarray  # int64 token ids whose keys/values are stored
    state: list  # per layer (keys, values), each [1, kv_heads, len(tokens), head_dim]
    nbytes: int


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class PromptCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # LRU order, oldest first
        self._next = 0
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, model: str, tokens: list[int]) -> tuple[int, list | None]:
        """(n, state): the longest stored prefix of `tokens` for `model`, at most len(tokens) - 1
        tokens (the last prompt token must run to give logits). (0, None) on a miss."""
        ids = np.asarray(tokens, dtype=np.int64)
        best_key, best = None, 0
        for key, entry in self._entries.items():
            if entry.model == model:
                n = common_prefix(entry.tokens, ids)
                if n > best:
                    best_key, best = key, n
        best = min(best, len(tokens) - 1)
        if best_key is None or best < MIN_REUSE:
            self.misses += 1
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        entry = self._entries[best_key]
        return best, [(k[..., :best, :], v[..., :best, :]) for k, v in entry.state]

    def store(self, model: str, tokens: list[int], state: list) -> None:
        """Keep `state` (per-layer keys/values of exactly `tokens`), replacing entries it extends."""
        if self.max_bytes <= 0 or len(tokens) < MIN_REUSE:
            return
        nbytes = sum(k.nbytes + v.nbytes for k, v in state)
        if nbytes > self.max_bytes:
            return
        ids = np.asarray(tokens, dtype=np.int64)
        for key, entry in list(self._entries.items()):
            # An entry that is a prefix of the new one is redundant: the new one answers its lookups.
            if entry.model == model and len(entry.tokens) <= len(ids) and common_prefix(entry.tokens, ids) == len(entry.tokens):
                self._drop(key)
        self._entries[self._next] = Entry(model, ids, state, nbytes)
        self._next += 1
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.nbytes -= entry.nbytes

    def forget_model(self, model: str) -> None:
        """Drop a model's entries (it was unloaded)."""
        for key in [k for k, e in self._entries.items() if e.model == model]:
            self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def stats(self) -> dict:
        return {"entries": len(self._entries), "bytes": self.nbytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "reused_tokens": self.reused_tokens}
