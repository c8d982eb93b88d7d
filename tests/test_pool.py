"""Model residency: memory budget with LRU unloads, keep_alive, allow-list, load/unload routes, `ps`,
and loading one model while another keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from ominix.engine.budget import estimate_bytes, parse_keep_alive, parse_memory, total_memory
from tests.server_fixtures import CONFIG, ServerThread, random_qwen3, write_checkpoint

USER = [{"role": "user", "content": "hi"}]


def test_parse_memory_and_keep_alive():
    assert parse_memory("8GB") == 8_000_000_000 and parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory("50%") == total_memory() // 2 and parse_memory(1234) == 1234
    for bad in ("lots", "-1GB", "150%", "8 parsecs"):
        with pytest.raises(ValueError, match="memory"):
            parse_memory(bad)
    assert parse_keep_alive("5m") == 300 and parse_keep_alive("1h30m") == 5400 and parse_keep_alive("250ms") == 0.25
    assert parse_keep_alive(0) == 0 and parse_keep_alive("30") == 30
    assert parse_keep_alive(-1) is None and parse_keep_alive("-1m") is None
    for bad in ("soon", "5 minutes", True, None):
        with pytest.raises(ValueError, match="keep_alive"):
            parse_keep_alive(bad)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    return {name: random_qwen3(root / name, seed=i) for i, name in enumerate(("a", "b", "c"))}


def serve(models, **pool_args):
    pool = ModelPool(use_catalog=False, **pool_args)
    for name in ("a", "b", "c"):
        if name in models:
            pool.register(str(models[name]), name)
    return ServerThread(create_app(pool))


def chat(url, model, **extra):
    body = {"model": model, "messages": USER, "max_tokens": 2, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=60)


def loaded(url) -> dict:
    return {c["id"]: c for c in httpx.get(url + "/v1/models").json()["data"] if c["loaded"]}


def test_budget_unloads_least_recently_used(models):
    size = estimate_bytes(models["a"])
    with serve(models, memory_budget=int(size * 2.5)) as s:  # room for two
        for name in ("a", "b"):
            assert chat(s.url, name).status_code == 200
        assert set(loaded(s.url)) == {"a", "b"}
        assert chat(s.url, "a").status_code == 200  # a is now the most recently used
        assert chat(s.url, "c").status_code == 200
        assert set(loaded(s.url)) == {"a", "c"}  # b went
        cards = loaded(s.url)
        assert all(c["memory_bytes"] >= size * 0.9 for c in cards.values())
    with serve(models, memory_budget=size // 2) as s:  # cannot fit at all
        r = chat(s.url, "a")
        assert r.status_code == 503 and "memory budget" in r.json()["error"]["message"]


def test_keep_alive_per_request_and_default(models):
    with serve(models, keep_alive=60) as s:
        assert chat(s.url, "a", keep_alive=0).status_code == 200
        deadline = time.time() + 5
        while "a" in loaded(s.url) and time.time() < deadline:
            time.sleep(0.05)
        assert "a" not in loaded(s.url)  # 0: unloaded right after the request
        assert chat(s.url, "b", keep_alive="400ms").status_code == 200
        assert loaded(s.url)["b"]["expires_at"] is not None
        time.sleep(1.0)
        assert "b" not in loaded(s.url)
        assert chat(s.url, "c", keep_alive=-1).status_code == 200
        assert chat(s.url, "a").status_code == 200  # server default: 60 s
        cards = loaded(s.url)
        assert cards["c"]["expires_at"] is None and cards["a"]["keep_alive"] == 60
        r = chat(s.url, "a", keep_alive="whenever")
        assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]


def test_allow_list_refuses_other_models(models, tmp_path):
    pool = ModelPool(use_catalog=False, allow_only=[str(models["a"])])
    with ServerThread(create_app(pool)) as s:
        assert chat(s.url, str(models["a"])).status_code == 200
        for other in (str(models["b"]), "b", "/etc"):
            r = chat(s.url, other)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", other
        assert [c["id"] for c in httpx.get(s.url + "/v1/models").json()["data"]] == [str(models["a"])]


def test_load_unload_routes_and_ps(models):
    with serve(models) as s:
        r = httpx.post(s.url + "/v1/models/a/load", json={"keep_alive": -1}, timeout=60)
        assert r.status_code == 200 and r.json()["loaded"] and r.json()["expires_at"] is None
        assert httpx.post(s.url + "/v1/models/nope/load").status_code == 404
        out = subprocess.run([sys.executable, "-m", "ominix", "ps", "--port", str(s.port), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        ps = json.loads(out.stdout)
        assert [c["id"] for c in ps["data"]] == ["a"] and ps["resident_bytes"] > 0
        table = subprocess.run([sys.executable, "-m", "ominix", "ps", "--port", str(s.port)],
                               capture_output=True, text=True, timeout=60).stdout
        assert "a" in table and "never" in table
        r = httpx.post(s.url + "/v1/models/a/unload", timeout=60)
        assert r.json()["status"] == "unloaded" and not loaded(s.url)
        assert httpx.post(s.url + "/v1/models/a/unload").json()["status"] == "not_loaded"
    down = subprocess.run([sys.executable, "-m", "ominix", "ps", "--port", str(s.port)],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "no OminiX server" in down.stderr


def big_checkpoint(path):
    """~800 MB of float32 weights: slow enough to load that a request to another model fits inside."""
    config = {**CONFIG, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 12,
              "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 128}
    H, I, V, L = 1024, 4096, config["vocab_size"], 12
    w = {"model.embed_tokens.weight": np.zeros((V, H), np.float32), "model.norm.weight": np.ones(H, np.float32),
         "lm_head.weight": np.zeros((V, H), np.float32)}
    for i in range(L):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (1024, H)), ("self_attn.k_proj", (512, H)),
                            ("self_attn.v_proj", (512, H)), ("self_attn.o_proj", (H, 1024)),
                            ("mlp.gate_proj", (I, H)), ("mlp.up_proj", (I, H)), ("mlp.down_proj", (H, I))):
            w[p + name + ".weight"] = np.full(shape, 0.001, np.float32)
        for name, n in (("self_attn.q_norm", 128), ("self_attn.k_norm", 128), ("input_layernorm", H),
                        ("post_attention_layernorm", H)):
            w[p + name + ".weight"] = np.ones(n, np.float32)
    return write_checkpoint(path, w, config)


def test_loading_a_model_does_not_block_requests_to_another(models, tmp_path):
    """A stream from resident model 'a' keeps producing tokens while 'big' loads: chunk arrival
    times are compared with the load window (seen through pool.loading()), so the test does not
    depend on how fast the load happens to be."""
    big = big_checkpoint(tmp_path / "big")
    pool = ModelPool(use_catalog=False)
    pool.register(str(models["a"]), "a")
    pool.register(str(big), "big")
    with ServerThread(create_app(pool, preload=["a"])) as s:
        arrivals: list[float] = []

        def stream_from_a():
            body = {"model": "a", "messages": USER, "max_tokens": 480, "stream": True,
                    "logit_bias": {str(t): -100 for t in (614, 616)}}  # never stop on EOS
            with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=120) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        arrivals.append(time.perf_counter())
                    if len(arrivals) > 20 and load_window[1]:
                        break  # the load is over: enough seen

        load_window = [0.0, 0.0]
        streaming = threading.Thread(target=stream_from_a)
        streaming.start()
        deadline = time.time() + 30
        while len(arrivals) < 5 and streaming.is_alive() and time.time() < deadline:
            time.sleep(0.001)
        assert len(arrivals) >= 5, "the stream from 'a' did not start"
        loading = threading.Thread(target=lambda: httpx.post(s.url + "/v1/models/big/load", timeout=120))
        loading.start()
        while "big" not in pool.loading() and loading.is_alive():
            time.sleep(0.0005)
        load_window[0] = time.perf_counter()
        while "big" in pool.loading():
            time.sleep(0.0005)
        load_window[1] = time.perf_counter()
        loading.join()
        streaming.join()
        during = [t for t in arrivals if load_window[0] < t < load_window[1]]
        print(f"load took {load_window[1] - load_window[0]:.2f}s; {len(during)} tokens from a meanwhile")
        assert load_window[1] - load_window[0] > 0.02, "the load window was too short to observe"
        assert len(during) >= 2, f"'a' produced {len(during)} tokens during a {load_window[1] - load_window[0]:.2f}s load"
        assert set(loaded(s.url)) == {"a", "big"}
        assert chat(s.url, "big").status_code == 200