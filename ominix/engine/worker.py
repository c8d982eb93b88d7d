"""The one inference thread: stepped jobs of every kind, fair turns, cancel and timeouts.

(Being built: the StepJob protocol below is what speech, image and embedding jobs implement.)
"""

from __future__ import annotations


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
