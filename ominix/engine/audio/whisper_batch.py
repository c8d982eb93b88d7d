"""Shared forward passes for the Whisper requests in flight on one model (its lane).

A window's step generator (whisper.py) does not run the encoder or a decoder step itself: it
yields a request, an `Encode` (one window's log-mel) or a `Row` (one sequence's next token; a
beam search yields one per beam), and waits for its value. The TranscribeJob submits what its
generator yielded to the recognizer's `Batcher` and returns; whichever job of that model steps
next while requests wait runs them all (`flush`): every waiting window through the encoder in
batches of `max_encode`, then every waiting row in one batched decoder forward. On the single
worker thread a turn then costs one encoder batch and one decoder forward for all requests of
the model, however many are in flight.

How many windows share an encoder forward is device policy (load_whisper sets it: 8 on a GPU, 4 on
a CPU, where 4 different requests at once reach 2.1x one request's throughput against 1.6x with
the encoder run per window; benchmarks/bench_asr.py). A window's result does not depend on the
batch it ran in beyond float rounding (tests: each concurrent request equals the same one alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np


class Request:
    """Something a step generator waits for; `value` is None until the batcher has run it."""

    value = None

    @property
    def done(self) -> bool:
        return self.value is not None


@dataclass(eq=False)  # identity, not field equality: requests are found in lists by `is`
class Encode(Request):
    """One 30 s window's log-mel [frames, n_mels]; its value is the decoder's cross keys/values."""

    mel: np.ndarray
    value: list | None = None


@dataclass(eq=False)
class Row(Request):
    """One decoding step of one sequence: its next input token, audio and self-attention cache;
    its value is that row's logits (numpy float32 [vocab])."""

    token: int
    cross_kv: list
    cache: list
    value: np.ndarray | None = None


def requests(value) -> list[Request]:
    """What a step generator yielded, as a list of requests ([] for a plain pause)."""
    if isinstance(value, Request):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, Request) for v in value):
        return value
    return []


def answer(value):
    """What to send back to the generator once its requests are done."""
    if isinstance(value, Request):
        return value.value
    if isinstance(value, list) and value and isinstance(value[0], Request):
        return [r.value for r in value]
    return None


class Batcher:
    def __init__(self, model, *, dtype=mx.float32, max_rows: int = 64, max_encode: int = 1):
        self.model = model
        self.dtype = dtype
        self.max_rows = max_rows
        self.max_encode = max(1, int(max_encode))
        self.encodes: list[Encode] = []
        self.rows: list[Row] = []
        self.forwards = 0  # batched decoder forwards run (tests and metrics)
        self.encoder_batches = 0

    def submit(self, value) -> None:
        for r in requests(value):
            (self.encodes if isinstance(r, Encode) else self.rows).append(r)

    def withdraw(self, value) -> None:
        for r in requests(value):
            pending = self.encodes if isinstance(r, Encode) else self.rows
            for i, p in enumerate(pending):
                if p is r:
                    del pending[i]
                    break

    def flush(self) -> None:
        while self.encodes:
            batch, self.encodes = self.encodes[: self.max_encode], self.encodes[self.max_encode:]
            self._encode(batch)
        while self.rows:
            batch, self.rows = self.rows[: self.max_rows], self.rows[self.max_rows:]
            self._decode(batch)

    def _encode(self, batch: list[Encode]) -> None:
        mel = mx.array(np.stack([e.mel for e in batch])).astype(self.dtype)
        kv = self.model.cross_kv(self.model.embed_audio(mel))
        mx.eval(kv)
        self.encoder_batches += 1
        if len(batch) == 1:
            batch[0].value = kv
            return
        for i, e in enumerate(batch):
            e.value = [(k[i:i + 1], v[i:i + 1]) for k, v in kv]

    def _decode(self, batch: list[Row]) -> None:
        logits = self.model.decode_rows(mx.array([[r.token] for r in batch]),
                                        [r.cross_kv for r in batch], [r.cache for r in batch])
        logits = np.array(logits[:, -1].astype(mx.float32))
        self.forwards += 1
        for r, row_logits in zip(batch, logits):
            r.value = row_logits


def drain(steps, batcher: Batcher):
    """Run a step generator to its end alone (its requests run at once); its return value."""
    value = None
    while True:
        try:
            value = steps.send(answer(value))
        except StopIteration as done:
            return done.value
        if requests(value):
            batcher.submit(value)
            batcher.flush()
