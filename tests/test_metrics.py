"""GET /metrics (Prometheus text), the bounded queue (429) and the request timeout (504)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, random_qwen3

USER = [{"role": "user", "content": "hi"}]
NO_EOS = {"0": -100, "1": -100, "2": -100}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_qwen3(tmp_path_factory.mktemp("metrics") / "tiny", max_position_embeddings=100_000)


def server(tiny, **app_args):
    pool = ModelPool(use_catalog=False)
    pool.register(str(tiny), "tiny")
    return ServerThread(create_app(pool, preload=["tiny"], **app_args))


def scrape(url) -> dict:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_requests_tokens_latency_and_models(tiny):
    with server(tiny) as s:
        for _ in range(2):
            body = {"model": "tiny", "messages": USER, "max_tokens": 5, "logit_bias": NO_EOS}
            assert httpx.post(s.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        httpx.post(s.url + "/v1/chat/completions", json={"model": "nope", "messages": USER})
        m = scrape(s.url)
        assert m[("ominix_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] == 2
        assert m[("ominix_requests_total", (("route", "/v1/chat/completions"), ("status", "404")))] == 1
        assert m[("ominix_generated_tokens_total", ())] == 10
        assert m[("ominix_prompt_tokens_total", ())] > 0
        assert m[("ominix_time_to_first_token_seconds_count", ())] == 2
        assert m[("ominix_inter_token_latency_seconds_count", ())] == 8
        assert m[("ominix_prompt_cache_hits_total", ())] == 1  # the second request reused the first
        assert m[("ominix_model_memory_bytes", (("model", "tiny"),))] > 0
        assert m[("ominix_resident_models", ())] == 1
        assert m[("ominix_queue_depth", ())] == 0 and m[("ominix_running_sequences", ())] == 0
        assert m[("ominix_mlx_active_memory_bytes", ())] > 0


def test_full_queue_is_429_and_timeout_is_504(tiny):
    from ominix.engine.llm.tokenizer import load_tokenizer

    no_eos = {str(t): -100 for t in load_tokenizer(tiny).eos_token_ids}
    with server(tiny, max_batch=1, max_queue=1, request_timeout=2.0) as s:
        body = {"model": "tiny", "messages": USER, "max_tokens": 90_000, "logit_bias": no_eos, "stream": True}
        streams, started = [], threading.Event()

        def hold():  # occupies the one batch slot until the timeout ends it
            with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
                started.set()
                streams.append(r.status_code)
                for _ in r.iter_lines():
                    pass

        first = threading.Thread(target=hold)
        first.start()
        assert started.wait(30)
        second = threading.Thread(target=hold)  # waits in the queue (the one place)
        second.start()
        deadline = time.time() + 10
        while s.app.state.worker.queue_depth < 1 and time.time() < deadline:
            time.sleep(0.01)
        r = httpx.post(s.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=60)
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and "capacity" in err["message"]
        first.join(30)
        second.join(30)
        assert streams == [200, 200]
        # Non-streaming past the timeout: a 504 with the reason.
        r = httpx.post(s.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=60)
        assert r.status_code == 504 and "timeout" in r.json()["error"]["message"], r.text[:300]
        m = scrape(s.url)
        assert m[("ominix_rejected_requests_total", ())] == 1 and m[("ominix_request_timeouts_total", ())] >= 3
