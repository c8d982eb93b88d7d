"""The generation loop on a tiny random Qwen3 checkpoint, against transformers' greedy generate."""

from __future__ import annotations

import mlx.core as mx
import pytest

from ominix.engine.llm.cache import make_cache
from ominix.engine.llm.generate import generate, generate_step, stream_generate
from ominix.engine.llm.sample import Sampler, SamplingParams
from ominix.engine.load import load
from tests.checkpoints import build_checkpoint, load_reference

PROMPT = "Hello 你好 😀, the quick brown fox"


def greedy_without_eos(tokenizer) -> SamplingParams:
    """Greedy decoding that never picks the checkpoint's EOS ids (random weights may, early)."""
    return SamplingParams(temperature=0, logit_bias={t: -100 for t in tokenizer.eos_token_ids})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("ckpt") / "qwen3", "qwen3")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load(checkpoint)


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])
def test_greedy_matches_transformers_generate(arch, tmp_path):
    import torch

    path = build_checkpoint(tmp_path / arch, arch, tied=arch == "qwen2")
    model, tokenizer = load(path)
    ids = tokenizer.encode(PROMPT)
    ref = load_reference(path)
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=32, min_new_tokens=32, eos_token_id=None
        )
    expected = out[0, len(ids) :].tolist()
    got = [t for t, _ in generate_step(model, ids, Sampler(SamplingParams(temperature=0)), max_tokens=32)]
    assert len(expected) == 32
    assert got == expected


def test_chunked_prefill_matches_unchunked(loaded):
    model, tokenizer = loaded
    ids = tokenizer.encode(PROMPT * 3)
    whole = [t for t, _ in generate_step(model, ids, Sampler(SamplingParams(temperature=0)), max_tokens=12)]
    cache = make_cache(model)
    chunked = [
        t
        for t, _ in generate_step(
            model, ids, Sampler(SamplingParams(temperature=0)), cache=cache, prefill_step_size=5, max_tokens=12
        )
    ]
    assert chunked == whole
    assert cache[0].offset == len(ids) + 11  # the prompt + every token fed back


def test_cache_continuation_equals_single_prompt(loaded):
    # Prefilling part of the prompt into a cache, then continuing with the rest, gives the same tokens.
    model, tokenizer = loaded
    ids = tokenizer.encode(PROMPT)
    once = [t for t, _ in generate_step(model, ids, Sampler(SamplingParams(temperature=0)), max_tokens=6)]
    cache = make_cache(model)
    model(mx.array(ids[:7])[None], cache=cache)
    rest = [t for t, _ in generate_step(model, ids[7:], Sampler(SamplingParams(temperature=0)), cache=cache, max_tokens=6)]
    assert rest == once


def test_stream_text_equals_decode_and_finish_length(loaded):
    model, tokenizer = loaded
    responses = list(stream_generate(model, tokenizer, PROMPT, greedy_without_eos(tokenizer), max_tokens=20))
    assert len(responses) == 20
    assert [r.finish_reason for r in responses] == [None] * 19 + ["length"]
    tokens = [r.token for r in responses]
    assert "".join(r.text for r in responses) == tokenizer.decode(tokens)
    last = responses[-1]
    assert last.generation_tokens == 20 and last.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert last.ttft > 0 and last.prompt_tps > 0 and last.generation_tps > 0 and last.peak_memory > 0


def test_eos_stops_with_reason_stop(loaded):
    model, tokenizer = loaded
    params = greedy_without_eos(tokenizer)
    greedy = generate(model, tokenizer, PROMPT, params, max_tokens=8)
    eos = next(iter(tokenizer.eos_token_ids))
    # Declare the 4th greedy token an EOS id: generation must end there, with reason "stop".
    tokenizer.eos_token_ids.add(greedy.tokens[3])
    try:
        result = generate(model, tokenizer, PROMPT, params, max_tokens=8)
    finally:
        tokenizer.eos_token_ids.discard(greedy.tokens[3])
    first = greedy.tokens.index(greedy.tokens[3])
    assert result.finish_reason == "stop"
    assert result.tokens == greedy.tokens[: first + 1]
    assert result.text == tokenizer.decode(greedy.tokens[:first])  # EOS itself is not text
    biased = generate(model, tokenizer, PROMPT, SamplingParams(temperature=0, logit_bias={eos: 100}), max_tokens=8)
    assert biased.tokens == [eos] and biased.text == "" and biased.finish_reason == "stop"


def test_stop_string_spanning_tokens_is_not_emitted(loaded):
    model, tokenizer = loaded
    full = generate(model, tokenizer, PROMPT, greedy_without_eos(tokenizer), max_tokens=24)
    # A stop string made of the end of one token's text and the start of a later one.
    text = tokenizer.decode(full.tokens)
    ends = [len(tokenizer.decode(full.tokens[: i + 1])) for i in range(len(full.tokens))]
    # The last character of token k's text plus the first of token k+1's.
    k = next(k for k in range(3, 20) if ends[k] - ends[k - 1] >= 1 and ends[k + 1] > ends[k])
    stop = text[ends[k] - 1 : ends[k] + 1]
    before = text[: text.find(stop)]
    responses = list(
        stream_generate(model, tokenizer, PROMPT, greedy_without_eos(tokenizer), max_tokens=24, stop=[stop])
    )
    streamed = "".join(r.text for r in responses)
    assert streamed == before and stop not in streamed
    assert responses[-1].finish_reason == "stop"
    assert len(responses) < 24


def test_seeded_sampling_is_reproducible_and_logprobs_reported(loaded):
    model, tokenizer = loaded
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7, logprobs=True, top_logprobs=3)
    a = generate(model, tokenizer, PROMPT, params, max_tokens=10)
    b = generate(model, tokenizer, PROMPT, params, max_tokens=10)
    assert a.tokens == b.tokens and a.text == b.text
    assert len(a.logprobs) == 10
    for lp in a.logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0][1] >= lp.top[1][1] >= lp.top[2][1]


def test_logits_processor_is_applied_every_step(loaded):
    model, tokenizer = loaded
    allowed = tokenizer.encode(" the quick brown fox")
    seen_lengths = []

    def only_allowed(history, logits):
        seen_lengths.append(len(history))
        mask = mx.zeros(logits.shape[-1], dtype=mx.bool_)
        mask[mx.array(allowed)] = True
        return mx.where(mask, logits, -mx.inf)

    prompt = tokenizer.encode(PROMPT)
    steps = list(
        generate_step(
            model, prompt, Sampler(SamplingParams(temperature=1.0, seed=1), prompt, [only_allowed]), max_tokens=6
        )
    )
    assert all(t in allowed for t, _ in steps)
    assert seen_lengths == [len(prompt) + i for i in range(6)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        next(generate_step(None, [], Sampler(SamplingParams())))
