"""One decode path: `ominix run --seed S` and the server with seed=S sample the same way, with and
without a generation_config.json; the layers import only downward; a model of the wrong kind gets
one clear line from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, qwen3_embedding, random_qwen3

PROMPT = "Tell me something"


def ominix(*args):
    return subprocess.run([sys.executable, "-m", "ominix", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    tuned = random_qwen3(root / "tuned", seed=3)  # generation_config: temperature 0.6, top_k 20, top_p 0.95
    plain = random_qwen3(root / "plain", seed=3)
    (plain / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 2]}))
    return {"tuned": tuned, "plain": plain}


@pytest.mark.parametrize("name", ["tuned", "plain"])
def test_run_and_server_give_the_same_seeded_tokens(checkpoints, name):
    path = checkpoints[name]
    pool = ModelPool()
    pool.register(str(path), name)
    with ServerThread(create_app(pool)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        served = [client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": PROMPT}], seed=seed, max_tokens=12,
        ).choices[0].message for seed in (7, 8)]
    texts = [((m.model_extra or {}).get("reasoning_content") or "") + (m.content or "") for m in served]
    assert texts[0] != texts[1]  # sampled, not greedy: the seed matters
    for seed, text in zip((7, 8), texts):
        result = ominix("run", str(path), PROMPT, "--seed", str(seed), "--max-tokens", "12")
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n").replace("<think>", "").replace("</think>", "").strip() == \
            text.replace("<think>", "").replace("</think>", "").strip()


LAYERS = {
    "engine imports no api, cli or web stack": (
        ["ominix.engine.worker", "ominix.engine.job", "ominix.engine.pool", "ominix.engine.embed", "ominix.engine.load",
         "ominix.engine.convert", "ominix.engine.llm.lane", "ominix.engine.llm.jobs", "ominix.engine.llm.chat",
         "ominix.engine.llm.constrained", "ominix.bench", "ominix.engine.gguf", "ominix.engine.gguf_quants",
         "ominix.engine.gguf_tokenizer", "ominix.engine.gotemplate", "ominix.engine.ollama_model"],
        ["ominix.api", "ominix.cli", "fastapi", "starlette", "uvicorn"]),
    "hub, registry and kinds import no MLX and no engine": (
        ["ominix.hub.download", "ominix.hub.store", "ominix.hub.sources", "ominix.hub.ollama", "ominix.registry",
         "ominix.entries", "ominix.kinds"],
        ["mlx", "ominix.engine", "ominix.models"]),
    "models import no engine": (
        ["ominix.models." + m for m in ("qwen3", "qwen2", "bert", "mistral", "glm4", "minicpm", "qwen3_moe",
                                        "mixtral", "glm4_moe", "layers", "llama")],
        ["ominix.engine", "ominix.api", "ominix.cli"]),
}


@pytest.mark.parametrize("rule", list(LAYERS))
def test_layers_import_only_downward(rule):
    modules, forbidden = LAYERS[rule]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print([m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r})])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{rule}: {out.stdout}"


def test_cli_refuses_a_model_of_another_kind(tmp_path):
    emb = qwen3_embedding(tmp_path / "emb", prefixed=False)
    for verb in ("run", "bench"):
        args = [verb, str(emb)] + (["hi"] if verb == "run" else [])
        result = ominix(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert "embedding model" in lines[0] and "POST /v1/embeddings" in lines[0]
