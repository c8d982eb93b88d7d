"""Chat and text completion jobs: prompts -> sequences, and the events they report.

A `GenerateJob` is one request: every prompt x n choices. On the worker it becomes one `Sequence`
per choice (engine/llm/batching.py prefills and decodes them as batch rows); each sequence reports
`TokenEvent`s and a `ChoiceDone`, the job reports `PromptStarted` per prompt. Nothing here speaks
HTTP: errors carry data (`RequestError.param/code`, `ContextLengthError`'s numbers) and api/ words
them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ominix.engine.llm.decode import Decoder

DEFAULT_MAX_TOKENS = 8192  # when a request sets no limit (bounded again by the context length)


class RequestError(ValueError):
    """A request the model cannot serve as asked (the API answers 400 with `param` and `code`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class ContextLengthError(RequestError):
    """The prompt (plus the tokens asked for) does not fit the model's context. Carries the
    numbers; the API words the message the way its clients expect."""

    def __init__(self, limit: int, prompt_tokens: int, max_tokens: int | None):
        where = "max_tokens" if max_tokens is not None else "messages"
        asked = prompt_tokens + (max_tokens or 0)
        super().__init__(f"{asked} tokens requested, the context holds {limit}", where, "context_length_exceeded")
        self.limit = limit
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens


@dataclass
class PromptStarted:
    prompt: int  # index of the prompt in the request
    prompt_tokens: int
    text: str  # the prompt as text (for echo and the reasoning check)
    prompt_logprobs: list | None = None  # [(token_text, logprob or None)] when echo + logprobs


@dataclass
class TokenEvent:
    choice: int
    text: str  # new text (after stop-string handling); may be ""
    token: int
    token_text: str
    logprob: float | None
    top_logprobs: list[tuple[str, float]] | None
    final: bool  # the EOS that ended the choice: no text, no logprob entry


@dataclass
class ChoiceDone:
    choice: int
    finish_reason: str
    completion_tokens: int


class Sequence:
    """One choice being generated: its sampler (seed, penalties, processors) and decoder, its cache
    while it prefills, and its tokens. The worker's LLM lane (batching.py) runs it."""

    def __init__(self, ticket, tokenizer, choice: int, prompt: list[int], params, max_tokens: int,
                 stop: list[str], processors, counts_usage: bool):
        from ominix.engine.llm.sample import Sampler

        self.ticket = ticket
        self.tokenizer = tokenizer
        self.choice = choice
        self.prompt = prompt
        self.params = params
        self.sampler = Sampler(params, prompt_ids=prompt, logits_processors=processors)
        self.decoder = Decoder(tokenizer, max_tokens, stop)
        self.counts_usage = counts_usage  # the first choice of each prompt reports cached tokens
        self.cache = None  # per-layer caches while prefilling (and for unbatchable models)
        self.todo: list[int] = []
        self.cached = 0
        self.tokens: list[int] = []
        self.finish: str | None = None  # also "cancelled" when its ticket ends early
        self.last_time = time.perf_counter()

    @property
    def last(self) -> int:
        return self.tokens[-1]

    def accept(self, out) -> TokenEvent:
        """Take the sampled token (evaluated SampleOutput); decide whether the choice ends."""
        token = out.token.item()
        self.sampler.accept(token)
        self.tokens.append(token)
        logprob = top = None
        if out.logprob is not None:
            logprob = out.logprob.item()
            if self.params.top_logprobs and out.top_ids is not None:
                pairs = zip(out.top_ids.tolist(), out.top_logprobs.tolist())
                # Tokens a constraint forbids (-inf) are no candidates, and JSON has no -inf.
                top = [(self.tokenizer.decode([t]), lp) for t, lp in pairs if lp > float("-inf")]
        final = self.decoder.is_eos(token)
        text = self.decoder.add(token)
        self.finish = self.decoder.finish
        return TokenEvent(self.choice, text, token, self.tokenizer.decode([token]), logprob, top, final)


@dataclass
class GenerateJob:
    """One chat or text completion request: every prompt x n choices, decoded as batch rows.

    Each prompt is a string, a list of token ids, or a function of the tokenizer returning either
    (chat templates are rendered here, on the inference thread, with the resident tokenizer).
    """

    kind = "chat"  # the model kind this job runs on (ominix/kinds.py)

    prompts: list
    sampling: dict  # SamplingParams fields
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    response_format: dict | None = None
    echo_logprobs: bool = False  # completions: logprobs of the prompt tokens too
    prompt_tokens: int = 0

    def sequence_count(self) -> int:
        return len(self.prompts) * self.n

    def begin(self, resident, ticket) -> list[Sequence]:
        """Prepare every prompt, report PromptStarted for each, return the sequences to run."""
        from ominix.engine.llm.sample import sampling_params

        model, tokenizer = resident.model, resident.tokenizer
        prepared = [self._prepare(resident, p) for p in self.prompts]
        self._check_logit_bias(model.args.vocab_size)
        if self.response_format:  # compile once up front so a bad schema fails before any output
            self._constraint(tokenizer, model)
        sequences = []
        for p, (text, ids, max_tokens) in enumerate(prepared):
            self.prompt_tokens += len(ids)
            logprobs = self._prompt_logprobs(model, tokenizer, ids) if self.echo_logprobs else None
            ticket.emit(PromptStarted(p, len(ids), text, logprobs))
            for j in range(self.n):
                sampling = dict(self.sampling)
                if sampling.get("seed") is not None:
                    sampling["seed"] = sampling["seed"] + j  # n choices differ, reproducibly
                params = sampling_params(tokenizer.generation_config, sampling)
                processors = [self._constraint(tokenizer, model)] if self.response_format else None
                sequences.append(Sequence(ticket, tokenizer, p * self.n + j, ids, params,
                                          max_tokens, self.stop, processors, counts_usage=j == 0))
        return sequences

    def _prepare(self, resident, prompt):
        from ominix.engine.llm.generate import encode_prompt

        tokenizer = resident.tokenizer
        if callable(prompt):
            prompt = prompt(tokenizer)
        if isinstance(prompt, str):
            text = prompt
            ids = encode_prompt(tokenizer, prompt)
        else:
            ids = list(prompt)
            vocab = resident.model.args.vocab_size
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise RequestError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", "prompt")
            text = tokenizer.decode(ids)
        if not ids:
            raise RequestError("the prompt is empty", "prompt")
        ctx = resident.context_length
        max_tokens = self.max_tokens or DEFAULT_MAX_TOKENS
        if ctx:
            if len(ids) >= ctx:
                raise ContextLengthError(ctx, len(ids), None)
            if self.max_tokens is None:
                max_tokens = min(max_tokens, ctx - len(ids))
            elif len(ids) + max_tokens > ctx:
                raise ContextLengthError(ctx, len(ids), max_tokens)
        return text, ids, max_tokens

    def _check_logit_bias(self, vocab: int) -> None:
        for token in (self.sampling.get("logit_bias") or {}):
            if not 0 <= int(token) < vocab:
                raise RequestError(f"logit_bias token id {token} is outside the vocabulary (0..{vocab - 1})", "logit_bias")

    def _constraint(self, tokenizer, model):
        from ominix.engine.llm.constrained import make_constraint

        return make_constraint(tokenizer, model.args.vocab_size, self.response_format)

    @staticmethod
    def _prompt_logprobs(model, tokenizer, ids) -> list:
        """Logprob of each prompt token given the ones before it (the first has none)."""
        import mlx.core as mx

        if len(ids) == 1:
            return [(tokenizer.decode(ids), None)]
        logits = model(mx.array(ids, dtype=mx.uint32)[None])[0].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        picked = mx.take_along_axis(logprobs[:-1], mx.array(ids[1:], dtype=mx.int32)[:, None], axis=-1)[:, 0]
        values = [None] + picked.tolist()
        return [(tokenizer.decode([t]), v) for t, v in zip(ids, values)]
