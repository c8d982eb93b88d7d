"""Continuous batching: sequences decoded together in one [B, 1] forward give exactly the tokens they
give alone (greedy, seeded sampling, penalties, JSON constraints), while joining and leaving."""

from __future__ import annotations

import queue

import mlx.core as mx
import pytest

from ominix.engine.llm.batch import Batch, BatchKVCache
from ominix.engine.llm.cache import make_cache
from ominix.engine.llm.generate import generate
from ominix.engine.load import load
from ominix.engine.pool import ModelPool
from ominix.engine.llm.jobs import ChoiceDone, GenerateJob, TokenEvent
from ominix.engine.worker import Done, Failed, Worker
from tests.server_fixtures import random_qwen3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_qwen3(tmp_path_factory.mktemp("batching") / "tiny", seed=5)


@pytest.fixture(scope="module")
def worker(checkpoint):
    pool = ModelPool(use_catalog=False)
    pool.register(str(checkpoint), "tiny")
    s = Worker(pool, prompt_cache_bytes=0)
    s.start()
    yield s
    s.stop()


def submit(worker, prompt, sampling, max_tokens, **job):
    box: queue.Queue = queue.Queue()
    worker.submit("tiny", GenerateJob(prompts=[prompt], sampling=sampling, max_tokens=max_tokens, **job), box.put)
    return box


def collect(box) -> dict:
    tokens, finish = {}, {}
    while True:
        event = box.get(timeout=60)
        if isinstance(event, TokenEvent):
            tokens.setdefault(event.choice, []).append(event.token)
        elif isinstance(event, ChoiceDone):
            finish[event.choice] = event.finish_reason
        elif isinstance(event, Failed):
            raise event.error
        elif isinstance(event, Done):
            return {"tokens": tokens, "finish": finish, "usage": event.result}


NO_EOS = {"logit_bias": {"0": -100, "1": -100, "2": -100}}
CASES = [  # (prompt ids, sampling, max_tokens): different lengths, so rows are padded differently
    (list(range(10, 17)), {"temperature": 0.0}, 24),
    ([40, 41], {"temperature": 0.9, "seed": 11}, 30),
    (list(range(100, 140)), {"temperature": 0.7, "top_p": 0.9, "seed": 3}, 12),
    ([7], {"temperature": 1.0, "top_k": 20, "seed": 5, "repetition_penalty": 1.3}, 20),
    (list(range(200, 219)), {"temperature": 0.0, "frequency_penalty": 1.0, "presence_penalty": 0.5}, 28),
    (list(range(300, 303)), {"temperature": 1.2, "min_p": 0.05, "seed": 99}, 6),
]


def solo_tokens(checkpoint, prompt, sampling, max_tokens) -> list[int]:
    """Decoding alone with engine/generate.py, with the checkpoint's generation_config defaults
    (top_k, top_p) for unset fields, as the server applies them."""
    from ominix.engine.llm.sample import sampling_params

    model, tokenizer = load(checkpoint)
    bias = {int(k): v for k, v in NO_EOS["logit_bias"].items()}
    params = sampling_params(tokenizer.generation_config, {**sampling, "logit_bias": bias})
    return generate(model, tokenizer, prompt, params, max_tokens=max_tokens).tokens


def test_batched_sequences_equal_their_solo_tokens(checkpoint, worker):
    expected = [solo_tokens(checkpoint, *case) for case in CASES]
    steps_before = worker.stats["decode_steps"]
    boxes = [submit(worker, p, {**s, **NO_EOS}, n) for p, s, n in CASES]  # all at once
    results = [collect(b) for b in boxes]
    for case, result, want in zip(CASES, results, expected):
        assert result["tokens"][0] == want, case
        assert result["finish"][0] == "length"
    # They really decoded together: far fewer steps than tokens.
    steps = worker.stats["decode_steps"] - steps_before
    assert steps < sum(n for _, _, n in CASES) * 0.6, steps


