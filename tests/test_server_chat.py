"""End to end: the real server (uvicorn on 127.0.0.1, a free port) driven by the official openai
client, on tiny Qwen3 checkpoints loaded through the normal load path."""

import json
import time

import httpx
import jsonschema
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from ominix.engine.llm.tokenizer import load_tokenizer
from tests.server_fixtures import ServerThread, random_qwen3, scripted_tool_call_checkpoint

USER = [{"role": "user", "content": "Hello there"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                       "required": ["city"], "additionalProperties": False},
    },
}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    pool.register(str(random_qwen3(root / "long", max_position_embeddings=8192)), "long")
    pool.register(str(scripted_tool_call_checkpoint(root / "scripted")), "scripted")
    app = create_app(pool, preload=["tiny"])
    with ServerThread(app) as s:
        s.tokenizer = load_tokenizer(root / "tiny")
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def stream_text(chunks):
    content, reasoning, finish = [], [], None
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            finish = choice.finish_reason or finish
    return "".join(content), "".join(reasoning), finish


def test_models_list_and_get(client):
    models = {m.id: m for m in client.models.list().data}
    assert {"tiny", "long", "scripted"} <= set(models)
    assert models["tiny"].object == "model" and models["tiny"].owned_by == "ominix"
    assert models["tiny"].model_extra["loaded"] is True  # preloaded at start
    assert models["tiny"].model_extra["memory_bytes"] > 0
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found" and "tiny" in e.value.body["message"]


def test_chat_stream_equals_non_stream_under_seed(client):
    kwargs = dict(model="tiny", messages=USER, max_tokens=24, seed=1234, temperature=0.9, top_p=0.95)
    whole = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text, reasoning, finish = stream_text(chunks)
    message = whole.choices[0].message
    assert message.role == "assistant"
    assert text == (message.content or "")
    assert reasoning == (getattr(message, "reasoning_content", None) or "")
    assert again.choices[0].message.content == message.content
    assert finish == whole.choices[0].finish_reason
    assert whole.object == "chat.completion" and whole.id.startswith("chatcmpl-")
    # Chunk protocol: role first, a usage-only chunk last; same id throughout.
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 24


def test_more_than_one_content_delta_arrives(client):
    """Streaming is token by token, not one final blob."""
    ids = [i for i in client.chat.completions.create(
        model="tiny", messages=USER, max_tokens=16, temperature=0, stream=True,
        logit_bias={str(t): -100 for t in (0, 1, 2)})]
    assert sum(1 for c in ids if c.choices and c.choices[0].delta.content) >= 3


def test_max_tokens_length_and_max_completion_tokens(client, server):
    eos = {str(t): -100 for t in server.tokenizer.eos_token_ids}
    r = client.chat.completions.create(model="tiny", messages=USER, max_completion_tokens=5, logit_bias=eos)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_n_choices_logprobs_and_stop(client, server):
    eos = {str(t): -100 for t in server.tokenizer.eos_token_ids}
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=6, n=2, seed=7,
                                       logprobs=True, top_logprobs=3, logit_bias=eos)
    assert [c.index for c in r.choices] == [0, 1]
    for choice in r.choices:
        entries = choice.logprobs.content
        assert len(entries) == 6
        for e in entries:
            assert e.logprob <= 0 and len(e.top_logprobs) == 3
            assert e.top_logprobs[0].logprob >= e.top_logprobs[-1].logprob
            assert bytes(e.bytes).decode("utf-8", "replace") == e.token or "\ufffd" in e.token
    # Streamed logprobs arrive on the chunks and add up to the same entries.
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, max_tokens=6, seed=7,
                                                 logprobs=True, top_logprobs=3, logit_bias=eos, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    # Tokens are identical; logprobs agree to float32 rounding: choice 0 above decoded in a batch of
    # two, and OpenBLAS sums a [2, K] matmul in another order than a [1, K] one (~1e-7 apart).
    assert [e.token for e in streamed] == [e.token for e in r.choices[0].logprobs.content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in r.choices[0].logprobs.content], abs=1e-5)
    # A stop string taken from the greedy output cuts the text before it.
    base = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0, logit_bias=eos)
    text = base.choices[0].message.content
    stop = text[5:8]
    assert stop and stop.strip()
    cut = client.chat.completions.create(model="tiny", messages=USER, max_tokens=20, temperature=0,
                                         logit_bias=eos, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_logit_bias_forces_a_token(client, server):
    token = server.tokenizer.encode(" the")
    assert len(token) == 1
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=4, logit_bias={str(token[0]): 100})
    assert r.choices[0].message.content == " the" * 4


