"""Hostile and careless inputs against the real server: each gets a 4xx with an OpenAI error body,
and no request's values break another route (keep_alive of inf or nan, deep JSON, lone surrogates,
very long model names)."""

from __future__ import annotations

import json

import httpx
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from ominix.engine.budget import parse_keep_alive
from tests.server_fixtures import ServerThread, qwen3_embedding, random_qwen3

JSON = {"Content-Type": "application/json"}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    pool.register(str(qwen3_embedding(root / "emb", prefixed=False)), "emb")
    with ServerThread(create_app(pool)) as s:
        yield s


def post(server, route: str, body, raw: bool = False) -> httpx.Response:
    content = body if raw else json.dumps(body)
    return httpx.post(server.url + route, content=content, headers=JSON, timeout=60)


def assert_400(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]


def routes_still_answer(server) -> None:
    for path in ("/v1/models", "/v1/ps", "/health"):
        assert httpx.get(server.url + path).status_code == 200, path


# --- keep_alive ---------------------------------------------------------------------------------


def test_parse_keep_alive_refuses_nan_and_means_forever_for_huge_values():
    for value in ("nan", float("nan"), "NaN"):
        with pytest.raises(ValueError, match="keep_alive"):
            parse_keep_alive(value)
    for value in ("inf", float("inf"), "Infinity", 1e17, "1e300"):
        assert parse_keep_alive(value) is None  # forever, like -1
    assert parse_keep_alive("5m") == 300.0


@pytest.mark.parametrize("value", ["inf", "Infinity", 1e17, "1e300"])
def test_huge_keep_alive_means_forever_and_breaks_nothing(server, value):
    r = post(server, "/v1/chat/completions", {"model": "tiny", "messages": USER, "max_tokens": 1,
                                             "keep_alive": value})
    assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/v1/models/tiny/load", json={"keep_alive": value})
    assert r.status_code == 200 and r.json()["expires_at"] is None
    routes_still_answer(server)


def test_nan_keep_alive_is_a_400(server):
    r = post(server, "/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}],'
             ' "keep_alive": NaN}', raw=True)
    assert_400(r)
    assert_400(post(server, "/v1/chat/completions", {"model": "tiny", "messages": USER, "keep_alive": "nan"}),
               "keep_alive")
    routes_still_answer(server)


# --- malformed and oversized shapes ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [64, 950, 5000, 100_000])
def test_deeply_nested_json_is_a_400(server, depth):
    nested = "[" * depth + "]" * depth
    body = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "extra": ' + nested + "}"
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert_400(post(server, route, body, raw=True), "nested")
    routes_still_answer(server)


def deep_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_deep_json_schema_is_a_400(server):
    body = {"model": "tiny", "messages": USER, "max_tokens": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(122)}}}
    assert_400(post(server, "/v1/chat/completions", body), "nested")


@pytest.mark.parametrize("route, body", [
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
    ("/v1/completions", '{"model": "tiny", "prompt": "\\udfff", "max_tokens": 1}'),
    ("/v1/embeddings", '{"model": "emb", "input": ["ok", "\\ud800"]}'),
    ("/v1/chat/completions", '{"model": "ti\\ud800ny", "messages": [{"role": "user", "content": "x"}]}'),
])
def test_lone_surrogates_are_a_400(server, route, body):
    assert_400(post(server, route, body, raw=True), "surrogate")


def test_a_model_name_of_256_characters_or_more_is_a_400(server):
    for name in ("x" * 256, "a/" * 200, "/" + "y" * 5000):
        assert_400(post(server, "/v1/chat/completions", {"model": name, "messages": USER}), "model name")
        assert_400(post(server, "/v1/embeddings", {"model": name, "input": "x"}), "model name")
        r = httpx.post(f"{server.url}/v1/models/{name}/load")
        assert r.status_code == 400, r.text
    routes_still_answer(server)
