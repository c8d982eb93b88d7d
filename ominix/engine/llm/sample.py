"""Sampling: penalties, logit bias, temperature, top-k / top-p / min-p, seeded randomness, logprobs.

Everything is MLX ops on the device; nothing here forces a host sync. A `Sampler` is built once per
request and owns its random key, so a seeded request gives the same tokens no matter what other
requests run in between.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlx.core as mx

MIN_SAMPLING_TEMPERATURE = 1e-5  # below it, sampling is greedy (see SamplingParams.greedy)


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self):
        def check(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        check(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k}")
        check(0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}")
        check(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        check(-2 <= self.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        check(-2 <= self.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        check(
            isinstance(self.top_logprobs, int) and 0 <= self.top_logprobs <= 20,
            f"top_logprobs must be an integer in [0, 20], got {self.top_logprobs}",
        )
        check(self.seed is None or isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        if self.logit_bias:
            # JSON gives string keys ("50256"); keep ints.
            bias = {}
            for token, value in self.logit_bias.items():
                check(str(token).isdigit(), f"logit_bias keys must be token ids, got {token!r}")
                check(isinstance(value, (int, float)), f"logit_bias values must be numbers, got {value!r}")
                check(-100 <= value <= 100, f"logit_bias values must be in [-100, 100], got {value}")
                bias[int(token)] = float(value)
            self.logit_bias = bias

    @property
    def greedy(self) -> bool:
        # Below this, logits / temperature overflow float32 to inf and the softmax turns to NaN (a
        # masked token could be drawn); the distribution is a point mass on the argmax anyway.
        return self.temperature < MIN_SAMPLING_TEMPERATURE


_DEFAULTED = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def sampling_params(generation_config: dict | None, requested: dict) -> SamplingParams:
    """The one rule for sampling defaults, used by `ominix run`, the server and bench alike: what
    the request sets wins; unset fields take the checkpoint's generation_config.json (what its
    authors tuned: temperature, top_p, top_k, min_p, repetition_penalty; `do_sample: false` means
    greedy); anything still unset keeps SamplingParams' defaults (OpenAI's: temperature 1)."""
    config = generation_config or {}
    if config.get("do_sample") is False:
        defaults = {"temperature": 0.0}
    else:
        defaults = {k: config[k] for k in _DEFAULTED
                    if isinstance(config.get(k), (int, float)) and not isinstance(config.get(k), bool)}
    chosen = {k: v for k, v in requested.items() if v is not None}
    return SamplingParams(**{**defaults, **chosen})


@dataclass
class SampleOutput:
    """Lazy arrays for one step; `token` is an int32 scalar."""

    token: mx.array
    logprob: mx.array | None = None
    top_ids: mx.array | None = None
    top_logprobs: mx.array | None = None
    state: mx.array | None = None  # the sampler's updated token counts, evaluated with the token

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.token, self.logprob, self.top_ids, self.top_logprobs, self.state) if a is not None]


class Sampler:
    """Samples one token per call from logits shaped [V] or [1, V].

    Penalties use OpenAI's semantics for presence/frequency (over generated tokens) and HF's for
    repetition (over prompt + generated tokens). Logprobs are log_softmax of the logits after
    penalties and bias, before temperature and truncation.
    """

    def __init__(self, params: SamplingParams, prompt_ids=None, logits_processors=None):
        self.params = params
        # Processors `(tokens, logits) -> logits` (e.g. a grammar constraint) see the whole history
        # (prompt + generated) as host ints, so the decode loop must sync each token: see `sync`.
        self.logits_processors = list(logits_processors or [])
        self.history = list(prompt_ids or [])  # prompt + accepted tokens
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.key = mx.random.key(seed & 0xFFFFFFFFFFFFFFFF)  # OpenAI seeds may be negative
        self.counts = None  # float32 [V]: how often each token was generated so far
        self._seen = None  # float32 [V]: 1 where the token is in the prompt (repetition penalty)
        self._bias = None
        # Token counts are only kept (one [V] add per step) when a penalty needs them.
        self._track = params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty

    def _setup(self, vocab: int) -> None:
        p = self.params
        self.counts = mx.zeros((vocab,), mx.float32)
        self._seen = self.counts
        if p.repetition_penalty != 1.0:
            seen = mx.zeros((vocab,), mx.float32)
            ids = [i for i in self.history if 0 <= i < vocab]  # still just the prompt here
            if ids:
                seen[mx.array(ids)] = 1.0
            self._seen = seen
        if p.logit_bias:
            bias = mx.zeros((vocab,), mx.float32)
            items = [(int(t), float(b)) for t, b in p.logit_bias.items() if 0 <= int(t) < vocab]
            if items:
                bias[mx.array([t for t, _ in items])] = mx.array([b for _, b in items])
            self._bias = bias

    @property
    def sync(self) -> bool:
        """True when each token must reach the host before the next step is built."""
        return bool(self.logits_processors)

    def accept(self, token: int) -> None:
        """Record a sampled token on the host side (history for logits processors)."""
        if self.logits_processors:
            self.history.append(token)

    def __call__(self, logits: mx.array) -> SampleOutput:
        for processor in self.logits_processors:
            logits = processor(self.history, logits)
        logits = logits.reshape(-1).astype(mx.float32)
        if self.counts is None:
            self._setup(logits.shape[0])
        p = self.params
        logits = self._apply_penalties(logits)
        if self._bias is not None:
            logits = logits + self._bias

        if p.greedy:
            token = mx.argmax(logits)
        else:
            self.key, subkey = mx.random.split(self.key)
            scaled = self.truncate(logits / p.temperature)
            token = mx.random.categorical(scaled, key=subkey)
        token = token.astype(mx.int32)
        out = SampleOutput(token)
        if self._track:
            self.counts = self.counts + (mx.arange(self.counts.shape[0]) == token)
            out.state = self.counts
        if p.logprobs or p.top_logprobs:
            logprobs = logits - mx.logsumexp(logits)
            out.logprob = logprobs[token]
            if p.top_logprobs:
                n = p.top_logprobs
                top = mx.argpartition(-logprobs, n - 1)[:n]
                order = mx.argsort(-logprobs[top])
                out.top_ids = top[order]
                out.top_logprobs = logprobs[out.top_ids]
        return out

    def _apply_penalties(self, logits: mx.array) -> mx.array:
        p = self.params
        if p.repetition_penalty != 1.0:
            seen = (self.counts > 0) | (self._seen > 0)
            penalized = mx.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
            logits = mx.where(seen, penalized, logits)
        if p.frequency_penalty:
            logits = logits - p.frequency_penalty * self.counts
        if p.presence_penalty:
            logits = logits - p.presence_penalty * (self.counts > 0)
        return logits

    def truncate(self, logits: mx.array) -> mx.array:
        """Mask (to -inf) every token outside top_k, the top_p nucleus and the min_p floor."""
        p = self.params
        vocab = logits.shape[0]
        if 0 < p.top_k < vocab:
            kth_largest = mx.partition(logits, vocab - p.top_k)[vocab - p.top_k]
            logits = mx.where(logits < kth_largest, -mx.inf, logits)
        if p.top_p < 1.0:
            sorted_logits = mx.sort(logits)[::-1]
            probs = mx.softmax(sorted_logits)
            # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it < top_p.
            mass_before = mx.cumsum(probs) - probs
            kept = mx.sum(mass_before < p.top_p)
            threshold = sorted_logits[kept - 1]
            logits = mx.where(logits < threshold, -mx.inf, logits)
        if p.min_p > 0.0:
            # p(token) >= min_p * p(best)  <=>  logit >= max_logit + log(min_p)
            floor = mx.max(logits) + mx.log(mx.array(p.min_p, mx.float32))
            logits = mx.where(logits < floor, -mx.inf, logits)
        return logits
