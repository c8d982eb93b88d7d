"""Load test on loopback: 32 concurrent streaming clients against one tiny model, then a cancel storm.
Every stream equals its solo greedy output; afterwards nothing is left running and memory is back."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from ominix.engine.llm.tokenizer import load_tokenizer
from tests.server_fixtures import ServerThread, random_qwen3

CLIENTS = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = random_qwen3(tmp_path_factory.mktemp("load") / "tiny", max_position_embeddings=100_000)
    pool = ModelPool(use_catalog=False)
    pool.register(str(path), "tiny")
    with ServerThread(create_app(pool, preload=["tiny"], max_batch=CLIENTS)) as s:
        s.no_eos = {str(t): -100 for t in load_tokenizer(path).eos_token_ids}
        yield s


def messages(i):
    return [{"role": "user", "content": f"client {i}: tell me about {i * 37 % 101}"}]


def new_client(server):
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)


async def stream_text(client, i, max_tokens, drop_after=None, **extra) -> str:
    pieces = []
    stream = await client.chat.completions.create(model="tiny", messages=messages(i), max_tokens=max_tokens,
                                                  temperature=0, stream=True, **extra)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            if drop_after is not None and len(pieces) >= drop_after:
                await stream.close()  # the client goes away mid-stream
                break
    return "".join(pieces)


def memory(server) -> int:
    """MLX active memory, less what the prompt cache holds on purpose."""
    h = httpx.get(server.url + "/health").json()
    return h["active_memory_bytes"] - h["prompt_cache_bytes"]


def wait_idle(server, timeout=20):
    worker = server.app.state.worker
    deadline = time.time() + timeout
    while (worker.busy.is_set() or worker.running_sequences) and time.time() < deadline:
        time.sleep(0.02)
    h = httpx.get(server.url + "/health").json()
    assert h["running_sequences"] == 0 and h["queue_depth"] == 0 and not worker.busy.is_set()


def test_32_concurrent_streams_equal_solo_and_memory_returns(server):
    async def solo():
        client = new_client(server)
        return [await stream_text(client, i, 16) for i in range(CLIENTS)]

    async def together():
        client = new_client(server)
        return await asyncio.gather(*(stream_text(client, i, 16) for i in range(CLIENTS)))

    expected = asyncio.run(solo())
    wait_idle(server)
    server.app.state.worker.prompt_cache.clear()
    baseline = memory(server)
    steps = server.app.state.worker.stats["decode_steps"]
    got = asyncio.run(together())
    assert got == expected
    assert server.app.state.worker.stats["decode_steps"] - steps < CLIENTS * 16 / 4  # batched
    wait_idle(server)
    assert memory(server) <= baseline + 4 * 1024 * 1024


def test_cancel_storm_leaves_nothing_behind(server):
    wait_idle(server)
    server.app.state.worker.prompt_cache.clear()
    baseline = memory(server)
    cancelled = server.app.state.worker.cancelled_jobs

    async def storm():
        client = new_client(server)
        return await asyncio.gather(*(stream_text(client, i, 5000, drop_after=3, logit_bias=server.no_eos)
                                      for i in range(CLIENTS)))

    texts = asyncio.run(storm())
    assert all(texts)
    wait_idle(server)
    assert server.app.state.worker.cancelled_jobs - cancelled == CLIENTS
    for group in server.app.state.worker._lanes.values():
        assert group.batch is None or group.batch.nbytes == 0
    assert memory(server) <= baseline + 4 * 1024 * 1024
    # And it still serves.
    async def one():
        return await stream_text(new_client(server), 1, 4)

    assert asyncio.run(one())
