"""`python -m ominix serve` as a user runs it: a subprocess on a free 127.0.0.1 port."""

import os
import socket
import subprocess
import sys
import time

import httpx
import openai

from tests.server_fixtures import random_qwen3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_preloads_and_answers(tmp_path):
    model = random_qwen3(tmp_path / "tiny")
    port = free_port()
    env = {**os.environ, "OMINIX_API_KEY": "sk-cli"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ominix", "serve", "--port", str(port), "--model", str(model),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-cli", max_retries=0)
        [card] = [m for m in client.models.list().data if m.id == str(model)]
        assert card.model_extra["loaded"] is True  # --model preloaded it
        r = client.chat.completions.create(model=str(model), messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert r.usage.completion_tokens >= 1
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        import ollama  # Ollama's API beside /v1 (`serve --port 11434` makes it a drop-in)

        ollama_client = ollama.Client(host=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer sk-cli"})
        reply = ollama_client.chat(str(model), messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3})
        assert reply.done and reply.eval_count >= 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in out
    assert "API key required" in out


def test_serve_rejects_an_unknown_model_before_listening():
    proc = subprocess.run([sys.executable, "-m", "ominix", "serve", "--model", "no-such-model-xyz"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
