"""Decoding one 30 s Whisper window: greedy (or sampled) tokens with the KV cache, openai-whisper's
logit rules (suppressed tokens, timestamp pairing), temperature fallback, and the segments the
timestamp tokens delimit.

The rules follow openai-whisper's `decoding.py` / `transcribe.py` behaviour: the first sampled token
must be a timestamp within the first second, timestamps come in pairs and never go backwards, and
a timestamp is forced when timestamps together are likelier than any text token.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

TIME_PRECISION = 0.02  # seconds per timestamp token (30 s / 1500 audio positions)
MAX_INITIAL_TIMESTAMP = 1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class DecodeResult:
    tokens: list[int]  # sampled tokens, without the final <|endoftext|>
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    token_logprobs: list[float] = field(default_factory=list)
    text: str = ""

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)

    @property
    def compression_ratio(self) -> float:
        data = self.text.encode("utf-8")
        return len(data) / len(zlib.compress(data)) if data else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


class LogitRules:
    """The per-step logit filters for one window, in openai-whisper's order."""

    def __init__(self, tok, sample_begin: int, suppress: list[int], max_timestamp: int):
        self.tok = tok
        self.sample_begin = sample_begin
        self.suppress = np.array(suppress, dtype=np.int64)
        self.blank = np.array(tok.encode(" ") + [tok.eot], dtype=np.int64)
        self.max_initial = tok.timestamp_begin + int(round(MAX_INITIAL_TIMESTAMP / TIME_PRECISION))
        self.last_timestamp = max_timestamp  # the window's last timestamp token

    def apply(self, logits: np.ndarray, tokens: list[int]) -> np.ndarray:
        tok, tb = self.tok, self.tok.timestamp_begin
        logits = logits.copy()
        logits[self.last_timestamp + 1:] = -np.inf  # ids past the window's timestamps
        if len(tokens) == self.sample_begin:
            logits[self.blank] = -np.inf  # no blank or empty transcript first
        logits[self.suppress] = -np.inf
        logits[tok.no_timestamps] = -np.inf
        sampled = tokens[self.sample_begin:]
        last_ts = len(sampled) >= 1 and sampled[-1] >= tb
        penultimate_ts = len(sampled) < 2 or sampled[-2] >= tb
        if last_ts:
            if penultimate_ts:  # a pair just closed: text (or the end) must follow
                logits[tb:] = -np.inf
            else:  # an open timestamp: another timestamp or the end, no more text
                logits[:tok.eot] = -np.inf
        stamps = [t for t in sampled if t >= tb]
        if stamps:
            # Timestamps never decrease; after a closed pair they must strictly increase.
            floor = stamps[-1] if (last_ts and not penultimate_ts) else stamps[-1] + 1
            logits[tb:floor] = -np.inf
        if len(tokens) == self.sample_begin:
            logits[:tb] = -np.inf  # the first token is a timestamp
            logits[self.max_initial + 1:] = -np.inf
        logprobs = log_softmax(logits)
        ts_logprob = np.logaddexp.reduce(logprobs[tb:])
        if ts_logprob > logprobs[:tb].max():
            logits[:tb] = -np.inf
        return logits


def decode_steps(model, tok, cross_kv, initial: list[int], rules: LogitRules, *, temperature: float,
                 sample_len: int, n_ctx: int, make_cache, rng: np.random.Generator, sot_index: int):
    """Sample tokens after `initial` until <|endoftext|>, `sample_len` tokens or the context end.
    A generator: it yields after every forward pass (so a worker can interleave other work) and
    returns the DecodeResult."""
    cache = make_cache()
    logits = model.decode(mx.array([initial]), cross_kv, cache)
    first = np.array(logits[0, sot_index].astype(mx.float32))
    no_speech_prob = float(np.exp(log_softmax(first)[tok.no_speech]))
    step_logits = np.array(logits[0, -1].astype(mx.float32))
    yield
    tokens = list(initial)
    sum_logprob, token_logprobs = 0.0, []
    while True:
        filtered = rules.apply(step_logits, tokens)
        if temperature == 0.0:
            nxt = int(np.argmax(filtered))
        else:
            p = np.exp(log_softmax(filtered / temperature))
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        logprob = float(log_softmax(filtered)[nxt])
        sum_logprob += logprob
        if nxt == tok.eot:
            break
        token_logprobs.append(logprob)
        tokens.append(nxt)
        if len(tokens) - len(initial) >= sample_len or len(tokens) >= n_ctx:
            break
        # One token: ask for it as a Row, so concurrent requests can share the forward pass.
        step_logits = yield Row(nxt, cross_kv, cache)
    sampled = tokens[len(initial):]
    return DecodeResult(sampled, sum_logprob, no_speech_prob, temperature, token_logprobs,
                        tok.decode(sampled))