def test_multi_turn_tools_messages_and_content_parts(client):
    messages = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    r = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS, max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_tool_call_from_scripted_model(client):
    """The scripted checkpoint greedily writes <think>Hm</think> OK. <tool_call>{...}</tool_call>."""
    kwargs = dict(model="scripted", messages=[{"role": "user", "content": "Weather in Paris?"}],
                  tools=TOOLS, temperature=0)
    r = client.chat.completions.create(**kwargs)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "OK."
    assert choice.message.model_extra["reasoning_content"] == "Hm"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    text, reasoning, finish = stream_text(chunks)
    assert (text, reasoning, finish) == ("OK.", "Hm", "tool_calls")
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        (0, "get_weather", {"city": "Paris"})
    ]
    assert calls[0].id.startswith("call_")

    # Without tools in the request the same output is plain content (no parsing).
    plain = client.chat.completions.create(model="scripted", messages=kwargs["messages"], temperature=0)
    assert "<tool_call>" in plain.choices[0].message.content
    assert plain.choices[0].message.tool_calls is None


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_choice_on_a_random_model(client, tool_choice):
    """tool_choice required / named is enforced while decoding: even random weights call the tool."""
    r = client.chat.completions.create(model="tiny", messages=USER, tools=TOOLS, tool_choice=tool_choice,
                                       max_tokens=80, seed=5)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[0]["function"]["parameters"])


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "temp": {"type": "integer", "minimum": -50, "maximum": 60},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "temp", "sunny"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_validates(client, stream):
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
    for seed in range(3):
        kwargs = dict(model="tiny", messages=USER, response_format=fmt, max_tokens=120, seed=seed, temperature=1.0)
        if stream:
            text, _, finish = stream_text(client.chat.completions.create(**kwargs, stream=True))
        else:
            r = client.chat.completions.create(**kwargs)
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_and_parse_helper(client):
    r = client.chat.completions.create(model="tiny", messages=USER, response_format={"type": "json_object"},
                                       max_tokens=60, seed=3, temperature=0.7,
                                       logit_bias={"125": -100})
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # ran out of tokens mid-object: still a JSON prefix that starts an object
        assert r.choices[0].message.content.startswith("{")


def test_completions(client):
    r = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0,
                                  logprobs=2, echo=True)
    choice = r.choices[0]
    assert r.object == "text_completion"
    assert choice.text.startswith("Once upon a time")
    lp = choice.logprobs
    assert lp.token_logprobs[0] is None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == choice.text
    # A list of prompts x n gives prompts * n choices; a token-id prompt works too.
    many = client.completions.create(model="tiny", prompt=["a", "b"], n=2, max_tokens=3, seed=1)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    ids = client.completions.create(model="tiny", prompt=[10, 11, 12], max_tokens=3, temperature=0)
    assert ids.usage.prompt_tokens == 3
    # Streaming equals non-streaming.
    whole = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0)
    parts = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="Hello", max_tokens=12,
                                                                 temperature=0, stream=True) if c.choices]
    assert "".join(parts) == whole.choices[0].text


def test_suffix_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="def f(", suffix="return x", max_tokens=3)
    assert e.value.body["param"] == "suffix" and "not supported" in e.value.body["message"]


def test_concurrent_requests_all_served(server):
    import concurrent.futures

    def one(i):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"req {i}"}],
                                      max_tokens=8, seed=i)
        return r.choices[0].message.content, r.usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(one, range(6)))
    assert all(n > 0 for _, n in results)
    # Same seed and prompt -> same answer even when requests interleave.
    assert one(3) == results[3]


def test_client_disconnect_stops_generation(client, server):
    scheduler = server.app.state.worker
    eos = {str(t): -100 for t in server.tokenizer.eos_token_ids}
    cancelled_before = scheduler.cancelled_jobs
    stream = client.chat.completions.create(model="long", messages=USER, max_tokens=8000,
                                            logit_bias=eos, stream=True)
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
        if got >= 5:
            break
    stream.close()
    start = time.time()
    while scheduler.busy.is_set() and time.time() - start < 10:
        time.sleep(0.02)
    stopped_after = time.time() - start
    assert not scheduler.busy.is_set()
    assert stopped_after < 3, f"generation kept running {stopped_after:.1f}s after the client left"
    assert scheduler.cancelled_jobs == cancelled_before + 1
    # The server is fine afterwards.
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    assert r.choices[0].message.role == "assistant"


def test_non_streaming_client_that_gives_up_stops_generation(server):
    scheduler = server.app.state.worker
    eos = {str(t): -100 for t in server.tokenizer.eos_token_ids}
    cancelled_before = scheduler.cancelled_jobs
    body = {"model": "long", "messages": USER, "max_tokens": 8000, "logit_bias": eos}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.0)
    start = time.time()
    while scheduler.cancelled_jobs == cancelled_before and time.time() - start < 5:
        time.sleep(0.02)
    assert scheduler.cancelled_jobs == cancelled_before + 1
    while scheduler.busy.is_set() and time.time() - start < 5:
        time.sleep(0.02)
    assert not scheduler.busy.is_set()