def test_requests_joining_a_running_batch_later(checkpoint, worker):
    """A long request runs; others arrive mid-way, finish early and leave; tokens stay exact."""
    long_case = (list(range(50, 60)), {"temperature": 0.8, "seed": 1}, 60)
    want_long = solo_tokens(checkpoint, *long_case)
    first = submit(worker, long_case[0], {**long_case[1], **NO_EOS}, long_case[2])
    event = first.get(timeout=60)  # PromptStarted
    seen = [first.get(timeout=60) for _ in range(5)]  # it is decoding now
    late = [submit(worker, p, {**s, **NO_EOS}, n) for p, s, n in CASES[:3]]
    late_results = [collect(b) for b in late]
    rest = collect(first)
    assert [e.token for e in seen] + rest["tokens"][0] == want_long
    for case, result in zip(CASES[:3], late_results):
        assert result["tokens"][0] == solo_tokens(checkpoint, *case)
    assert event.prompt_tokens == 10


def test_n_choices_and_a_json_constraint_in_one_batch(checkpoint, worker):
    model, tokenizer = load(checkpoint)
    fmt = {"type": "json_object"}
    constrained = submit(worker, list(range(60, 70)), {"temperature": 0.0}, 16, response_format=fmt)
    several = submit(worker, list(range(20, 30)), {"temperature": 1.0, "seed": 4, **NO_EOS}, 10, n=3)
    got_json = collect(constrained)["tokens"][0]
    got_n = collect(several)["tokens"]
    # Alone: one request at a time through the same worker.
    assert collect(submit(worker, list(range(60, 70)), {"temperature": 0.0}, 16, response_format=fmt))["tokens"][0] == got_json
    for j in range(3):  # choice j uses seed + j
        assert got_n[j] == solo_tokens(checkpoint, list(range(20, 30)), {"temperature": 1.0, "seed": 4 + j}, 10)
    text = tokenizer.decode(got_json)
    assert text.lstrip().startswith("{")


def test_batch_cache_join_leave_keep_rows_exact(checkpoint):
    model, _ = load(checkpoint)

    def prefilled(ids):
        cache = make_cache(model)
        model(mx.array(ids)[None], cache=cache)
        mx.eval([c.state for c in cache])
        return cache

    a, b, c = prefilled([1, 2, 3]), prefilled(list(range(5, 15))), prefilled([9, 8])
    batch = Batch(model)
    for cache in (a, b, c):  # the second is longer: existing rows shift right
        batch.join(cache)
    for row, cache in enumerate((a, b, c)):
        for (k, v), (k0, v0) in zip(batch.row_state(row), [x.state for x in cache]):
            assert mx.array_equal(k, k0) and mx.array_equal(v, v0)
    batch.leave([0, 2])  # the longest leaves: padding no row needs is trimmed
    assert batch.caches[0].used == 3 and batch.caches[0].lengths == [3, 2]
    for row, cache in enumerate((a, c)):
        k, _ = batch.row_state(row)[0]
        assert mx.array_equal(k, cache[0].state[0])
    mask = batch.caches[0].make_mask(1)
    assert mask.shape == (2, 1, 1, 4)
    assert mask[1, 0, 0].tolist() == [False, True, True, True]
    assert batch.caches[0].offset.tolist() == [3, 2]  # rope positions per row
    batch.leave([])
    assert batch.nbytes == 0


def test_rope_takes_per_row_offsets():
    """The premise of per-row positions: mx.fast.rope with a [B] offset equals row-by-row rope."""
    x = mx.random.normal((3, 2, 1, 16))
    offsets = [0, 5, 17]
    rows = [mx.fast.rope(x[i : i + 1], 16, traditional=False, base=10000.0, scale=1.0, offset=o)
            for i, o in enumerate(offsets)]
    batched = mx.fast.rope(x, 16, traditional=False, base=10000.0, scale=1.0, offset=mx.array(offsets))
    assert mx.array_equal(mx.concatenate(rows), batched)
    assert isinstance(BatchKVCache().lengths, list)
