"""Slow and numerous clients on real sockets: heads and bodies that never finish are timed out, a
connection cap keeps the server answering, and a client hanging up mid-upload is one log line.

Timeouts are set to a second so each test is bounded (a few seconds), with generous margins."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
CAP = 24


@pytest.fixture
def server():
    app = create_app(ModelPool(), body_timeout=BODY_TIMEOUT)
    with ServerThread(app, head_timeout=HEAD_TIMEOUT, max_connections=CAP) as s:
        yield s


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open that long."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
        return got
    except socket.timeout:
        return None
    except ConnectionResetError:
        return got


def test_slow_request_heads_are_closed(server):
    socks = [connect(server) for _ in range(CAP - 4)]
    for sock in socks:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
    started = time.monotonic()
    for sock in socks:
        assert closed_within(sock, HEAD_TIMEOUT + 5) is not None, "a slow head was held open"
    assert time.monotonic() - started < HEAD_TIMEOUT + 6
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200


def test_an_idle_connection_after_a_response_is_closed_too(server):
    sock = connect(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    time.sleep(0.3)
    sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next head starts and stalls
    got = closed_within(sock, HEAD_TIMEOUT + 6)
    assert got is not None and got.startswith(b"HTTP/1.1 200")


def test_slow_bodies_get_a_408(server):
    sock = connect(server)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"model\": ")
    got = closed_within(sock, BODY_TIMEOUT + 5)
    assert got is not None and b" 408 " in got.split(b"\r\n", 1)[0], got[:200]
    assert b"stopped arriving" in got


def test_connection_cap_answers_503_and_keeps_serving(server):
    held = [connect(server) for _ in range(CAP)]
    time.sleep(0.3)
    extra = connect(server)
    got = closed_within(extra, 5)
    assert got is not None and got.startswith(b"HTTP/1.1 503"), got
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 5
    while True:  # the server notices the closed sockets, then answers again
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not recover after the connections closed"
        time.sleep(0.1)


def test_disconnect_during_upload_is_one_log_line(server, caplog):
    caplog.set_level(logging.INFO, logger="ominix.api")
    for _ in range(3):
        sock = connect(server)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"model\": \"x\", ")
        time.sleep(0.2)
        sock.close()
    deadline = time.monotonic() + 5
    while len([r for r in caplog.records if "disconnected" in r.getMessage()]) < 3:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)
    records = [r for r in caplog.records if r.name.startswith(("ominix", "uvicorn"))]
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in records), \
        [(r.levelname, r.getMessage()) for r in records]
