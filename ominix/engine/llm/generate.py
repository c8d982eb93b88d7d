"""Prefill + decode loop for one request.

`generate_step` yields token ids: the prompt is prefilled in chunks (evaluating the cache between
chunks keeps peak memory flat), then each decode step is one graph, queued with `mx.async_eval`
before the previous token is read so the device works while Python waits.
`stream_generate` adds detokenization, EOS and stop strings, and timing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import mlx.core as mx

from ominix.engine.llm.cache import KVCache, make_cache
from ominix.engine.llm.sample import SampleOutput, Sampler, SamplingParams
from ominix.engine.llm.decode import Decoder
from ominix.engine.llm.tokenizer import Tokenizer


@dataclass
class TokenLogprobs:
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # best first


@dataclass
class GenerationResponse:
    text: str  # new text since the previous response
    token: int
    logprob: float | None
    top_logprobs: list[tuple[int, float]] | None
    finish_reason: str | None  # None, "stop" or "length"
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    ttft: float  # seconds from the call to the first token
    peak_memory: float  # GB
    cached_tokens: int = 0  # prompt tokens the cache already held (not prefilled again)


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]
    finish_reason: str | None
    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    ttft: float
    peak_memory: float
    logprobs: list[TokenLogprobs] | None = None


def default_prefill_step_size() -> int:
    """Prompt tokens per prefill chunk for the current device. On a CPU, 256-token chunks keep
    the working set in cache: measured 20-35% faster prefill than 512 and a lower peak (small
    Qwen3, bf16/float32/4-bit). On Metal, large chunks keep the GPU busy (mlx-lm's 2048)."""
    return 2048 if mx.default_device().type == mx.DeviceType.gpu else 256


def prefill(model, tokens: mx.array, cache: list, step_size: int) -> mx.array:
    """Run all but the last token through the model in chunks; return what is left to feed."""
    while tokens.size > 1:
        n = min(step_size, tokens.size - 1)
        model(tokens[:n][None], cache=cache)
        mx.eval([c.state for c in cache])
        tokens = tokens[n:]
    return tokens


def generate_step(
    model,
    prompt_ids,
    sampler: Sampler,
    *,
    cache: list | None = None,
    prefill_step_size: int | None = None,
    max_tokens: int = 256,
) -> Iterator[tuple[int, TokenLogprobs | None]]:
    """Yield (token, logprobs or None) for up to max_tokens tokens. The caller decides when to stop.

    `cache` may already hold a prefix of the conversation; then `prompt_ids` is only the new part.
    """
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty")
    prefill_step_size = prefill_step_size or default_prefill_step_size()
    if prefill_step_size < 1:
        raise ValueError("prefill_step_size must be >= 1")
    if cache is None:
        cache = make_cache(model)

    def step(tokens: mx.array) -> SampleOutput:
        logits = model(tokens[None], cache=cache)[:, -1, :]
        return sampler(logits)

    last = prefill(model, mx.array(prompt_ids, dtype=mx.uint32), cache, prefill_step_size)
    out = step(last)
    mx.async_eval(out.arrays())
    for n in range(max_tokens):
        more = n + 1 < max_tokens
        if more and not sampler.sync:
            # Queue step n+1 on the (still lazy) token n before reading token n on the host.
            upcoming = step(out.token.reshape(1))
            mx.async_eval(upcoming.arrays())
        token = out.token.item()
        sampler.accept(token)
        yield token, _logprobs(out)
        if more and sampler.sync:
            upcoming = step(mx.array([token], dtype=mx.uint32))
            mx.async_eval(upcoming.arrays())
        if more:
            out = upcoming


def _logprobs(out: SampleOutput) -> TokenLogprobs | None:
    if out.logprob is None:
        return None
    top = []
    if out.top_ids is not None:
        top = list(zip(out.top_ids.tolist(), out.top_logprobs.tolist()))
    return TokenLogprobs(out.logprob.item(), top)


def encode_prompt(tokenizer: Tokenizer, prompt: str | list[int]) -> list[int]:
    if not isinstance(prompt, str):
        return list(prompt)
    # Add the tokenizer's own specials (e.g. BOS) unless the text already starts with BOS,
    # as a rendered chat template usually does.
    bos = tokenizer.special_tokens.get("bos_token")
    return tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))


