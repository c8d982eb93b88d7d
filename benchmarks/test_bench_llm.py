"""pytest-benchmark suite for the LLM core on the small Qwen3 shape of bench_llm.py.

    pytest benchmarks/test_bench_llm.py                       # all variants
    pytest benchmarks/test_bench_llm.py -k 4bit --benchmark-json out.json

Not in the default test path (tests/): it times real work and takes minutes. The side-by-side run
against mlx-lm is `python benchmarks/bench_llm.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bench_llm
from ominix.bench import random_prompt
from ominix.engine.llm.cache import make_cache
from ominix.engine.llm.generate import generate_step
from ominix.engine.load import load_model
from ominix.engine.llm.sample import Sampler, SamplingParams

CHECKPOINTS = Path(os.environ.get("OMINIX_BENCH_DIR", Path("/tmp") / "ominix-bench-llm"))
PROMPT = 512
DECODE = 32


@pytest.fixture(scope="module", params=bench_llm.VARIANTS)
def loaded(request):
    path = bench_llm.make_checkpoints(CHECKPOINTS, [request.param])[request.param]
    model, config = load_model(path)
    return request.param, model, config


def test_prefill(benchmark, loaded):
    """Time to first token for a 512-token prompt: the engine's chunked prefill plus one step."""
    variant, model, config = loaded
    prompt = random_prompt(config["vocab_size"], PROMPT, seed=0)

    def first_token():
        cache = make_cache(model)
        sampler = Sampler(SamplingParams(temperature=0.0, seed=0))
        token, _ = next(generate_step(model, prompt, sampler, cache=cache, max_tokens=1))
        return token, cache

    token, cache = benchmark.pedantic(first_token, rounds=2, warmup_rounds=1)
    assert 0 <= token < config["vocab_size"]
    assert cache[0].offset >= PROMPT - 1  # the whole prompt went through the model
    benchmark.extra_info.update(variant=variant, prompt_tokens=PROMPT,
                                prompt_tps=PROMPT / benchmark.stats.stats.median)


def test_decode(benchmark, loaded):
    """32 greedy tokens after a 32-token prompt (the prefill share is small)."""
    variant, model, config = loaded
    prompt = random_prompt(config["vocab_size"], 32, seed=1)

    def decode():
        sampler = Sampler(SamplingParams(temperature=0.0, seed=0))
        return [t for t, _ in generate_step(model, prompt, sampler, max_tokens=DECODE)]

    tokens = benchmark.pedantic(decode, rounds=2, warmup_rounds=1)
    assert len(tokens) == DECODE and all(0 <= t < config["vocab_size"] for t in tokens)
    assert tokens == decode()  # greedy decoding is deterministic
    benchmark.extra_info.update(variant=variant, generation_tokens=DECODE,
                                tokens_per_s=DECODE / benchmark.stats.stats.median)