@dataclass
class Row:
    """A decoding step one sequence asks for: its next input token, audio and cache. The caller
    sends back that row's logits (numpy [vocab])."""

    token: int
    cross_kv: list
    cache: list
    logits: np.ndarray | None = None


class RowBatcher:
    """Rows from concurrent requests to one model, run together in one forward pass.

    A job submits its row and returns; whichever job steps next while rows are waiting runs them
    all (`flush`). On the single worker thread every turn then costs one batched forward, whatever
    the number of requests in flight."""

    def __init__(self, model, max_rows: int = 16):
        self.model = model
        self.max_rows = max_rows
        self.pending: list[Row] = []
        self.forwards = 0  # batched forward passes run (for tests and metrics)

    def submit(self, row: Row) -> None:
        self.pending.append(row)

    def withdraw(self, row: Row) -> None:
        if row in self.pending:
            self.pending.remove(row)

    def flush(self) -> None:
        while self.pending:
            rows, self.pending = self.pending[: self.max_rows], self.pending[self.max_rows:]
            logits = self.model.decode_rows(mx.array([[r.token] for r in rows]),
                                            [r.cross_kv for r in rows], [r.cache for r in rows])
            logits = np.array(logits[:, -1].astype(mx.float32))
            self.forwards += 1
            for r, row_logits in zip(rows, logits):
                r.logits = row_logits


def drain(steps, batcher: RowBatcher):
    """Run a step generator to its end alone (rows run at once); its return value."""
    value = None
    while True:
        try:
            value = steps.send(value)
        except StopIteration as done:
            return done.value
        if isinstance(value, Row):
            batcher.submit(value)
            batcher.flush()
            value = value.logits
        else:
            value = None


def needs_fallback(r: DecodeResult) -> bool:
    """Retry hotter when the text loops or is unsure, unless the window is just silence."""
    if is_silence(r):
        return False
    return r.compression_ratio > COMPRESSION_RATIO_THRESHOLD or r.avg_logprob < LOGPROB_THRESHOLD


def is_silence(r: DecodeResult) -> bool:
    return r.no_speech_prob > NO_SPEECH_THRESHOLD and r.avg_logprob < LOGPROB_THRESHOLD


def split_segments(tokens: list[int], tb: int, window_frames_seconds: float):
    """Sampled tokens -> [(start_s, end_s, text_tokens, token_range)] relative to the window, and the
    seconds of audio the window consumed (up to the last closed segment)."""
    is_ts = [t >= tb for t in tokens]
    # Ends in one timestamp (not a closing pair): the last segment ran to the window's end.
    single_ending = bool(tokens) and is_ts[-1] and (len(tokens) == 1 or not is_ts[-2])
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    out = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cur in slices:
            part = tokens[last:cur]
            start = (part[0] - tb) * TIME_PRECISION
            end = (part[-1] - tb) * TIME_PRECISION
            text = [t for t in part if t < tb]
            out.append((start, end, text, (last, cur)))
            last = cur
        if single_ending:
            consumed = window_frames_seconds
        else:
            consumed = (tokens[last - 1] - tb) * TIME_PRECISION
        return out, consumed
    stamps = [t for t in tokens if t >= tb]
    duration = window_frames_seconds
    if stamps and stamps[-1] != tb:
        duration = (stamps[-1] - tb) * TIME_PRECISION
    text = [t for t in tokens if t < tb]
    if text:
        out.append((0.0, duration, text, (0, len(tokens))))
    return out, window_frames_seconds
