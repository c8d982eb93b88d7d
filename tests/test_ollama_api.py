"""Ollama's API end to end: a real uvicorn server, driven by the official `ollama` Python client
(and httpx for the raw wire format): version, pull from a stand-in registry (progress in order,
resume after a cut, sha256 refusal), list, show, ps, copy, delete, chat and generate with and
without streaming, tools, thinking, format, context, raw, embed, keep_alive, and the errors; the
same model under the same seed answers alike through /api/chat and /v1/chat/completions."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import ollama
import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.gguf_checkpoints import write_gguf
from tests.ollama_registry import FakeRegistry, digest_of
from tests.server_fixtures import ServerThread, qwen3_embedding, random_qwen3, scripted_tool_call_checkpoint

TEMPLATE = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
            "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")  # fmt: skip
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]  # fmt: skip
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    path, _ = write_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf", "llama", "Q4_0")
    reg = FakeRegistry()
    reg.add_model("tiny", "q4", {"model": path.read_bytes(), "template": TEMPLATE.encode(),
                                 "params": json.dumps({"temperature": 0, "top_k": 1}).encode(),
                                 "system": b"You are terse.", "license": b"MIT"})  # fmt: skip
    reg.add_model("broken", "latest", {"model": b"GGUF" + bytes(300)})
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("OMINIX_MODELS", str(root / "store"))
    pool = ModelPool()
    pool.register(str(random_qwen3(root / "tiny")), "tiny")
    pool.register(str(scripted_tool_call_checkpoint(root / "scripted")), "scripted")
    pool.register(str(qwen3_embedding(root / "emb", prefixed=False)), "emb")
    with ServerThread(create_app(pool)) as s:
        yield s
    mp.undo()


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=120)


def pulled(registry) -> str:
    return f"{registry.host}/library/tiny:q4"


def test_version_and_root(server):
    assert httpx.get(server.url + "/api/version").json() == {"version": "0.12.0"}
    assert httpx.get(server.url + "/").text == "Ollama is running"


def test_pull_streams_progress_in_order_then_lists_and_shows(client, registry):
    digest = digest_of(next(b for d, b in registry.blobs.items() if b.startswith(b"GGUF")
                            and len(b) > 1000))  # fmt: skip
    registry.cut_after[digest] = 5000  # the connection drops: the pull resumes with Range
    events = list(client.pull(f"ollama:{pulled(registry)}", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer = [e for e in events if e.digest == digest]
    assert layer[0].status == f"pulling {digest[7:19]}" and layer[-1].completed == layer[-1].total
    assert ("GET", f"/cdn/{digest}", "bytes=5000-") in registry.requests

    models = {m.model: m for m in client.list().models}
    assert {"tiny", "scripted", "emb", pulled(registry)} <= set(models)
    entry = models[pulled(registry)]
    assert entry.details.format == "gguf" and entry.details.family == "llama"
    assert entry.details.quantization_level in ("Q4_0", "unknown") and entry.size > 0
    assert len(entry.digest) == 64

    shown = client.show(pulled(registry))
    assert shown.template == TEMPLATE and "top_k" in shown.parameters
    assert shown.license == "MIT" and "completion" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "llama"
    assert client.show("tiny").details.family == "qwen3"


def test_pull_errors(client, registry):
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(client.pull(f"ollama:{registry.host}/library/nosuch", stream=True))
    with pytest.raises(ollama.ResponseError) as e:
        client.pull(f"ollama:{registry.host}/library/tiny:nosuchtag", stream=False)
    assert e.value.status_code == 404
    registry.add_model("other", "latest", {"model": b"GGUF" + bytes(100), "license": b"Apache"})
    registry.corrupt.add(digest_of(b"Apache"))  # a blob not downloaded before
    with pytest.raises(ollama.ResponseError, match="digest mismatch"):
        list(client.pull(f"ollama:{registry.host}/library/other", stream=True))
    with pytest.raises(ollama.ResponseError) as e:
        client.pull("ollama:../../etc", stream=False)
    assert e.value.status_code == 400


def test_chat_stream_and_not_and_the_pulled_model(client, registry):
    messages = [{"role": "user", "content": "Hello there"}]
    whole = client.chat("tiny", messages=messages, options=GREEDY, stream=False)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 8
    assert whole.prompt_eval_count > 0 and whole.total_duration >= whole.eval_duration > 0
    assert isinstance(whole.load_duration, int) and whole.message.role == "assistant"
    chunks = list(client.chat("tiny", messages=messages, options=GREEDY, stream=True))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == whole.message.content
    assert chunks[-1].eval_count == 8

    pulled_answer = client.chat(pulled(registry), messages=messages, options=GREEDY)
    assert pulled_answer.eval_count == 8
    ps = {m.model: m for m in client.ps().models}
    assert pulled(registry) in ps and ps[pulled(registry)].size > 0
    assert ps[pulled(registry)].expires_at is not None


def test_same_seed_same_answer_as_v1(client, server):
    options = {"seed": 7, "temperature": 0.9, "top_p": 0.95, "num_predict": 12}
    ours = client.chat("tiny", messages=[{"role": "user", "content": "Tell me a story"}],
                       options=options).message.content  # fmt: skip
    v1 = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    theirs = v1.chat.completions.create(model="tiny", seed=7, temperature=0.9, top_p=0.95, max_tokens=12,
                                        messages=[{"role": "user", "content": "Tell me a story"}])
    assert ours == theirs.choices[0].message.content
    again = client.chat("tiny", messages=[{"role": "user", "content": "Tell me a story"}], options=options)
    assert again.message.content == ours


def test_generate_context_raw_and_system(client):
    first = client.generate("tiny", prompt="Hi", options=GREEDY, stream=False)
    assert first.done and first.eval_count == 8 and len(first.context) > 8
    streamed = list(client.generate("tiny", prompt="Hi", options=GREEDY, stream=True))
    assert "".join(c.response for c in streamed) == first.response
    assert list(streamed[-1].context) == list(first.context)
    follow = client.generate("tiny", prompt="More", context=first.context, options=GREEDY)
    assert follow.prompt_eval_count > len(first.context)
    raw = client.generate("tiny", prompt="plain text", raw=True, options=GREEDY)
    templated = client.generate("tiny", prompt="plain text", options=GREEDY)
    assert raw.prompt_eval_count < templated.prompt_eval_count  # no template around it
    with_system = client.generate("tiny", prompt="plain text", system="Be brief.", options=GREEDY)
    assert with_system.prompt_eval_count > templated.prompt_eval_count


def test_tools_and_thinking(client):
    reply = client.chat("scripted", messages=[{"role": "user", "content": "Weather in Paris?"}],
                        tools=TOOLS, options={"temperature": 0})  # fmt: skip
    call = reply.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert reply.message.thinking == "Hm" and reply.message.content.strip() == "OK."
    chunks = list(client.chat("scripted", messages=[{"role": "user", "content": "Weather?"}],
                              tools=TOOLS, options={"temperature": 0}, stream=True))  # fmt: skip
    calls = [c for ch in chunks for c in (ch.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert "".join(ch.message.thinking or "" for ch in chunks) == "Hm"


def test_format_json_schema(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    reply = client.chat("tiny", messages=[{"role": "user", "content": "Answer"}], format=schema,
                        options={"temperature": 0, "num_predict": 40})  # fmt: skip
    value = json.loads(reply.message.content)
    assert set(value) == {"ok"} and isinstance(value["ok"], bool)
    text = client.generate("tiny", prompt="Answer", format="json",
                           options={"temperature": 0, "num_predict": 60}).response
    assert text.lstrip().startswith("{")


def test_embed_and_embeddings(client, server):
    out = client.embed(model="emb", input=["first text", "second"])
    assert len(out.embeddings) == 2 and out.prompt_eval_count > 0
    v1 = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    ref = v1.embeddings.create(model="emb", input=["first text", "second"], encoding_format="float")
    np.testing.assert_allclose(np.array(out.embeddings), np.array([d.embedding for d in ref.data]),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    old = client.embeddings(model="emb", prompt="first text")
    np.testing.assert_allclose(old.embedding, out.embeddings[0], rtol=1e-5, atol=1e-6)


def test_keep_alive_load_and_unload(client):
    loaded = client.generate("tiny", prompt="", keep_alive="10m")
    assert loaded.done_reason == "load" and "tiny" in {m.model for m in client.ps().models}
    unloaded = client.generate("tiny", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload" and "tiny" not in {m.model for m in client.ps().models}
    client.chat("tiny", messages=[{"role": "user", "content": "x"}], options=GREEDY, keep_alive=0)
    deadline = time.time() + 5  # unloaded right after the answer, on the worker's next turn
    while "tiny" in {m.model for m in client.ps().models} and time.time() < deadline:
        time.sleep(0.05)
    assert "tiny" not in {m.model for m in client.ps().models}
    with pytest.raises(ollama.ResponseError) as e:
        client.generate("tiny", prompt="x", keep_alive="whenever")
    assert e.value.status_code == 400 and "keep_alive" in e.value.error


def test_copy_and_delete(client, registry):
    client.copy(pulled(registry), "mycopy:v1")
    assert "mycopy:v1" in {m.model for m in client.list().models}
    assert client.chat("mycopy:v1", messages=[{"role": "user", "content": "x"}], options=GREEDY).done
    assert client.delete("mycopy:v1").status == "success"
    assert "mycopy:v1" not in {m.model for m in client.list().models}
    assert pulled(registry) in {m.model for m in client.list().models}  # its blobs are still there
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("nosuch:latest")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        client.copy("tiny", "x:y")
    assert e.value.status_code == 400


def test_errors_use_ollamas_words(client, server):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat("nosuch", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat("emb", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as e:
        client.chat("tiny", messages=[{"role": "user", "content": "x"}], options={"temperature": -1})
    assert e.value.status_code == 400 and "temperature" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.embed(model="tiny", input="x")
    assert e.value.status_code == 400
    bad = httpx.post(server.url + "/api/chat", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()
    missing = httpx.post(server.url + "/api/generate", json={"prompt": "x"})
    assert missing.status_code == 400 and missing.json() == {"error": "model is required"}


def test_wire_format(server):
    """NDJSON lines, Go's RFC 3339 timestamps, integer nanosecond durations, as Ollama sends."""
    import re

    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "options": GREEDY}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", x["created_at"]) for x in lines)
    final = lines[-1]
    assert final["done"] is True and final["message"] == {"role": "assistant", "content": ""}
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"):
        assert isinstance(final[key], int), key
    whole = httpx.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                          "options": GREEDY}, timeout=60)
    assert whole.headers["content-type"].startswith("application/json") and whole.json()["done"]


def test_ominix_stop_unloads_from_the_running_server(client, server):
    from tests.test_run_cli import ominix

    client.generate("tiny", prompt="", keep_alive="10m")
    assert "tiny" in {m.model for m in client.ps().models}
    result = ominix("stop", "tiny", "--port", str(server.port))
    assert result.returncode == 0 and "unloaded tiny" in result.stdout, result.stderr
    assert "tiny" not in {m.model for m in client.ps().models}
    missing = ominix("stop", "nosuch", "--port", str(server.port))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_ollama_names_map_onto_catalog_entries():
    """`name:tag` and `name:tag-<quantization>` find the catalog entry whose alias is name:tag."""
    from ominix.api.ollama import candidates
    from ominix.registry import load_catalog

    catalog = load_catalog()
    for asked, entry_id in (("qwen3:8b", "qwen3-8b"), ("qwen3:8b-q4_K_M", "qwen3-8b"),
                            ("llama3.2:1b-instruct-fp16", "llama3.2-1b"), ("mistral:7b-q8_0", "mistral-7b")):
        found = [catalog.find(c) for c in candidates(asked)]
        assert next(e for e in found if e is not None).id == entry_id, asked
    assert candidates("tiny") == ["tiny"]
