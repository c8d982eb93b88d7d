"""engine/constrained.py: llguidance masks keep even random logits inside the JSON schema."""

import json

import jsonschema
import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.llm.constrained import ConstraintError, make_constraint
from ominix.engine.llm.generate import generate
from ominix.engine.load import load
from ominix.engine.llm.sample import SamplingParams
from ominix.engine.llm.tokenizer import load_tokenizer
from tests.server_fixtures import random_qwen3
from tests.tokenizer_fixture import VOCAB_SIZE, make_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "bb", "ccc"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


def run_random(constraint, tokenizer, seed, vocab, steps=400):
    """Greedy over random logits through the constraint, the way the sampler applies it."""
    rng = np.random.default_rng(seed)
    history, out = [1, 2, 3], []
    for _ in range(steps):
        logits = mx.array(rng.normal(size=(1, vocab)).astype(np.float32))
        token = int(mx.argmax(constraint(history, logits), axis=-1).item())
        if token in tokenizer.eos_token_ids:
            return tokenizer.decode(out), True
        history.append(token)
        out.append(token)
    return tokenizer.decode(out), False


@pytest.mark.parametrize("seed", range(6))
def test_random_logits_yield_schema_valid_json(tokenizer, seed):
    # lm_head wider than the tokenizer (as Qwen pads it): padded ids must never be chosen.
    vocab = VOCAB_SIZE + 32
    c = make_constraint(tokenizer, vocab, {"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    text, ended = run_random(c, tokenizer, seed, vocab)
    assert ended, text
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_mode(tokenizer):
    c = make_constraint(tokenizer, VOCAB_SIZE, {"type": "json_object"})
    rng = np.random.default_rng(0)
    history = [5]
    text = ""
    for _ in range(60):
        logits = mx.array(rng.normal(size=(VOCAB_SIZE,)).astype(np.float32))
        masked = np.array(c(history, logits))
        allowed = np.isfinite(masked)
        assert allowed.any()
        if not text:  # the first character must open an object
            assert all(tokenizer.decode([i]).startswith("{") for i in np.flatnonzero(allowed))
        token = int(np.argmax(masked))
        if token in tokenizer.eos_token_ids:
            break
        history.append(token)
        text = tokenizer.decode(history[1:])
    assert text.startswith("{")


def test_text_format_means_no_constraint(tokenizer):
    assert make_constraint(tokenizer, VOCAB_SIZE, None) is None
    assert make_constraint(tokenizer, VOCAB_SIZE, {"type": "text"}) is None


@pytest.mark.parametrize("schema, match", [
    ({"type": "objekt"}, "invalid JSON schema"),
    ({"type": "object", "properties": {"a": {"minimum": "zero"}}}, "invalid JSON schema"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_schemas_are_rejected_clearly(tokenizer, schema, match):
    with pytest.raises(ConstraintError, match=match):
        make_constraint(tokenizer, VOCAB_SIZE, {"type": "json_schema", "json_schema": {"schema": schema}})


def test_constrained_generation_with_a_real_model(tmp_path):
    """Through stream_generate's logits_processors with a random Qwen3: sampled output validates."""
    model, tokenizer = load(random_qwen3(tmp_path / "m"))
    for seed in range(3):
        c = make_constraint(tokenizer, model.args.vocab_size, {"type": "json_schema", "json_schema": {"schema": SCHEMA}})
        result = generate(model, tokenizer, "Give me JSON:", SamplingParams(temperature=1.0, seed=seed),
                          max_tokens=200, logits_processors=[c])
        assert result.finish_reason == "stop", result.text
        jsonschema.validate(json.loads(result.text), SCHEMA)


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["tz"],
        "additionalProperties": False}}},
]


@pytest.mark.parametrize("name", [None, "get_time"])
def test_forced_tool_call_grammar(tokenizer, name):
    from ominix.engine.llm.chat import parse_reply

    for seed in range(3):
        c = make_constraint(tokenizer, VOCAB_SIZE, {"type": "tool_call", "tools": TOOLS, "name": name})
        text, ended = run_random(c, tokenizer, seed, VOCAB_SIZE)
        assert ended and text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>"), text
        [call] = parse_reply(text).tool_calls
        tool = next(t["function"] for t in TOOLS if t["function"]["name"] == call.name)
        assert name is None or call.name == name
        jsonschema.validate(json.loads(call.arguments), tool["parameters"])


def test_forced_tool_must_exist(tokenizer):
    with pytest.raises(ConstraintError, match="not in tools"):
        make_constraint(tokenizer, VOCAB_SIZE, {"type": "tool_call", "tools": TOOLS, "name": "nope"})
