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

from ominix.engine.audio.whisper_batch import Row

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
        data = self.text.strip().encode("utf-8")  # stripped, as faster-whisper measures it
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


def max_new_tokens(n_prompt: int, n_ctx: int) -> int:
    """Tokens a window may sample after an `n_prompt`-token prompt (CTranslate2's bound, which
    faster-whisper uses: half the context, or what the context has left after the prompt's
    first n_prompt - 1 tokens)."""
    return max(1, min(n_ctx // 2, n_ctx - (n_prompt - 1)))


def prefill(model, tok, cross_kv, initial: list[int], cache, sot_index: int):
    """The prompt through the decoder: (logits after its last token, P(no speech) at <|sot|>)."""
    logits = model.decode(mx.array([initial]), cross_kv, cache)
    first = np.array(logits[0, sot_index].astype(mx.float32))
    no_speech_prob = float(np.exp(log_softmax(first)[tok.no_speech]))
    return np.array(logits[0, -1].astype(mx.float32)), no_speech_prob


def decode_steps(model, tok, cross_kv, initial: list[int], rules: LogitRules, *, temperature: float,
                 max_new: int, make_cache, rng: np.random.Generator, sot_index: int, on_token=None):
    """Sample tokens after `initial` until <|endoftext|> or `max_new` tokens. A generator: it
    yields after the prompt's forward pass and a Row for every later step (so concurrent requests
    share forwards), and returns the DecodeResult. `on_token(token, logprob)` sees each token as
    it is chosen (streaming)."""
    cache = make_cache()
    step_logits, no_speech_prob = prefill(model, tok, cross_kv, initial, cache, sot_index)
    if no_speech_prob > NO_SPEECH_THRESHOLD:
        on_token = None  # the window may be dropped as silence: stream nothing early from it
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
        if on_token is not None:
            on_token(nxt, logprob)
        if len(tokens) - len(initial) >= max_new:
            break
        # One token: ask for it as a Row, so concurrent requests can share the forward pass.
        step_logits = yield Row(nxt, cross_kv, cache)
    sampled = tokens[len(initial):]
    return DecodeResult(sampled, sum_logprob, no_speech_prob, temperature, token_logprobs,
                        tok.decode(sampled))


def pick_fallback(results: list[DecodeResult]) -> DecodeResult:
    """Every temperature failed: the likeliest result that does not loop (faster-whisper's and
    openai-whisper's choice), reported at the last temperature tried (which resets the prompt)."""
    pool = [r for r in results if r.compression_ratio <= COMPRESSION_RATIO_THRESHOLD] or results
    best = max(pool, key=lambda r: r.avg_logprob)
    best.temperature = results[-1].temperature
    return best


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
