"""The inference thread: every MLX operation of the server runs here, with continuous batching.

HTTP handlers never touch MLX. They `submit()` a job with a callback (`sink`) and get a Ticket; the
inference thread reports events through the sink (tokens, embeddings, a final result). `stream()`
adapts that to asyncio (a JobStream): events arrive on an asyncio.Queue through
`loop.call_soon_threadsafe`, and `cancel()` stops the request at the next step.

The loop, once per iteration:
1. take new tickets (the wait queue is bounded: `QueueFull` -> HTTP 429);
2. drop cancelled and timed-out requests at once (their rows leave the batch, memory is freed);
3. admit waiting tickets whose model is resident (loads run on the pool's loader thread meanwhile);
   a generation job becomes one Sequence per prompt x choice;
4. prefill one chunk of one new sequence (alone, reusing a cached prefix from the prompt cache);
   when its prompt is done it samples its first token and joins its model's running batch;
5. decode one step for every model's batch: [B, 1] tokens in one forward (engine/batch.py), then
   each sequence samples with its own parameters, seed, penalties and logits processors.
A sequence gives exactly the tokens it would give decoding alone (tests/test_batching.py).
Other jobs (embeddings, model-less calls) run whole when admitted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("ominix.scheduler")

DEFAULT = "default"  # keep_alive not given: the model's own


class Cancelled(Exception):
    """Raised inside a job when its ticket was cancelled."""


class QueueFull(Exception):
    """Too many requests are waiting; the client should retry later (HTTP 429)."""


class SchedulerStopped(Exception):
    """The server is shutting down (HTTP 503)."""


class RequestTimeout(Exception):
    """The request ran past the server's --request-timeout (HTTP 504)."""


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
    job: Callable  # job(resident, ticket) -> result, or a GenerateJob (batched)
    sink: Callable[[Any], None]  # receives every event; must be thread-safe and non-blocking
    cancelled: threading.Event = field(default_factory=threading.Event)
    keep_alive: Any = DEFAULT  # seconds, None = forever, or DEFAULT
    deadline: float | None = None
    submitted: float = field(default_factory=time.perf_counter)
    # inference-thread state
    resident: Any = None
    load: Any = None  # Future of the model's load, while it runs
    sequences: list = field(default_factory=list)
    open: int = 0
    usage: dict = field(default_factory=dict)
    ended: bool = False

    def emit(self, event) -> None:
        self.sink(event)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        self.cancelled.set()


class Group:
    """One resident model's sequences: those prefilling, and the running decode batch."""

    def __init__(self, resident):
        from ominix.engine.batch import Batch, batchable

        self.resident = resident
        self.batchable = batchable(resident.model)
        self.batch = Batch(resident.model) if self.batchable else None
        self.prefilling: deque = deque()
        self.decoding: list = []  # row order of the batch

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)


