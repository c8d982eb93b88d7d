"""Prompt cache: shared prefixes are not recomputed, outputs are unchanged, memory is bounded."""

from __future__ import annotations

import mlx.core as mx
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from ominix.engine.llm.prompt_cache import PromptCache
from tests.server_fixtures import ServerThread, random_qwen3


def state(n: int, fill: float = 1.0, layers: int = 2):
    return [(mx.full((1, 2, n, 4), fill), mx.full((1, 2, n, 4), fill)) for _ in range(layers)]


def test_longest_prefix_wins_and_never_the_whole_prompt():
    cache = PromptCache(1 << 20)
    cache.store("m", list(range(10)), state(10, 1.0))
    cache.store("m", [0, 1, 2, 3, 4, 5, 99, 98], state(8, 2.0))
    n, kv = cache.lookup("m", list(range(12)))
    assert n == 10 and kv[0][0].shape[2] == 10 and kv[0][0][0, 0, 0, 0].item() == 1.0
    n, _ = cache.lookup("m", list(range(10)))  # the last prompt token must still run
    assert n == 9
    n, kv = cache.lookup("m", [0, 1, 2, 3, 4, 5, 99, 98, 7])
    assert n == 8 and kv[0][0][0, 0, 0, 0].item() == 2.0
    assert cache.lookup("other", list(range(12))) == (0, None)
    assert cache.lookup("m", [50, 51, 52, 53, 54]) == (0, None)
    # A longer sequence replaces the entry it extends.
    cache.store("m", list(range(20)), state(20))
    assert len(cache) == 2


def test_bytes_bound_evicts_least_recently_used():
    one = sum(k.nbytes + v.nbytes for k, v in state(10))
    cache = PromptCache(int(one * 2.5))
    for base in (0, 100, 200):
        cache.store("m", list(range(base, base + 10)), state(10))
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    assert cache.lookup("m", list(range(0, 11)))[0] == 0  # the oldest went
    cache.lookup("m", list(range(100, 111)))  # touch: now 200.. is the oldest
    cache.store("m", list(range(300, 310)), state(10))
    assert cache.lookup("m", list(range(200, 211)))[0] == 0
    assert cache.lookup("m", list(range(100, 111)))[0] == 10
    cache.forget_model("m")
    assert len(cache) == 0 and cache.nbytes == 0


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    path = random_qwen3(tmp_path_factory.mktemp("pc") / "tiny", max_position_embeddings=4096)
    out = []
    for cache_bytes in (1 << 28, 0):
        pool = ModelPool(use_catalog=False)
        pool.register(str(path), "tiny")
        out.append(ServerThread(create_app(pool, prompt_cache_bytes=cache_bytes)).__enter__())
    yield out
    for s in out:
        s.__exit__(None, None, None)


def chat(server, messages, max_tokens=12):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens,
                                          temperature=0, logit_bias={"0": -100, "1": -100, "2": -100})


def test_second_turn_prefills_only_the_new_tokens_and_answers_the_same(servers):
    cached, uncached = servers
    system = {"role": "system", "content": "You are terse. " * 60}
    turn1 = [system, {"role": "user", "content": "hello there"}]
    worker = cached.app.state.worker
    r1 = chat(cached, turn1)
    assert r1.usage.prompt_tokens_details.cached_tokens == 0
    turn2 = turn1 + [{"role": "assistant", "content": r1.choices[0].message.content},
                     {"role": "user", "content": "and again"}]
    before = worker.stats["prefill_tokens"]
    r2 = chat(cached, turn2)
    cached_tokens = r2.usage.prompt_tokens_details.cached_tokens
    # At least the whole first turn (random tokens of the answer need not re-tokenize the same).
    assert cached_tokens >= r1.usage.prompt_tokens
    assert worker.stats["prefill_tokens"] - before == r2.usage.prompt_tokens - cached_tokens
    # Same output as a server without a prompt cache.
    assert chat(uncached, turn1).choices[0].message.content == r1.choices[0].message.content
    plain = chat(uncached, turn2)
    assert plain.choices[0].message.content == r2.choices[0].message.content
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    # Many requests sharing the system prompt reuse it.
    r3 = chat(cached, [system, {"role": "user", "content": "something else entirely"}])
    assert r3.usage.prompt_tokens_details.cached_tokens >= 60
