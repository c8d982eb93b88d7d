"""Huge prompts must not freeze the process: a prompt far beyond the model's context is refused
before any tokenizing, and a big one within bounds is tokenized on a thread that lets go of the GIL,
so /health keeps answering meanwhile (a generous 2 s bound, no fine timing)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, random_qwen3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompts")
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "small")), "small")  # 512 positions
    pool.register(str(random_qwen3(root / "long", max_position_embeddings=100_000)), "long")
    with ServerThread(create_app(pool)) as s:
        yield s


# /health is timed from another process: a thread of this one would stall with the server when
# something holds the GIL, and see nothing wrong.
POLLER = """
import json, select, sys, time, urllib.request
url, latencies = sys.argv[1], []
while not select.select([sys.stdin], [], [], 0.05)[0]:
    started = time.monotonic()
    urllib.request.urlopen(url, timeout=60).read()
    latencies.append(time.monotonic() - started)
print(json.dumps(latencies))
"""


def health_latencies_during(server, send) -> tuple[httpx.Response, list[float]]:
    """Run `send()` while another process times /health every 50 ms."""
    poller = subprocess.Popen([sys.executable, "-c", POLLER, server.url + "/health"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    try:
        response = send()
    finally:
        out, _ = poller.communicate("stop\n", timeout=120)
    return response, json.loads(out)


def chat(server, model: str, text: str):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    return lambda: httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)


def test_a_10_mb_prompt_is_refused_before_tokenizing(server):
    httpx.post(server.url + "/v1/models/small/load", timeout=60)
    started = time.monotonic()
    r, latencies = health_latencies_during(server, chat(server, "small", "hello world " * 900_000))
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and "512" in error["message"]
    assert time.monotonic() - started < 10  # no tokenizing of 10 MB (that takes a minute here)
    assert max(latencies, default=0) < 2.0, latencies


def test_completions_prompts_are_bounded_too(server):
    r = httpx.post(server.url + "/v1/completions", timeout=60,
                   json={"model": "small", "prompt": ["ok", "x" * 2_000_000], "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_a_big_prompt_within_bounds_is_tokenized_off_the_event_loop(server):
    httpx.post(server.url + "/v1/models/long/load", timeout=60)
    r, latencies = health_latencies_during(server, chat(server, "long", "hello world, again. " * 100_000))
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text[:300]
    assert "100000" in r.json()["error"]["message"]
    assert latencies and max(latencies) < 2.0, latencies