def stream_generate(
    model,
    tokenizer: Tokenizer,
    prompt: str | list[int],
    params: SamplingParams,
    *,
    max_tokens: int = 256,
    stop: list[str] | None = None,
    cache: list | None = None,
    prefill_step_size: int | None = None,
    logits_processors=None,
    cached: int = 0,
) -> Iterator[GenerationResponse]:
    """Stream responses with text deltas; the last one has a finish_reason.

    With `cached`, `cache` already holds the first `cached` prompt tokens (a conversation's
    earlier turns): only the rest is prefilled; sampling still sees the whole prompt."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    if not 0 <= cached < len(prompt_ids) or (cached and cache is None):
        raise ValueError("cached must count prompt tokens already in the cache, leaving at least one")
    decoder = Decoder(tokenizer, max_tokens, stop)
    sampler = Sampler(params, prompt_ids=prompt_ids, logits_processors=logits_processors)

    mx.reset_peak_memory()
    start = time.perf_counter()
    ttft = prompt_tps = 0.0
    decode_start = start
    steps = generate_step(
        model, prompt_ids[cached:], sampler, cache=cache, prefill_step_size=prefill_step_size, max_tokens=max_tokens
    )
    try:
        for n, (token, info) in enumerate(steps, start=1):
            if n == 1:
                ttft = time.perf_counter() - start
                prompt_tps = (len(prompt_ids) - cached) / ttft
                decode_start = time.perf_counter()
            text = decoder.add(token)
            elapsed = time.perf_counter() - decode_start
            yield GenerationResponse(
                text=text,
                token=token,
                logprob=info.logprob if info else None,
                top_logprobs=info.top if info and params.top_logprobs else None,
                finish_reason=decoder.finish,
                prompt_tokens=len(prompt_ids),
                generation_tokens=n,
                prompt_tps=prompt_tps,
                generation_tps=(n - 1) / elapsed if n > 1 and elapsed > 0 else 0.0,
                ttft=ttft,
                peak_memory=mx.get_peak_memory() / 1e9,
                cached_tokens=cached,
            )
            if decoder.finish is not None:
                return
    finally:
        steps.close()


class ConversationCache:
    """One conversation's KV cache kept across turns (`ominix run`): each turn's prompt (the
    whole history, rendered again) reuses the longest prefix the cache holds, so only the new
    messages are prefilled. Models whose caches cannot be cut back (sliding window, recurrent
    state) start afresh each turn."""

    def __init__(self, model):
        self.model = model
        self.cache: list | None = None
        self.tokens: list[int] = []  # what the cache holds, in order

    def prepare(self, prompt_ids: list[int]) -> tuple[list, int]:
        """(cache, how many leading prompt tokens it already holds) for the next turn."""
        keep = 0
        if self.cache is not None and all(isinstance(c, KVCache) for c in self.cache):
            limit = min(len(self.tokens), len(prompt_ids) - 1)
            while keep < limit and self.tokens[keep] == prompt_ids[keep]:
                keep += 1
        if keep == 0:
            self.cache, self.tokens = make_cache(self.model), []
            return self.cache, 0
        for c in self.cache:
            c.trim(c.offset - keep)
        self.tokens = self.tokens[:keep]
        return self.cache, keep

    def record(self, fed: list[int]) -> None:
        """After a turn: `fed` is the prompt plus the generated tokens, of which the cache holds
        as many as its offset says (the decode loop may have fed one ahead)."""
        held = self.cache[0].offset if self.cache and isinstance(self.cache[0], KVCache) else 0
        self.tokens = list(fed[:held])

    def reset(self) -> None:
        self.cache, self.tokens = None, []


def generate(model, tokenizer: Tokenizer, prompt: str | list[int], params: SamplingParams, **kwargs) -> GenerationResult:
    """Run `stream_generate` to the end and collect the text, tokens and statistics."""
    pieces, tokens, logprobs, last = [], [], [], None
    for last in stream_generate(model, tokenizer, prompt, params, **kwargs):
        pieces.append(last.text)
        tokens.append(last.token)
        if last.logprob is not None:
            logprobs.append(TokenLogprobs(last.logprob, last.top_logprobs or []))
    return GenerationResult(
        text="".join(pieces),
        tokens=tokens,
        finish_reason=last.finish_reason,
        prompt_tokens=last.prompt_tokens,
        generation_tokens=last.generation_tokens,
        prompt_tps=last.prompt_tps,
        generation_tps=last.generation_tps,
        ttft=last.ttft,
        peak_memory=last.peak_memory,
        logprobs=logprobs if params.logprobs or params.top_logprobs else None,
    )