class Scheduler:
    def __init__(self, pool, *, max_batch: int = 32, max_queue: int = 256,
                 request_timeout: float | None = None, prompt_cache_bytes: int = 1 << 30,
                 prefill_step_size: int | None = None, metrics=None):
        from ominix.engine.prompt_cache import PromptCache

        self.pool = pool
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        if prefill_step_size is None:
            from ominix.engine.generate import default_prefill_step_size

            prefill_step_size = default_prefill_step_size()
        self.prefill_step_size = prefill_step_size
        self.prompt_cache = PromptCache(prompt_cache_bytes)
        self.metrics = metrics  # optional: .ttft / .token_latency histograms (api/metrics.py)
        pool.on_unload = self._on_unload
        self._inbox: queue.Queue[Ticket | None] = queue.Queue()
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._groups: dict[str, Group] = {}
        self._pending = 0  # tickets submitted but not admitted yet (bounded by max_queue)
        self._pending_lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ominix-inference", daemon=True)
        self.busy = threading.Event()  # set while any request is waiting or running
        self.completed = 0  # tickets finished, by any means
        self.cancelled_jobs = 0  # tickets stopped because their client went away
        self.stats = {"prompt_tokens": 0, "prefill_tokens": 0, "cached_tokens": 0, "generated_tokens": 0,
                      "decode_steps": 0, "timeouts": 0, "rejected": 0}
        self.running_sequences = 0
        self.batch_sizes: dict[str, int] = {}

    # ---- any thread ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.pool.shutdown()

    @property
    def queue_depth(self) -> int:
        return self._pending

    def submit(self, model: str, job: Callable, sink: Callable[[Any], None], keep_alive=DEFAULT) -> Ticket:
        if self._stopping:
            raise SchedulerStopped("The server is shutting down.")
        with self._pending_lock:
            if self._pending >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"The server is at capacity: {self._pending} requests are waiting. Retry shortly.")
            self._pending += 1
        deadline = time.perf_counter() + self.request_timeout if self.request_timeout else None
        ticket = Ticket(model, job, sink, keep_alive=keep_alive, deadline=deadline)
        self._inbox.put(ticket)
        return ticket

    def call(self, job: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run a model-less function on the inference thread and wait for it."""
        box: queue.Queue = queue.Queue()
        self.submit("", lambda _resident, _ticket: job(), lambda ev: box.put(ev) if isinstance(ev, (Done, Failed)) else None)
        event = box.get(timeout=timeout)
        if isinstance(event, Failed):
            raise event.error
        return event.result

    def stream(self, model: str, job: Callable, keep_alive=DEFAULT) -> "JobStream":
        """Submit `job`; iterate the returned JobStream in the event loop for its events."""
        return JobStream(self, model, job, keep_alive)

    async def run(self, model: str, job: Callable, keep_alive=DEFAULT) -> Any:
        """Submit `job`, wait for it, return its result or raise its error."""
        stream = self.stream(model, job, keep_alive)
        try:
            async for event in stream:
                if isinstance(event, Done):
                    return event.result
                if isinstance(event, Failed):
                    raise event.error
        finally:
            stream.cancel()
        raise RuntimeError("job ended without a result")

    # ---- the inference thread -----------------------------------------------------------------

    def _run(self) -> None:
        last_expiry = 0.0
        while True:
            if not self._take_inbox():
                break
            self._reap()
            self._admit()
            self._prefill_one()
            self._decode()
            now = time.time()
            if now - last_expiry > 0.1:
                last_expiry = now
                self.pool.expire(now)
            self._update_state()
        for ticket in list(self._waiting) + list(self._running):
            self._end(ticket, Failed(SchedulerStopped("The server is shutting down.")))

    def _take_inbox(self) -> bool:
        """Move new tickets to the waiting list; block briefly when there is nothing to do."""
        active = self._running or any(g.running for g in self._groups.values())
        loading = bool(self._waiting)
        timeout = 0.0 if active else (0.005 if loading else 0.1)
        try:
            ticket = self._inbox.get(timeout=timeout) if timeout else self._inbox.get_nowait()
            while True:
                if ticket is None:
                    return False
                self._waiting.append(ticket)
                self.busy.set()
                ticket = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _update_state(self) -> None:
        self.running_sequences = sum(g.running for g in self._groups.values())
        self.batch_sizes = {m: len(g.decoding) for m, g in self._groups.items()}
        if not self._waiting and not self._running and self._inbox.empty():
            if self.busy.is_set():
                self.busy.clear()
                _release_memory()

    def _reap(self) -> None:
        now = time.perf_counter()
        for ticket in list(self._waiting) + list(self._running):
            if ticket.cancelled.is_set():
                self.cancelled_jobs += 1
                self._end(ticket, Failed(Cancelled()))
            elif ticket.deadline is not None and now > ticket.deadline:
                self.stats["timeouts"] += 1
                self._end(ticket, Failed(RequestTimeout(
                    f"The request did not finish within the server's timeout ({self.request_timeout:g} s).")))

    def _admit(self) -> None:
        from ominix.engine.pool import ModelLoadError

        blocked: set[str] = set()  # models whose earlier tickets still wait: keep FIFO per model
        for ticket in list(self._waiting):
            if ticket.model in blocked:
                continue
            if not ticket.model:
                self._start(ticket)
                self._run_whole(ticket, None)
                continue
            try:
                ref = self.pool.resolve(ticket.model)
                resident = self.pool.lookup(ref.id)
                if resident is None:
                    # The ticket keeps its load: a failed load fails it (once) instead of retrying.
                    if ticket.load is None:
                        ticket.load = self.pool.start_load(ref, ticket.keep_alive)
                    if not ticket.load.done():
                        blocked.add(ticket.model)
                        continue
                    resident = ticket.load.result()
            except (ModelLoadError, LookupError) as e:
                self._start(ticket)
                self._end(ticket, Failed(e))
                continue
            except Exception as e:
                log.exception("loading model %r failed", ticket.model)
                self._start(ticket)
                self._end(ticket, Failed(e))
                continue
            if isinstance(ticket.job, GenerateJob):
                group = self._group(resident)
                if group.running and group.running + ticket.job.sequence_count() > self.max_batch:
                    blocked.add(ticket.model)
                    continue
                self._start(ticket, resident)
                try:
                    ticket.sequences = ticket.job.begin(resident, ticket)
                except Exception as e:
                    self._fail(ticket, e)
                    continue
                ticket.open = len(ticket.sequences)
                ticket.usage = {"prompt_tokens": ticket.job.prompt_tokens, "completion_tokens": 0, "cached_tokens": 0}
                self.stats["prompt_tokens"] += ticket.job.prompt_tokens
                group.prefilling.extend(ticket.sequences)
            else:
                self._start(ticket, resident)
                self._run_whole(ticket, resident)

    def _start(self, ticket: Ticket, resident=None) -> None:
        self._waiting.remove(ticket)
        with self._pending_lock:
            self._pending -= 1
        self._running.append(ticket)
        if resident is not None:
            ticket.resident = resident
            resident.active += 1

    def _run_whole(self, ticket: Ticket, resident) -> None:
        try:
            result = ticket.job(resident, ticket)
        except Cancelled:
            self.cancelled_jobs += 1
            self._end(ticket, Failed(Cancelled()))
        except Exception as e:
            self._fail(ticket, e)
        else:
            self._end(ticket, Done(result))

    def _fail(self, ticket: Ticket, e: Exception) -> None:
        if not _expected(e):
            log.exception("job for model %r failed", ticket.model, exc_info=e)
        self._end(ticket, Failed(e))

    def _end(self, ticket: Ticket, event) -> None:
        """Finish a ticket: free its sequences, report the last event, release its model."""
        if ticket.ended:
            return
        ticket.ended = True
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            with self._pending_lock:
                self._pending -= 1
        if ticket in self._running:
            self._running.remove(ticket)
        for seq in ticket.sequences:
            if seq.finish is None:
                seq.finish = "cancelled"
        self._drop_finished()
        self.completed += 1
        ticket.emit(event)
        if ticket.resident is not None:
            self.pool.release(ticket.resident, ticket.keep_alive)
            ticket.resident = None

    def _group(self, resident) -> Group:
        group = self._groups.get(resident.id)
        if group is None or group.resident is not resident:
            group = self._groups[resident.id] = Group(resident)
        return group

    def _on_unload(self, model_id: str) -> None:
        self.prompt_cache.forget_model(model_id)
        group = self._groups.get(model_id)
        if group is not None and not group.running:
            del self._groups[model_id]

    # -- prefill and decode --

    def _prefill_one(self) -> None:
        import mlx.core as mx

        for group in self._groups.values():
            if not group.prefilling:
                continue
            seq = group.prefilling[0]
            model = group.resident.model
            if seq.cache is None:
                self._setup_cache(seq, group)
            if len(seq.todo) > 1:  # one chunk, then let the running batch take a step
                n = min(self.prefill_step_size, len(seq.todo) - 1)
                model(mx.array(seq.todo[:n], dtype=mx.uint32)[None], cache=seq.cache)
                mx.eval([c.state for c in seq.cache])
                self.stats["prefill_tokens"] += n
                seq.todo = seq.todo[n:]
                return
            logits = model(mx.array(seq.todo, dtype=mx.uint32)[None], cache=seq.cache)[:, -1, :]
            self.stats["prefill_tokens"] += 1
            out = seq.sampler(logits)
            mx.eval(out.arrays())
            group.prefilling.popleft()
            self._accept(seq, out)
            if seq.finish is None:
                if group.batchable:
                    group.batch.join(seq.cache)
                    seq.cache = None
                group.decoding.append(seq)
            else:
                self._store_prefix(group, seq, [c.state for c in seq.cache])
                self._seq_done(seq)
            return

    def _setup_cache(self, seq, group: Group) -> None:
        from ominix.engine.batch import cache_from_state
        from ominix.engine.cache import make_cache

        n, state = (0, None)
        if group.batchable:
            n, state = self.prompt_cache.lookup(group.resident.id, seq.prompt)
        seq.cache = cache_from_state(state) if state is not None else make_cache(group.resident.model)
        seq.cached = n
        seq.todo = seq.prompt[n:]
        self.stats["cached_tokens"] += n
        if seq.counts_usage:
            seq.ticket.usage["cached_tokens"] += n

    def _decode(self) -> None:
        import mlx.core as mx

        for group in list(self._groups.values()):
            if not group.decoding:
                continue
            seqs = group.decoding
            if group.batchable:
                logits = group.batch.step([s.last for s in seqs])
                outs = [s.sampler(logits[i : i + 1]) for i, s in enumerate(seqs)]
            else:
                model = group.resident.model
                outs = [s.sampler(model(mx.array([[s.last]], dtype=mx.uint32), cache=s.cache)[:, -1, :]) for s in seqs]
            mx.eval([a for o in outs for a in o.arrays()])
            self.stats["decode_steps"] += 1
            for seq, out in zip(seqs, outs):
                self._accept(seq, out)
                if seq.finish is not None:
                    self._seq_done(seq)
        self._drop_finished()

    def _drop_finished(self) -> None:
        """Rows of finished or cancelled sequences leave their batch (their state is stored in the
        prompt cache first when they ended normally)."""
        for group in self._groups.values():
            if any(s.finish for s in group.prefilling):
                group.prefilling = deque(s for s in group.prefilling if not s.finish)
            if not any(s.finish for s in group.decoding):
                continue
            keep = []
            for i, seq in enumerate(group.decoding):
                if seq.finish is None:
                    keep.append(i)
                elif seq.finish in ("stop", "length") and group.batchable:
                    self._store_prefix(group, seq, group.batch.row_state(i))
            if group.batchable:
                group.batch.leave(keep)
            group.decoding = [group.decoding[i] for i in keep]

    def _store_prefix(self, group: Group, seq, state) -> None:
        import mlx.core as mx

        if not group.batchable or self.prompt_cache.max_bytes <= 0:
            return
        tokens = seq.prompt + seq.tokens[:-1]  # the last token was sampled, never fed
        state = [(mx.contiguous(k), mx.contiguous(v)) for k, v in state]
        mx.eval(state)
        self.prompt_cache.store(group.resident.id, tokens, state)

    def _accept(self, seq, out) -> None:
        event = seq.accept(out)
        self.stats["generated_tokens"] += 1
        if self.metrics is not None:
            now = time.perf_counter()
            if len(seq.tokens) == 1:
                self.metrics.ttft.observe(now - seq.ticket.submitted)
            else:
                self.metrics.token_latency.observe(now - seq.last_time)
            seq.last_time = now
        seq.ticket.emit(event)
        if seq.finish is not None:
            seq.ticket.emit(ChoiceDone(seq.choice, seq.finish, len(seq.tokens)))

    def _seq_done(self, seq) -> None:
        ticket = seq.ticket
        ticket.usage["completion_tokens"] += len(seq.tokens)
        ticket.open -= 1
        if ticket.open == 0:
            self._end(ticket, Done(dict(ticket.usage)))


class JobStream:
    """Events of one job, delivered in the event loop; ends after Done / Failed.

    Events cross threads through `loop.call_soon_threadsafe`; `cancel()` (client gone) makes the
    job stop at its next check. Must be created inside a running event loop.
    """

    def __init__(self, scheduler: Scheduler, model: str, job: Callable, keep_alive=DEFAULT):
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.ticket = scheduler.submit(model, job, self._sink, keep_alive)

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


class Sequence:
    """One choice being generated: its sampler (seed, penalties, processors), detokenizer, stop
    strings and limits, its cache while it prefills, and its tokens."""

    def __init__(self, ticket, tokenizer, choice: int, prompt: list[int], params, max_tokens: int,
                 stop: list[str], processors, counts_usage: bool):
        from ominix.engine.sample import Sampler
        from ominix.engine.tokenizer import StopMatcher

        self.ticket = ticket
        self.tokenizer = tokenizer
        self.choice = choice
        self.prompt = prompt
        self.params = params
        self.max_tokens = max_tokens
        self.sampler = Sampler(params, prompt_ids=prompt, logits_processors=processors)
        self.detokenizer = tokenizer.detokenizer()
        self.stopper = StopMatcher(stop)
        self.eos = tokenizer.eos_token_ids
        self.counts_usage = counts_usage  # the first choice of each prompt reports cached tokens
        self.cache = None  # per-layer caches while prefilling (and for unbatchable models)
        self.todo: list[int] = []
        self.cached = 0
        self.tokens: list[int] = []
        self.finish: str | None = None
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
        final = token in self.eos
        if final:
            text = self._flush()[0]
            self.finish = "stop"
        else:
            text, stopped = self.stopper.feed(self.detokenizer.add_token(token))
            if stopped:
                self.finish = "stop"
            elif len(self.tokens) == self.max_tokens:
                tail, stopped = self._flush()
                text += tail
                self.finish = "stop" if stopped else "length"
        return TokenEvent(self.choice, text, token, self.tokenizer.decode([token]), logprob, top, final)

    def _flush(self) -> tuple[str, bool]:
        # The end: release text held back by the detokenizer and the stop matcher.
        tail, stopped = self.stopper.feed(self.detokenizer.finalize())
        return (tail if stopped else tail + self.stopper.flush()), stopped


@dataclass
class GenerateJob:
    """One chat or text completion request: every prompt x n choices, decoded as batch rows.

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
    prompt_tokens: int = 0

    def sequence_count(self) -> int:
        return len(self.prompts) * self.n

    def begin(self, resident, ticket: Ticket) -> list[Sequence]:
        """Prepare every prompt, report PromptStarted for each, return the sequences to run."""
        from ominix.engine.sample import SamplingParams

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
                sampling = {**_generation_defaults(tokenizer), **self.sampling}
                if sampling.get("seed") is not None:
                    sampling["seed"] = sampling["seed"] + j  # n choices differ, reproducibly
                processors = [self._constraint(tokenizer, model)] if self.response_format else None
                sequences.append(Sequence(ticket, tokenizer, p * self.n + j, ids, SamplingParams(**sampling),
                                          max_tokens, self.stop, processors, counts_usage=j == 0))
        return sequences

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
