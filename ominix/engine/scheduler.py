"""The inference thread: every MLX operation of the server runs here, one request at a time (FIFO).

HTTP handlers never touch MLX. They `submit()` a job (a function of the resident model) with a
callback; the job runs on this thread, reports events through the callback as it goes (tokens,
embeddings, a final result), and checks `ticket.cancelled` between steps so a client that goes away
stops its generation at once. `stream()` adapts that to asyncio (a JobStream): events arrive on an
asyncio.Queue through `loop.call_soon_threadsafe`, and `cancel()` stops the job.

The generation job of the OpenAI routes lives here too (`GenerateJob`; embeddings have `EmbedJob` in
engine/embed.py): it turns a validated request into engine calls and plain-Python events, so nothing
MLX-typed ever leaves this thread.
Continuous batching (joining requests into one decode batch) replaces `_run`'s loop later without
changing `submit()` / `stream()`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("ominix.scheduler")


class Cancelled(Exception):
    """Raised inside a job when its ticket was cancelled."""


@dataclass
class Done:
    """Last event of every job: `result` is what the job returned."""

    result: Any = None


@dataclass
class Failed:
    """Last event of a job that raised; the API layer maps the exception to an HTTP error."""

    error: BaseException


@dataclass
class Ticket:
    model: str
    job: Callable  # job(resident, ticket) -> result; runs on the inference thread
    sink: Callable[[Any], None]  # receives every event; must be thread-safe and non-blocking
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event) -> None:
        self.sink(event)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        self.cancelled.set()


class Scheduler:
    def __init__(self, pool):
        self.pool = pool
        self._queue: queue.Queue[Ticket | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ominix-inference", daemon=True)
        self.busy = threading.Event()  # set while a job runs (tests and /health read it)
        self.completed = 0  # jobs finished, by any means
        self.cancelled_jobs = 0  # jobs stopped because their client went away

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, model: str, job: Callable, sink: Callable[[Any], None]) -> Ticket:
        ticket = Ticket(model, job, sink)
        self._queue.put(ticket)
        return ticket

    def call(self, job: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run a model-less function on the inference thread and wait for it (preloading)."""
        box: queue.Queue = queue.Queue()
        self.submit("", lambda _resident, _ticket: job(), lambda ev: box.put(ev) if isinstance(ev, (Done, Failed)) else None)
        event = box.get(timeout=timeout)
        if isinstance(event, Failed):
            raise event.error
        return event.result

    def _run(self) -> None:
        while True:
            ticket = self._queue.get()
            if ticket is None:
                return
            self.busy.set()
            try:
                self._execute(ticket)
            finally:
                self.busy.clear()
                self.completed += 1

    def _execute(self, ticket: Ticket) -> None:
        try:
            ticket.check()
            resident = self.pool.get(ticket.model) if ticket.model else None
            ticket.check()
            result = ticket.job(resident, ticket)
        except Cancelled:
            self.cancelled_jobs += 1
            ticket.emit(Failed(Cancelled()))
        except Exception as e:  # reported to the client; the thread lives on
            if not _expected(e):
                log.exception("job for model %r failed", ticket.model)
            ticket.emit(Failed(e))
        else:
            ticket.emit(Done(result))
        finally:
            _release_memory()

    def stream(self, model: str, job: Callable) -> "JobStream":
        """Submit `job`; iterate the returned JobStream in the event loop for its events."""
        return JobStream(self, model, job)

    async def run(self, model: str, job: Callable) -> Any:
        """Submit `job`, wait for it, return its result or raise its error."""
        stream = self.stream(model, job)
        try:
            async for event in stream:
                if isinstance(event, Done):
                    return event.result
                if isinstance(event, Failed):
                    raise event.error
        finally:
            stream.cancel()
        raise RuntimeError("job ended without a result")


