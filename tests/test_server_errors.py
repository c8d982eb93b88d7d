"""Bad input against the real server: OpenAI error bodies with the right status, raised by the
openai client as its matching exception; auth, CORS, body limits; and a fuzz pass that finds no 500."""

import json

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, qwen3_embedding, random_qwen3

KEY = "sk-test-123"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    broken = random_qwen3(root / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)  # truncated download
    pool.register(str(broken), "broken")
    pool.register(str(qwen3_embedding(root / "emb", prefixed=False)), "emb")
    app = create_app(pool, api_key=KEY, cors_origins=["https://studio.example"], max_body_bytes=200_000)
    with ServerThread(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def error_of(exc_info) -> dict:
    body = exc_info.value.body
    assert set(body) >= {"message", "type", "param", "code"}, body
    return body


def test_health_needs_no_key_and_everything_else_does(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert error_of(e)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=USER)
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "tiny", "input": "x"})
    assert r.status_code == 401 and "Missing API key" in r.json()["error"]["message"]


def test_cors(server):
    origin = "https://studio.example"
    r = httpx.options(server.url + "/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    r = httpx.options(server.url + "/v1/models", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.mark.parametrize("kwargs, param", [
    (dict(temperature=-0.5), "temperature"),
    (dict(temperature=2.5), "temperature"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(top_p=0), "top_p"),
    (dict(n=0), "n"),
    (dict(presence_penalty=3), "presence_penalty"),
    (dict(top_logprobs=5), None),  # needs logprobs=true
    (dict(logit_bias={"abc": 1}), "logit_bias"),
    (dict(logit_bias={"5": 1000}), "logit_bias"),
    (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
    (dict(messages=[]), "messages"),
    (dict(messages=[{"role": "wizard", "content": "hi"}]), "messages"),
    (dict(messages=[{"role": "user"}]), "messages"),
    (dict(response_format={"type": "xml"}), "response_format"),
    (dict(response_format={"type": "json_schema"}), "response_format"),
])
def test_invalid_parameters_are_400(client, kwargs, param):
    args = {"model": "tiny", "messages": USER, "max_tokens": 2, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**args)
    body = error_of(e)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param, body
    assert body["message"].startswith("Invalid request")


@pytest.mark.parametrize("kwargs, match, code", [
    (dict(messages=[{"role": "user", "content": "word " * 600}]), "maximum context length is 512", "context_length_exceeded"),
    (dict(max_tokens=600), "maximum context length is 512", "context_length_exceeded"),
    (dict(logit_bias={"99999": 5}), "outside the vocabulary", None),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}),
     "invalid JSON schema", None),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     "does not take images. Use a vision model", "model_not_supported"),
    (dict(chat_template_kwargs={"messages": []}), "may not set messages", None),
])
def test_requests_the_model_cannot_serve_are_400(client, kwargs, match, code):
    args = {"model": "tiny", "messages": USER, "max_tokens": 2}
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k == "chat_template_kwargs"}
    args.update(kwargs)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**args, extra_body=extra or None)
    body = error_of(e)
    assert match in body["message"] and body["code"] == code


def test_unknown_model_is_404_listing_what_exists(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    body = error_of(e)
    assert body["code"] == "model_not_found" and body["param"] == "model"
    assert "tiny" in body["message"]
    with pytest.raises(openai.NotFoundError) as e:  # in the catalog, not installed
        client.embeddings.create(model="qwen3-embedding-0.6b", input="x")
    assert "ominix pull qwen3-embedding-0.6b" in error_of(e)["message"]


def test_wrong_kind_of_model_is_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="tiny", input="x")
    assert "does not support embeddings" in error_of(e)["message"]


def test_model_that_cannot_load_is_503_with_why(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="broken", messages=USER, max_tokens=2)
    assert e.value.status_code == 503
    body = error_of(e)
    assert "could not be loaded" in body["message"] and "model.safetensors" in body["message"]


