"""The one inference thread: every MLX operation of the server runs here, as stepped jobs.

HTTP handlers never touch MLX. They `submit()` a job with a callback (`sink`) and get a Ticket; the
worker reports events through the sink (tokens, segments, images, a final result). `stream()`
adapts that to asyncio (a JobStream): events arrive on an asyncio.Queue through
`loop.call_soon_threadsafe`, and `cancel()` stops the request before its next step.

Jobs come in two shapes:
- a `StepJob` (embeddings, and speech, image and other kinds): begin, then one bounded `step()`
  per turn until it says it is done, then result and close;
- an LLM `GenerateJob` (engine/llm/jobs.py): its sequences join their model's `LLMLane`, which
  prefills and decodes all of that model's requests together (continuous batching).

The loop, once per turn:
1. take new tickets (the wait queue is bounded: `QueueFull` -> HTTP 429);
2. end cancelled and timed-out requests at once (their rows leave the batch, memory is freed);
3. admit waiting tickets whose model is resident (loads run on the pool's loader thread meanwhile);
4. give every model with LLM work one lane turn (one prefill chunk + one decode step), and every
   running StepJob one step. No job holds the thread for more than one bounded step, and no model
   starves another.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

from ominix.engine.job import (  # noqa: F401  (StepJob and the events are the worker's interface)
    DEFAULT,
    CallJob,
    Cancelled,
    Done,
    Failed,
    JobStream,
    QueueFull,
    RequestTimeout,
    StepJob,
    Ticket,
    WorkerStopped,
)

log = logging.getLogger("ominix.worker")


class Worker:
    def __init__(self, pool, *, max_batch: int = 32, max_queue: int = 256,
                 request_timeout: float | None = None, prompt_cache_bytes: int = 1 << 30,
                 prefill_step_size: int | None = None, metrics=None):
        from ominix.engine.llm.lane import LaneShared
        from ominix.engine.llm.prompt_cache import PromptCache

        if prefill_step_size is None:
            from ominix.engine.llm.generate import default_prefill_step_size

            prefill_step_size = default_prefill_step_size()
        self.pool = pool
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.shared = LaneShared(PromptCache(prompt_cache_bytes), prefill_step_size, metrics)
        self.prompt_cache = self.shared.prompt_cache
        self.stats = self.shared.stats
        self.stats.update(timeouts=0, rejected=0, job_steps=0)
        pool.on_unload = self._on_unload
        self._inbox: queue.Queue[Ticket | None] = queue.Queue()
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._stepping: list[Ticket] = []  # running StepJobs, in arrival order
        self._lanes: dict = {}  # model id -> LLMLane
        self._pending = 0  # tickets submitted but not admitted yet (bounded by max_queue)
        self._pending_lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ominix-inference", daemon=True)
        self.busy = threading.Event()  # set while any request is waiting or running
        self.completed = 0  # tickets finished, by any means
        self.cancelled_jobs = 0  # tickets stopped because their client went away
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

    @property
    def running_jobs(self) -> int:
        return len(self._stepping)

    def submit(self, model: str, job, sink: Callable[[Any], None], keep_alive=DEFAULT) -> Ticket:
        if self._stopping:
            raise WorkerStopped("The server is shutting down.")
        with self._pending_lock:
            if self._pending >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"The server is at capacity: {self._pending} requests are waiting. Retry shortly.")
            self._pending += 1
        deadline = time.perf_counter() + self.request_timeout if self.request_timeout else None
        ticket = Ticket(model, job, sink, keep_alive=keep_alive, deadline=deadline)
        self._inbox.put(ticket)
        return ticket

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run a model-less function on the inference thread and wait for it."""
        box: queue.Queue = queue.Queue()
        self.submit("", CallJob(fn), lambda ev: box.put(ev) if isinstance(ev, (Done, Failed)) else None)
        event = box.get(timeout=timeout)
        if isinstance(event, Failed):
            raise event.error
        return event.result

    def stream(self, model: str, job, keep_alive=DEFAULT) -> "JobStream":
        """Submit `job`; iterate the returned JobStream in the event loop for its events."""
        return JobStream(self, model, job, keep_alive)

    async def run(self, model: str, job, keep_alive=DEFAULT) -> Any:
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
            self._turn()
            now = time.time()
            if now - last_expiry > 0.1:
                last_expiry = now
                self.pool.expire(now)
            self._update_state()
        for ticket in list(self._waiting) + list(self._running):
            self._end(ticket, Failed(WorkerStopped("The server is shutting down.")))

    def _take_inbox(self) -> bool:
        """Move new tickets to the waiting list; block briefly when there is nothing to do."""
        active = self._stepping or any(lane.running for lane in self._lanes.values())
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
        self.running_sequences = sum(lane.running for lane in self._lanes.values())
        self.batch_sizes = {m: len(lane.decoding) for m, lane in self._lanes.items()}
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

    # -- admission --

    def _admit(self) -> None:
        blocked: set[str] = set()  # models whose earlier tickets still wait: keep FIFO per model
        for ticket in list(self._waiting):
            if ticket.model in blocked:
                continue
            resident = self._resident_for(ticket)
            if resident is False:
                blocked.add(ticket.model)
                continue
            if ticket.ended:
                continue
            if isinstance(ticket.job, StepJob):
                self._start(ticket, resident)
                self._begin_steps(ticket, resident)
            elif not self._join_lane(ticket, resident):
                blocked.add(ticket.model)

    def _resident_for(self, ticket: Ticket):
        """The ticket's resident model, None for a model-less job, False while it loads. A failed
        load fails the ticket (once; the ticket keeps its load instead of retrying)."""
        from ominix.engine.pool import ModelLoadError

        if not ticket.model:
            return None
        try:
            ref = self.pool.resolve(ticket.model)
            resident = self.pool.lookup(ref.id)
            if resident is None:
                if ticket.load is None:
                    ticket.load = self.pool.start_load(ref, ticket.keep_alive)
                if not ticket.load.done():
                    return False
                resident = ticket.load.result()
            _check_kind(resident, ticket.job)
            return resident
        except Exception as e:
            if not isinstance(e, (ModelLoadError, LookupError, ValueError)):
                log.exception("loading model %r failed", ticket.model)
            self._start(ticket)
            self._end(ticket, Failed(e))
            return None

    def _join_lane(self, ticket: Ticket, resident) -> bool:
        """An LLM job's sequences join their model's lane; False when the batch is full."""
        lane = self._lane(resident)
        if lane.running and lane.running + ticket.job.sequence_count() > self.max_batch:
            return False
        self._start(ticket, resident)
        try:
            ticket.sequences = ticket.job.begin(resident, ticket)
        except Exception as e:
            self._fail(ticket, e)
            return True
        ticket.open = len(ticket.sequences)
        ticket.usage = {"prompt_tokens": ticket.job.prompt_tokens, "completion_tokens": 0, "cached_tokens": 0}
        self.stats["prompt_tokens"] += ticket.job.prompt_tokens
        lane.add(ticket.sequences)
        return True

    def _begin_steps(self, ticket: Ticket, resident) -> None:
        try:
            ticket.job.begin(resident, ticket)
        except Exception as e:
            self._fail(ticket, e)
            return
        self._stepping.append(ticket)

    def _start(self, ticket: Ticket, resident=None) -> None:
        self._waiting.remove(ticket)
        with self._pending_lock:
            self._pending -= 1
        self._running.append(ticket)
        if resident is not None:
            ticket.resident = resident
            resident.active += 1

    # -- one turn --

    def _turn(self) -> None:
        for lane in list(self._lanes.values()):
            if lane.running:
                try:
                    lane.turn()
                except Exception as e:  # a model that fails mid-batch fails its requests, not the server
                    for seq in list(lane.prefilling) + list(lane.decoding):
                        self._fail(seq.ticket, e)
        for ticket in list(self._stepping):
            if ticket.ended:
                continue
            try:
                finished = ticket.job.step()
                self.stats["job_steps"] += 1
                if finished:
                    self._end(ticket, Done(ticket.job.result()))
            except Cancelled:
                self.cancelled_jobs += 1
                self._end(ticket, Failed(Cancelled()))
            except Exception as e:
                self._fail(ticket, e)

    def _seq_finished(self, seq) -> None:
        ticket = seq.ticket
        ticket.usage["completion_tokens"] += len(seq.tokens)
        ticket.open -= 1
        if ticket.open == 0:
            self._end(ticket, Done(dict(ticket.usage)))

    # -- ending --

    def _fail(self, ticket: Ticket, e: Exception) -> None:
        if not _expected(e):
            log.exception("job for model %r failed", ticket.model, exc_info=e)
        self._end(ticket, Failed(e))

    def _end(self, ticket: Ticket, event) -> None:
        """Finish a ticket: free its sequences or job, report the last event, release its model."""
        if ticket.ended:
            return
        ticket.ended = True
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            with self._pending_lock:
                self._pending -= 1
        if ticket in self._running:
            self._running.remove(ticket)
        if ticket in self._stepping:
            self._stepping.remove(ticket)
        if isinstance(ticket.job, StepJob):
            try:
                ticket.job.close()
            except Exception:
                log.exception("closing a job of model %r failed", ticket.model)
        for seq in ticket.sequences:
            if seq.finish is None:
                seq.finish = "cancelled"
        for lane in self._lanes.values():
            lane.drop_finished()
        self.completed += 1
        ticket.emit(event)
        if ticket.resident is not None:
            self.pool.release(ticket.resident, ticket.keep_alive)
            ticket.resident = None

    def _lane(self, resident):
        from ominix.engine.llm.lane import LLMLane

        lane = self._lanes.get(resident.id)
        if lane is None or lane.resident is not resident:
            lane = self._lanes[resident.id] = LLMLane(resident, self.shared, self._seq_finished)
        return lane

    def _on_unload(self, model_id: str) -> None:
        self.prompt_cache.forget_model(model_id)
        lane = self._lanes.get(model_id)
        if lane is not None and not lane.running:
            del self._lanes[model_id]


def _check_kind(resident, job) -> None:
    from ominix import kinds

    wanted = getattr(job, "kind", None)
    if wanted and resident.kind != wanted:
        raise kinds.mismatch(resident.id, kinds.KINDS[resident.kind], f"what {kinds.KINDS[wanted].noun} does")


def _expected(e: Exception) -> bool:
    """Errors that are the request's fault or a known model problem: no traceback in the log."""
    from ominix.engine.pool import ModelLoadError

    return isinstance(e, (ValueError, LookupError, ModelLoadError))


def _release_memory() -> None:
    try:
        import mlx.core as mx

        mx.clear_cache()
    except Exception:
        pass