class JobStream:
    """Events of one job, delivered in the event loop; ends after Done / Failed.

    Events cross threads through `loop.call_soon_threadsafe`; `cancel()` (client gone) makes the
    job stop at its next check. Must be created inside a running event loop.
    """

    def __init__(self, scheduler: Scheduler, model: str, job: Callable):
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.ticket = scheduler.submit(model, job, self._sink)

    def _sink(self, event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed (server shutting down)
            self.ticket.cancel()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.finished:
            raise StopAsyncIteration
        event = await self._events.get()
        if isinstance(event, (Done, Failed)):
            self.finished = True
        return event

    def cancel(self) -> None:
        if not self.finished:
            self.ticket.cancel()


def _expected(e: Exception) -> bool:
    from ominix.engine.pool import ModelLoadError, ModelNotFoundError

    return isinstance(e, (ValueError, LookupError, ModelLoadError, ModelNotFoundError))


def _release_memory() -> None:
    try:
        import mlx.core as mx

        mx.clear_cache()
    except Exception:
        pass


# ---- jobs for the OpenAI routes -------------------------------------------------------------

DEFAULT_MAX_TOKENS = 8192  # when a request sets no limit (bounded again by the context length)


class RequestError(ValueError):
    """A request the model cannot serve as asked; maps to HTTP 400 with `param` and `code`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


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


@dataclass
class GenerateJob:
    """One chat or text completion request: every prompt x n choices, one after another.

    Each prompt is a string, a list of token ids, or a function of the tokenizer returning either
    (chat templates are rendered here, on the inference thread, with the resident tokenizer).
    """

    prompts: list
    sampling: dict  # SamplingParams fields
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    response_format: dict | None = None
    echo_logprobs: bool = False  # completions: logprobs of the prompt tokens too

    def __call__(self, resident, ticket: Ticket):
        from ominix.engine.sample import SamplingParams

        model, tokenizer = resident.model, resident.tokenizer
        prepared = [self._prepare(resident, p) for p in self.prompts]
        self._check_logit_bias(model.args.vocab_size)
        if self.response_format:  # compile once up front so a bad schema fails before any output
            self._constraint(tokenizer, model)
        prompt_total = completion_total = 0
        for p, (text, ids, max_tokens) in enumerate(prepared):
            prompt_total += len(ids)
            logprobs = self._prompt_logprobs(model, tokenizer, ids) if self.echo_logprobs else None
            ticket.emit(PromptStarted(p, len(ids), text, logprobs))
            for j in range(self.n):
                sampling = {**_generation_defaults(tokenizer), **self.sampling}
                if sampling.get("seed") is not None:
                    sampling["seed"] = sampling["seed"] + j  # n choices differ, reproducibly
                params = SamplingParams(**sampling)
                completion_total += self._run_choice(
                    model, tokenizer, ids, params, max_tokens, p * self.n + j, ticket
                )
        return {"prompt_tokens": prompt_total, "completion_tokens": completion_total}

    def _prepare(self, resident, prompt):
        from ominix.engine.generate import encode_prompt

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
                raise RequestError(
                    f"This model's maximum context length is {ctx} tokens. However, your prompt has "
                    f"{len(ids)} tokens. Please reduce the length of the messages or prompt.",
                    "messages", "context_length_exceeded",
                )
            if self.max_tokens is None:
                max_tokens = min(max_tokens, ctx - len(ids))
            elif len(ids) + max_tokens > ctx:
                raise RequestError(
                    f"This model's maximum context length is {ctx} tokens. However, you requested "
                    f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the "
                    "completion). Please reduce the prompt or max_tokens.",
                    "max_tokens", "context_length_exceeded",
                )
        return text, ids, max_tokens

    def _check_logit_bias(self, vocab: int) -> None:
        for token in (self.sampling.get("logit_bias") or {}):
            if not 0 <= int(token) < vocab:
                raise RequestError(f"logit_bias token id {token} is outside the vocabulary (0..{vocab - 1})", "logit_bias")

    def _constraint(self, tokenizer, model):
        from ominix.engine.constrained import make_constraint

        return make_constraint(tokenizer, model.args.vocab_size, self.response_format)

    def _run_choice(self, model, tokenizer, ids, params, max_tokens, choice, ticket) -> int:
        from ominix.engine.generate import stream_generate

        processors = [self._constraint(tokenizer, model)] if self.response_format else None
        eos = tokenizer.eos_token_ids
        generated, finish = 0, "stop"
        for r in stream_generate(model, tokenizer, ids, params, max_tokens=max_tokens,
                                 stop=self.stop, logits_processors=processors):
            ticket.check()
            final = r.finish_reason is not None and r.token in eos
            top = [(tokenizer.decode([t]), lp) for t, lp in r.top_logprobs] if r.top_logprobs else None
            ticket.emit(TokenEvent(choice, r.text, r.token, tokenizer.decode([r.token]), r.logprob, top, final))
            generated = r.generation_tokens
            finish = r.finish_reason or finish
        ticket.emit(ChoiceDone(choice, finish, generated))
        return generated

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


_DEFAULTED = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def _generation_defaults(tokenizer) -> dict:
    """Sampling defaults the checkpoint recommends (generation_config.json), for unset fields."""
    config = getattr(tokenizer, "generation_config", None) or {}
    if config.get("do_sample") is False:
        return {"temperature": 0.0}
    return {k: config[k] for k in _DEFAULTED if isinstance(config.get(k), (int, float)) and not isinstance(config.get(k), bool)}