def test_bad_json_and_non_object_bodies(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b"", b"null"):
        r = httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 300_000}]}
    r = httpx.post(server.url + "/v1/chat/completions", json=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_method(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.get(server.url + "/v1/nothing", headers=headers)
    assert r.status_code == 404 and "Unknown route" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/chat/completions", headers=headers)
    assert r.status_code == 405 and "error" in r.json()


# ---- fuzz -----------------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
def bodies(junk: bool):
    """Request bodies per route: plausible values (edge cases included), or with any JSON mixed in."""

    def v(good, bad=json_value):
        return st.one_of(good, bad) if junk else good

    content = v(st.one_of(st.text(max_size=20), st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10)}), min_size=1, max_size=2)))
    message = st.fixed_dictionaries(
        {"role": v(st.sampled_from(["system", "developer", "user", "assistant", "tool"])), "content": content},
        optional={"name": v(st.text(max_size=5)), "tool_call_id": v(st.text(max_size=5))})
    tokens = v(st.integers(1, 3), st.one_of(st.integers(-3, 0), json_value))
    model = v(st.just("tiny"))
    chat = st.fixed_dictionaries(
        {"model": model, "max_tokens": tokens, "messages": v(st.lists(message, min_size=1, max_size=3))},
        optional={
            "temperature": v(st.floats(0, 2)), "top_p": v(st.floats(0.01, 1)), "n": v(st.integers(1, 2)),
            "stream": v(st.booleans()), "seed": v(st.integers(-2**63, 2**64 - 1)),
            "stop": v(st.one_of(st.text(min_size=1, max_size=3), st.lists(st.text(min_size=1, max_size=3), max_size=4))),
            "logit_bias": v(st.dictionaries(st.integers(0, 700).map(str), st.floats(-100, 100), max_size=2)),
            "logprobs": st.just(True), "top_logprobs": v(st.integers(0, 20)),
            "response_format": v(st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])})),
            "tools": v(st.just([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])),
            "tool_choice": v(st.sampled_from(["auto", "none"])),
            "stream_options": v(st.fixed_dictionaries({"include_usage": st.booleans()})),
            "presence_penalty": v(st.floats(-2, 2)), "frequency_penalty": v(st.floats(-2, 2)),
            "chat_template_kwargs": v(st.fixed_dictionaries({"enable_thinking": st.booleans()})),
        })
    completion = st.fixed_dictionaries(
        {"model": model, "max_tokens": tokens,
         "prompt": v(st.one_of(st.text(min_size=1, max_size=10), st.lists(st.integers(0, 639), min_size=1, max_size=4),
                               st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=2)))},
        optional={"echo": v(st.booleans()), "logprobs": v(st.integers(0, 5)), "n": v(st.integers(1, 2)),
                  "stream": v(st.booleans()), "suffix": v(st.none())})
    embed = st.fixed_dictionaries(
        {"model": v(st.just("emb")),
         "input": v(st.one_of(st.text(min_size=1, max_size=10), st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=3),
                              st.lists(st.integers(0, 639), min_size=1, max_size=4)))},
        optional={"encoding_format": v(st.sampled_from(["float", "base64"])), "dimensions": v(st.integers(1, 64))})
    return st.one_of(st.tuples(st.just("/v1/chat/completions"), chat),
                     st.tuples(st.just("/v1/completions"), completion),
                     st.tuples(st.just("/v1/embeddings"), embed))


def hostile(body: dict) -> st.SearchStrategy:
    """The shapes that once gave 500s: nesting past any limit, lone surrogates, model names too long
    for a file name, keep_alive values beyond any clock. Bodies as raw JSON text (json.dumps itself
    cannot write 1000 levels)."""
    depth = st.integers(60, 3000)
    deep = depth.map(lambda d: json.dumps(body)[:-1] + ', "x": ' + "[" * d + "]" * d + "}")
    surrogate = st.sampled_from(["\\ud800", "\\udfff", "a\\udbffb"]).map(
        lambda s: json.dumps(body).replace('"hi"', f'"{s}"').replace('"x"', f'"{s}"'))
    long_name = st.integers(256, 4000).map(lambda n: json.dumps({**body, "model": "m" * n}))
    keep_alive = st.sampled_from(['"inf"', '"nan"', "1e17", "Infinity", "NaN", '"-1"', "1e308"]).map(
        lambda v: json.dumps(body)[:-1] + ', "keep_alive": ' + v + "}")
    return st.one_of(deep, surrogate, long_name, keep_alive)


route_and_body = st.one_of(
    bodies(junk=False),
    bodies(junk=True),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]), json_value),
    st.tuples(st.just("/v1/chat/completions"), hostile({"model": "tiny", "max_tokens": 1, "messages": USER})),
    st.tuples(st.just("/v1/completions"), hostile({"model": "tiny", "max_tokens": 1, "prompt": "hi"})),
    st.tuples(st.just("/v1/embeddings"), hostile({"model": "emb", "input": ["x"]})),
)


def test_fuzz_no_request_gets_a_500(server):
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route_and_body)
    def check(case):
        route, body = case
        content = body if isinstance(body, str) else json.dumps(body)
        r = http.post(route, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (route, body, r.status_code, r.text[:500])
        if r.status_code >= 400:
            assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
        elif r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]

    check()
    for path in ("/health", "/v1/models", "/v1/ps"):  # no request's values broke another route
        assert http.get(path).status_code == 200, path


def test_vanishing_temperature_keeps_a_json_object_stream_valid(server):
    """The fuzz test's find: temperature 4e-218 overflowed the scaled logits, and a token the
    json_object grammar had masked was drawn, ending the stream with an error instead of [DONE]."""
    body = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "system", "content": ""}], "stream": True,
            "temperature": 4.027994336087977e-218, "chat_template_kwargs": {"enable_thinking": False},
            "response_format": {"type": "json_object"}}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=60)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
