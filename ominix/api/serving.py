"""How the HTTP server meets slow and numerous clients: uvicorn, configured once for `ominix serve`
and the tests alike.

uvicorn times out idle keep-alive connections but never a client that sends its request head slowly
(a slowloris holds a connection, and a file descriptor, forever), and `limit_concurrency` is checked
only once a whole head has arrived. So the h11 protocol here adds:

- a head timeout: a connection that has not sent a complete request head within `head_timeout`
  seconds of connecting (or of its previous response) is closed, with one log line;
- a connection cap: past `max_connections` open connections, a new one is answered 503 and closed
  at once, so the process keeps file descriptors to answer with.

Slow bodies are timed out where the body is read (api/common.py `read_request`), header size is
capped by h11 (`h11_max_incomplete_event_size`).
"""

from __future__ import annotations

import json
import logging
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("ominix.api")

HEAD_TIMEOUT = 10.0  # seconds for a request head (headers) to arrive
BODY_TIMEOUT = 30.0  # seconds of silence while a request body is being read
MAX_HEAD_BYTES = 64 * 1024


def default_max_connections() -> int:
    """Leave file descriptors for models, logs and the loader under the process's limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(1024, soft - 64)) if soft > 0 else 1024


def _busy_response() -> bytes:
    body = json.dumps({"error": {"message": "Too many open connections; try again shortly.",
                                 "type": "server_error", "param": None, "code": "too_many_connections"}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def protocol(head_timeout: float, max_connections: int) -> type:
    """An H11Protocol class with the head timeout and the connection cap."""

    class GuardedH11(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("connection cap (%d) reached: refused %s", max_connections, _peer(self.client))
                transport.write(_busy_response())
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # a whole head arrived; the body has its own timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head gets the same time

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closed %s: no complete request head within %gs", _peer(self.client), head_timeout)
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11


def _peer(client) -> str:
    return "%s:%d" % tuple(client[:2]) if client else "a client"


def server_config(app, host: str, port: int, *, log_level: str = "info",
                  head_timeout: float = HEAD_TIMEOUT, max_connections: int | None = None):
    """The uvicorn.Config every OminiX server runs with."""
    import uvicorn

    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        http=protocol(head_timeout, max_connections or default_max_connections()),
        timeout_keep_alive=5, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
