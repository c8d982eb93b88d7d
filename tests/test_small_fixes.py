"""The smaller hardening items: a chunked load body, one resident copy per directory, `rm` only of
models, path-looking names that do not exist, and `ps` against a keyed server."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from ominix import config
from ominix.api.app import create_app
from ominix.cli import app as cli
from ominix.engine.pool import ModelPool
from ominix.hub import store
from tests.server_fixtures import ServerThread, random_qwen3

KEY = "sk-small"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_qwen3(tmp_path_factory.mktemp("small") / "a" / "tiny")


def test_load_route_reads_a_chunked_body(tiny):
    pool = ModelPool()
    pool.register(str(tiny), "tiny")
    with ServerThread(create_app(pool)) as s:
        def chunks():
            yield b'{"keep_alive": '
            yield b'"-1"}'

        r = httpx.post(s.url + "/v1/models/tiny/load", content=chunks(),
                       headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["expires_at"] is None and r.json()["keep_alive"] is None  # -1: forever


def test_one_directory_is_resident_once_however_it_is_spelled(tiny):
    pool = ModelPool()
    pool.register(str(tiny), "tiny")
    with ServerThread(create_app(pool)) as s:
        roundabout = f"{tiny.parent}/../a/tiny"
        for name in ("tiny", str(tiny), roundabout):
            r = httpx.post(f"{s.url}/v1/models/{name}/load", timeout=60)
            assert r.status_code == 200, (name, r.text)
            assert r.json()["id"] == "tiny"
        assert list(httpx.get(s.url + "/v1/ps").json()["data"]) and \
            [m["id"] for m in httpx.get(s.url + "/v1/ps").json()["data"]] == ["tiny"]


def test_rm_refuses_what_is_not_a_model(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OMINIX_MODELS", raising=False)
    monkeypatch.setenv("OMINIX_REGISTRY", str(tmp_path / "overlay.json"))
    hf, models = config.hf_hub_cache(), config.models_dir()
    for folder in (hf / "datasets--x--y" / "snapshots", hf / ".locks" / "models--a--b", models / ".locks" / "m",
                   hf / "models--a--b" / "snapshots" / "0"):
        folder.mkdir(parents=True, exist_ok=True)
    for name in (str(hf / "datasets--x--y"), str(hf / ".locks"), str(models / ".locks"), ".locks"):
        with pytest.raises(store.StoreError, match="not a model"):
            store.removal_target(name)
    assert (hf / "datasets--x--y").is_dir() and (hf / ".locks").is_dir() and (models / ".locks").is_dir()
    assert store.removal_target(str(hf / "models--a--b")) == hf / "models--a--b"


def test_a_path_looking_name_that_does_not_exist_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub attempt would say "Cannot reach"
    runner = CliRunner()
    for name in ("./does/not/exist", str(tmp_path / "nope"), "~/no-such-model-dir"):
        result = runner.invoke(cli, ["run", name, "hi"])
        assert result.exit_code == 1
        assert "no such directory" in result.output and "Cannot reach" not in result.output, result.output
    result = runner.invoke(cli, ["serve", "--model", str(tmp_path / "nope"), "--port", "1"])
    assert result.exit_code == 2 and "no such directory" in result.output, result.output


def test_ps_against_a_keyed_server_says_to_pass_the_key(tiny):
    with ServerThread(create_app(ModelPool(), api_key=KEY)) as s:
        proc = subprocess.run([sys.executable, "-m", "ominix", "ps", "--port", str(s.port)],
                              capture_output=True, text=True, timeout=120,
                              env={**__import__("os").environ, "OMINIX_API_KEY": ""})
        assert proc.returncode == 1
        assert "--api-key" in proc.stderr and "OMINIX_API_KEY" in proc.stderr and "{" not in proc.stderr
        ok = subprocess.run([sys.executable, "-m", "ominix", "ps", "--port", str(s.port), "--api-key", KEY,
                             "--json"], capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and json.loads(ok.stdout)["object"] == "list"
