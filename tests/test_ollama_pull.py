"""Pulling from Ollama's registry (a stand-in on 127.0.0.1 that serves its paths, headers and
errors): names, events in order, blobs once by digest, resume, sha256 refusal, unknown
model/tag, the loader's view of the pulled model (Go template, params, system), and the CLI."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from ominix.engine.load import load
from ominix.hub import ollama
from ominix.hub.sources import DownloadError, RepoNotFoundError
from tests.gguf_checkpoints import write_gguf
from tests.ollama_registry import FakeRegistry, digest_of

TEMPLATE = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
            "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")  # fmt: skip
PARAMS = {"temperature": 0.0, "top_k": 1, "stop": ["<|im_end|>"], "repeat_penalty": 1.1}


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    path, _ = write_gguf(tmp_path_factory.mktemp("og") / "m.gguf", "llama", "Q8_0")
    return path.read_bytes()


@pytest.fixture
def registry(gguf_bytes, tmp_path, monkeypatch):
    monkeypatch.setenv("OMINIX_MODELS", str(tmp_path / "models"))
    reg = FakeRegistry()
    reg.add_model("tiny", "q8", {"model": gguf_bytes, "template": TEMPLATE.encode(),
                                 "params": json.dumps(PARAMS).encode(),
                                 "system": b"You are terse.", "license": b"MIT"})  # fmt: skip
    reg.start()
    yield reg
    reg.stop()


def name(reg, model="tiny:q8"):
    return f"ollama:{reg.host}/{model}"


def test_names():
    n = ollama.parse_name("ollama:qwen3:0.6b")
    assert (n.host, n.namespace, n.name, n.tag, n.scheme) == (
        "registry.ollama.ai", "library", "qwen3", "0.6b", "https")
    assert ollama.parse_name("ollama:qwen3").tag == "latest"
    n = ollama.parse_name("ollama:127.0.0.1:8099/me/tiny:q8")
    assert (n.host, n.namespace, n.scheme, n.short()) == ("127.0.0.1:8099", "me", "http",
                                                          "127.0.0.1:8099/me/tiny:q8")
    assert ollama.parse_name("ollama:example.com/tiny").host == "example.com"
    assert ollama.parse_name("ollama:user/tiny").namespace == "user"
    assert ollama.parse_name("ollama:example.com/tiny", insecure=True).scheme == "http"
    for bad in ("ollama:", "ollama:../etc", "ollama:a/b/c/d", "ollama:tiny:..", "ollama:a//b",
                "ollama:..:1/x/y", "ollama:tiny:a/b", "ollama:ti ny", "ollama:x/.hidden"):
        with pytest.raises(ollama.OllamaNameError):
            ollama.parse_name(bad)
    with pytest.raises(DownloadError):
        ollama.blob_path("sha256:../../x")


def test_pull_events_layout_and_loading(registry, gguf_bytes):
    events = []
    folder = ollama.pull(name(registry), on_event=events.append)
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model_digest = digest_of(gguf_bytes)
    layer = [e for e in events if e.get("digest") == model_digest]
    assert layer[0]["status"] == f"pulling {model_digest[7:19]}" and layer[0]["total"] == len(gguf_bytes)
    assert layer[-1]["completed"] == len(gguf_bytes)
    assert ollama.blob_path(model_digest).read_bytes() == gguf_bytes
    assert (folder / "model.gguf").read_bytes() == gguf_bytes

    model, tokenizer = load(folder)
    assert tokenizer.generation_config["temperature"] == 0.0
    assert tokenizer.generation_config["repetition_penalty"] == 1.1
    assert tokenizer.default_system == "You are terse."
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": "S"},
                                            {"role": "user", "content": "Hi"}])  # fmt: skip
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                     "<|im_start|>assistant\n"
    direct, _ = load(folder / "model.gguf")
    ids = mx.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(np.array(model(ids)), np.array(direct(ids)))
    assert ollama.installed() == [ollama.parse_name(name(registry))]


def test_blobs_are_stored_once_and_removed_when_unused(registry, gguf_bytes):
    registry.add_model("other", "latest", {"model": gguf_bytes, "template": b"{{ .Prompt }}"})
    ollama.pull(name(registry))
    before = len(registry.requests)
    ollama.pull(name(registry, "other"))
    fetched = [p for _, p, _ in registry.requests[before:] if p.startswith("/cdn/")]
    assert f"/cdn/{digest_of(gguf_bytes)}" not in fetched  # already there: not downloaded again
    blobs = sorted(p.name for p in (ollama.root() / "blobs").iterdir())
    assert blobs.count(digest_of(gguf_bytes).replace(":", "-")) == 1
    ollama.remove(name(registry))
    assert ollama.blob_path(digest_of(gguf_bytes)).exists()  # still listed by "other"
    assert not ollama.blob_path(digest_of(TEMPLATE.encode())).exists()
    ollama.remove(name(registry, "other"))
    assert not ollama.blob_path(digest_of(gguf_bytes)).exists()
    with pytest.raises(RepoNotFoundError):
        ollama.remove(name(registry, "other"))


def test_resume_after_a_cut_and_from_a_partial_file(registry, gguf_bytes):
    digest = digest_of(gguf_bytes)
    registry.cut_after[digest] = 4000
    ollama.pull(name(registry))
    assert ("GET", f"/cdn/{digest}", "bytes=4000-") in registry.requests
    assert ollama.blob_path(digest).read_bytes() == gguf_bytes

    ollama.remove(name(registry))
    partial = ollama.blob_path(digest).with_name(ollama.blob_path(digest).name + "-partial")
    partial.write_bytes(gguf_bytes[:1500])  # an earlier pull stopped here
    ollama.pull(name(registry))
    assert ("GET", f"/cdn/{digest}", "bytes=1500-") in registry.requests
    assert ollama.blob_path(digest).read_bytes() == gguf_bytes and not partial.exists()


def test_a_blob_that_does_not_match_its_digest_is_refused(registry, gguf_bytes):
    registry.corrupt.add(digest_of(gguf_bytes))
    with pytest.raises(DownloadError, match="digest mismatch"):
        ollama.pull(name(registry))
    assert not ollama.blob_path(digest_of(gguf_bytes)).exists()
    assert ollama.local_model(name(registry)) is None and ollama.installed() == []


def test_unknown_model_and_tag(registry):
    with pytest.raises(RepoNotFoundError, match="file does not exist"):
        ollama.pull(name(registry, "nosuch:latest"))
    with pytest.raises(RepoNotFoundError, match="MANIFEST_UNKNOWN"):
        ollama.pull(name(registry, "tiny:nosuch"))


def test_cli_pull_show_run_rm(registry):
    from ominix.engine.llm.generate import generate
    from ominix.engine.llm.sample import SamplingParams
    from tests.test_run_cli import ominix

    result = ominix("pull", name(registry), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}

    listed = ominix("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [str(ollama.parse_name(name(registry)))]

    shown = ominix("show", name(registry), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["template"] == TEMPLATE and info["params"] == PARAMS
    assert info["gguf"]["Q8_0"]["loaded_as"] == "MLX affine 8-bit, group 32"

    model, tokenizer = load(ollama.local_model(name(registry)))
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": "You are terse."},
                                            {"role": "user", "content": "Hello"}])  # fmt: skip
    expected = generate(model, tokenizer, prompt, SamplingParams(temperature=0), max_tokens=6).text
    ran = ominix("run", name(registry), "Hello", "--max-tokens", "6")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == expected.strip()

    copied = ominix("cp", name(registry), "ollama:mine:v1")
    assert copied.returncode == 0, copied.stderr
    assert ollama.local_model("mine:v1") is not None
    short = ominix("run", "mine:v1", "Hello", "--max-tokens", "6")  # NAME:TAG alone, not in the catalog
    assert short.returncode == 0 and short.stdout.strip() == expected.strip(), short.stderr
    assert ominix("show", "mine:v1", "--json").returncode == 0
    assert not ollama.claims("qwen3:8b")  # a catalog alias stays the catalog's
    assert ollama.claims("gemma3:270m") and not ollama.claims("acme/repo") and not ollama.claims("qwen3-8b")
    assert ominix("rm", "ollama:mine:v1", "-y").returncode == 0
    assert ollama.blob_path(json.loads(shown.stdout)["model"]).exists()  # still used by the original

    removed = ominix("rm", name(registry), "-y")
    assert removed.returncode == 0 and ollama.installed() == []
    missing = ominix("show", name(registry))
    assert missing.returncode == 1 and "not found" in missing.stderr
