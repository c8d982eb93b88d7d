"""What the worker runs and reports: StepJob, tickets, the final events, and the asyncio side.

A `Ticket` is one submitted request; the worker sends every event to its `sink`, ending with `Done`
(the job's result) or `Failed` (the exception; api/ maps it to an HTTP error). `JobStream` brings
those events into the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT = "default"  # keep_alive not given: the model's own


class Cancelled(Exception):
    """Raised inside a job when its ticket was cancelled."""


class QueueFull(Exception):
    """Too many requests are waiting; the client should retry later (HTTP 429)."""


class WorkerStopped(Exception):
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


class StepJob:
    """A job the worker runs one bounded step at a time, interleaved with every other model's work.

    The worker calls `begin` once, then `step` once per loop turn until it returns True, checking
    cancellation and the request timeout between any two steps, then `result` (delivered as the
    final Done event) and always `close` (also after a cancel, a timeout or an error).
    """

    def begin(self, resident, ticket) -> None:
        """Cheap setup on the worker thread; `ticket.emit(event)` sends events to the client."""

    def step(self) -> bool:
        """One bounded unit of work; True when the job is finished."""
        raise NotImplementedError

    def result(self):
        return None

    def close(self) -> None:
        """Free what the job holds (arrays, caches)."""


class CallJob(StepJob):
    """A plain function as a one-step job (model-less housekeeping such as an unload)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self.value = None

    def step(self) -> bool:
        self.value = self.fn()
        return True

    def result(self):
        return self.value


@dataclass
class Ticket:
    model: str  # "" for a model-less job
    job: Any  # a StepJob or an LLM GenerateJob
    sink: Callable[[Any], None]  # receives every event; must be thread-safe and non-blocking
    cancelled: threading.Event = field(default_factory=threading.Event)
    keep_alive: Any = DEFAULT  # seconds, None = forever, or DEFAULT
    deadline: float | None = None
    submitted: float = field(default_factory=time.perf_counter)
    # worker-thread state
    resident: Any = None
    load: Any = None  # Future of the model's load, while it runs
    sequences: list = field(default_factory=list)  # LLM jobs: one per choice
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


class JobStream:
    """Events of one job, delivered in the event loop; ends after Done / Failed.

    Events cross threads through `loop.call_soon_threadsafe`; `cancel()` (client gone) makes the
    job stop before its next step. Must be created inside a running event loop.
    """

    def __init__(self, worker, model: str, job, keep_alive=DEFAULT):
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.ticket = worker.submit(model, job, self._sink, keep_alive)

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
