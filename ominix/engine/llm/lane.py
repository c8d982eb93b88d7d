"""One resident LLM's work on the worker: sequences prefilling, and its running decode batch.

Each worker turn calls `turn()` once per model with work, so one model's long prompt never stalls
another model's decoding. A turn is bounded: one prefill chunk of the oldest new sequence (reusing
a cached prefix from the prompt cache), then one decode step for the whole batch: [B, 1] tokens
in one forward (batch.py), each row sampled with its own parameters, seed, penalties and logits
processors. A sequence gives exactly the tokens it would give decoding alone
(tests/test_batching.py).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import mlx.core as mx

from ominix.engine.llm.batch import Batch, batchable, cache_from_state
from ominix.engine.llm.cache import make_cache
from ominix.engine.llm.jobs import ChoiceDone


@dataclass
class LaneShared:
    """What every model's lane shares: the prompt cache, chunking, counters and metrics."""

    prompt_cache: object
    prefill_step_size: int
    metrics: object = None  # optional: .ttft / .token_latency histograms (api/metrics.py)
    stats: dict = field(default_factory=lambda: {"prompt_tokens": 0, "prefill_tokens": 0, "cached_tokens": 0,
                                                 "generated_tokens": 0, "decode_steps": 0})


class LLMLane:
    def __init__(self, resident, shared: LaneShared, on_finished):
        self.resident = resident
        self.shared = shared
        self.on_finished = on_finished  # called with each sequence that ended normally
        self.batchable = batchable(resident.model)
        self.batch = Batch(resident.model) if self.batchable else None
        self.prefilling: deque = deque()
        self.decoding: list = []  # row order of the batch

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def add(self, sequences) -> None:
        self.prefilling.extend(sequences)

    def turn(self) -> None:
        if self.prefilling:
            self._prefill_chunk()
        if self.decoding:
            self._decode_step()
        self.drop_finished()

    # -- prefill --

    def _prefill_chunk(self) -> None:
        seq = self.prefilling[0]
        model = self.resident.model
        if seq.cache is None:
            self._setup_cache(seq)
        if len(seq.todo) > 1:  # one chunk, then let the running batch take a step
            n = min(self.shared.prefill_step_size, len(seq.todo) - 1)
            model(mx.array(seq.todo[:n], dtype=mx.uint32)[None], cache=seq.cache)
            mx.eval([c.state for c in seq.cache])
            self.shared.stats["prefill_tokens"] += n
            seq.todo = seq.todo[n:]
            return
        logits = model(mx.array(seq.todo, dtype=mx.uint32)[None], cache=seq.cache)[:, -1, :]
        self.shared.stats["prefill_tokens"] += 1
        out = seq.sampler(logits)
        mx.eval(out.arrays())
        self.prefilling.popleft()
        self._accept(seq, out)
        if seq.finish is None:
            if self.batchable:
                self.batch.join(seq.cache)
                seq.cache = None
            self.decoding.append(seq)
        else:
            self._store_prefix(seq, [c.state for c in seq.cache])
            self.on_finished(seq)

    def _setup_cache(self, seq) -> None:
        n, state = (0, None)
        if self.batchable:
            n, state = self.shared.prompt_cache.lookup(self.resident.id, seq.prompt)
        seq.cache = cache_from_state(state) if state is not None else make_cache(self.resident.model)
        seq.cached = n
        seq.todo = seq.prompt[n:]
        self.shared.stats["cached_tokens"] += n
        if seq.counts_usage:
            seq.ticket.usage["cached_tokens"] += n

    # -- decode --

    def _decode_step(self) -> None:
        seqs = self.decoding
        if self.batchable:
            logits = self.batch.step([s.last for s in seqs])
            outs = [s.sampler(logits[i : i + 1]) for i, s in enumerate(seqs)]
        else:
            model = self.resident.model
            outs = [s.sampler(model(mx.array([[s.last]], dtype=mx.uint32), cache=s.cache)[:, -1, :]) for s in seqs]
        mx.eval([a for o in outs for a in o.arrays()])
        self.shared.stats["decode_steps"] += 1
        for seq, out in zip(seqs, outs):
            self._accept(seq, out)
            if seq.finish is not None:
                self.on_finished(seq)

    def _accept(self, seq, out) -> None:
        event = seq.accept(out)
        self.shared.stats["generated_tokens"] += 1
        metrics = self.shared.metrics
        if metrics is not None:
            now = time.perf_counter()
            if len(seq.tokens) == 1:
                metrics.ttft.observe(now - seq.ticket.submitted)
            else:
                metrics.token_latency.observe(now - seq.last_time)
            seq.last_time = now
        seq.ticket.emit(event)
        if seq.finish is not None:
            seq.ticket.emit(ChoiceDone(seq.choice, seq.finish, len(seq.tokens)))

    # -- leaving --

    def drop_finished(self) -> None:
        """Rows of finished or cancelled sequences leave the batch (their state is stored in the
        prompt cache first when they ended normally)."""
        if any(s.finish for s in self.prefilling):
            self.prefilling = deque(s for s in self.prefilling if not s.finish)
        if not any(s.finish for s in self.decoding):
            return
        keep = []
        for i, seq in enumerate(self.decoding):
            if seq.finish is None:
                keep.append(i)
            elif seq.finish in ("stop", "length") and self.batchable:
                self._store_prefix(seq, self.batch.row_state(i))
        if self.batchable:
            self.batch.leave(keep)
        self.decoding = [self.decoding[i] for i in keep]

    def _store_prefix(self, seq, state) -> None:
        if not self.batchable or self.shared.prompt_cache.max_bytes <= 0:
            return
        tokens = seq.prompt + seq.tokens[:-1]  # the last token was sampled, never fed
        state = [(mx.contiguous(k), mx.contiguous(v)) for k, v in state]
        mx.eval(state)
        self.shared.prompt_cache.store(self.resident.id, tokens, state)
