"""Sampling: greedy, seeds, truncation, penalties and logprobs, against their formulas."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.llm.sample import Sampler, SamplingParams

LOGITS = mx.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -0.5, 1.5])  # sorted order: 5, 0, 7, 1, 2, 3, 6, 4


def draw(params, n=400, logits=LOGITS):
    sampler = Sampler(params)
    return [sampler(logits).token.item() for _ in range(n)]


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"logit_bias": {"abc": 1}}, "logit_bias keys"),
        ({"logit_bias": {5: 101}}, "logit_bias values"),
    ],
)
def test_invalid_params_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_logit_bias_string_keys_become_ints():
    assert SamplingParams(logit_bias={"3": 5}).logit_bias == {3: 5.0}


def test_greedy_is_argmax():
    assert draw(SamplingParams(temperature=0), n=5) == [5] * 5
    logits = mx.random.normal((1, 1000), key=mx.random.key(3))
    assert Sampler(SamplingParams(temperature=0))(logits).token.item() == int(np.argmax(np.array(logits)))


@pytest.mark.parametrize("temperature", [4.027994336087977e-218, 1e-30, 1e-6])
def test_vanishing_temperature_is_greedy_and_respects_masks(temperature):
    """logits / 4e-218 overflow to inf and the softmax to NaN, which drew a token a grammar had
    masked to -inf (found by the fuzz test: a json_object stream that broke its own grammar)."""
    masked = mx.where(mx.arange(LOGITS.shape[0]) == 5, -math.inf, LOGITS)  # the best token forbidden
    assert draw(SamplingParams(temperature=temperature, seed=1), n=20, logits=masked) == [0] * 20


def test_seed_reproducible_and_independent_of_other_sampling():
    params = SamplingParams(temperature=1.0, seed=1234)
    a = draw(params, n=50)
    # Interleave another request and the global generator: the seeded sequence must not change.
    s, other = Sampler(params), Sampler(SamplingParams(temperature=1.0, seed=99))
    b = []
    for _ in range(50):
        mx.random.uniform(shape=(3,))
        other(LOGITS).token.item()
        b.append(s(LOGITS).token.item())
    assert a == b
    assert draw(SamplingParams(temperature=1.0, seed=4321), n=50) != a


def test_full_distribution_matches_softmax_frequencies():
    counts = np.bincount(draw(SamplingParams(temperature=1.0, seed=0), n=3000), minlength=8) / 3000
    assert np.abs(counts - softmax(np.array(LOGITS))).max() < 0.04


def test_top_k_restricts_support():
    tokens = set(draw(SamplingParams(temperature=5.0, top_k=3, seed=1)))
    assert tokens == {5, 0, 7}


def test_top_p_keeps_smallest_nucleus():
    probs = softmax(np.array(LOGITS))
    order = np.argsort(-probs)
    # With top_p just above the mass of the two best tokens, the nucleus is exactly three tokens.
    top_p = float(probs[order[:2]].sum()) + 0.01
    tokens = set(draw(SamplingParams(temperature=1.0, top_p=top_p, seed=2)))
    assert tokens == set(order[:3].tolist())
    assert set(draw(SamplingParams(temperature=1.0, top_p=0.01, seed=2), n=50)) == {5}


def test_min_p_floor_relative_to_best():
    # p >= 0.3 * p(best) <=> logit >= 3 + ln 0.3 = 1.796: tokens 5 (3.0) and 0 (2.0) only.
    tokens = set(draw(SamplingParams(temperature=1.0, min_p=0.3, seed=3)))
    assert tokens == {5, 0}


def test_logit_bias_applies():
    assert draw(SamplingParams(temperature=0, logit_bias={4: 100}), n=3) == [4, 4, 4]
    assert set(draw(SamplingParams(temperature=1.0, logit_bias={5: -100, 0: -100}, top_k=2, seed=5))) == {7, 1}


def _logprobs_after(params, history, logits=LOGITS):
    """Feed `history` as generated tokens by biasing the sampler, then return the next step's logprobs."""
    sampler = Sampler(params, prompt_ids=[3])
    sampler(logits)  # first call sets up state
    sampler.counts = mx.zeros_like(sampler.counts)
    for t in history:
        sampler.counts[t] += 1
    params.logprobs, params.top_logprobs = True, 8
    out = sampler(logits)
    full = np.full(8, np.nan)
    full[np.array(out.top_ids)] = np.array(out.top_logprobs)
    return full


def test_presence_and_frequency_penalties_follow_openai_formula():
    params = SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.25)
    got = _logprobs_after(params, [5, 5, 1])
    expected = np.array(LOGITS)
    expected[5] -= 2 * 0.25 + 0.5
    expected[1] -= 1 * 0.25 + 0.5
    expected = expected - np.log(np.exp(expected).sum())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_repetition_penalty_follows_hf_formula_over_prompt_and_output():
    params = SamplingParams(temperature=0, repetition_penalty=2.0)
    got = _logprobs_after(params, [5, 4])  # prompt has token 3 (logit 0.0: unchanged either way)
    expected = np.array(LOGITS)
    expected[5] = 3.0 / 2.0  # positive logits are divided
    expected[4] = -1.0 * 2.0  # negative ones multiplied
    expected = expected - np.log(np.exp(expected).sum())
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # Prompt tokens count too.
    logits = mx.array([1.0, 0.9, -3.0])
    assert Sampler(SamplingParams(temperature=0, repetition_penalty=2.0), prompt_ids=[0])(logits).token.item() == 1


def test_penalties_accumulate_from_sampled_tokens():
    # Greedy with a strong frequency penalty must move off a token after it was picked.
    sampler = Sampler(SamplingParams(temperature=0, frequency_penalty=2.0))
    logits = mx.array([1.0, 0.5, 0.0])
    assert [sampler(logits).token.item() for _ in range(3)] == [0, 1, 2]


def test_logprobs_equal_log_softmax_and_top_sorted():
    logits = mx.random.normal((1, 50), key=mx.random.key(7))
    out = Sampler(SamplingParams(temperature=0.7, seed=1, logprobs=True, top_logprobs=5))(logits)
    ref = np.array(logits[0]) - math.log(np.exp(np.array(logits[0])).sum())
    assert out.logprob.item() == pytest.approx(ref[out.token.item()], abs=1e-5)
    top = np.array(out.top_ids)
    assert top.tolist() == np.argsort(-ref)[:5].tolist()
    np.testing.assert_allclose(np.array(out.top_logprobs), ref[top], atol=1e-5)
    assert Sampler(SamplingParams(temperature=0))(logits).logprob is None
