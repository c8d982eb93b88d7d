"""A web page must not drive the server: foreign Host headers (DNS rebinding), cross-origin and
non-JSON POSTs (no CORS preflight), loading arbitrary directories; with a key, nothing but /health
is open; error bodies do not show the server's absolute paths."""

from __future__ import annotations

import httpx
import pytest

from ominix.api.app import create_app
from ominix.engine.pool import ModelPool
from tests.server_fixtures import ServerThread, random_qwen3

KEY = "sk-sec"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("secmodels")
    tiny = random_qwen3(root / "tiny")
    other = random_qwen3(root / "other", seed=3)  # a directory nobody registered
    broken = random_qwen3(root / "broken")
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    return root, tiny, other, broken


@pytest.fixture(scope="module")
def open_server(models):
    root, tiny, other, broken = models
    pool = ModelPool()
    pool.register(str(tiny), "tiny")
    pool.register(str(broken), "broken")
    app = create_app(pool, cors_origins=["https://studio.example"], allowed_hosts=["studio.local"])
    with ServerThread(app) as s:
        yield s


@pytest.fixture(scope="module")
def keyed_server(models):
    root, tiny, other, broken = models
    pool = ModelPool()
    pool.register(str(tiny), "tiny")
    with ServerThread(create_app(pool, api_key=KEY)) as s:
        yield s


def test_foreign_host_header_is_refused(open_server):
    port = open_server.port
    r = httpx.get(open_server.url + "/v1/models", headers={"Host": f"attacker.example:{port}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
    assert "attacker.example" in r.json()["error"]["message"]
    r = httpx.post(open_server.url + "/v1/chat/completions", json=CHAT, headers={"Host": "rebind.example"})
    assert r.status_code == 400
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "studio.local", f"studio.local:{port}"):
        assert httpx.get(open_server.url + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_non_json_post_is_refused(open_server):
    url = open_server.url + "/v1/chat/completions"
    import json

    body = json.dumps(CHAT)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(url, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 415, (content_type, r.text)
        assert "application/json" in r.json()["error"]["message"]
    r = httpx.post(url, content=body)  # no Content-Type at all
    assert r.status_code == 415
    r = httpx.post(url, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_cross_origin_requests_need_cors_configured(open_server):
    evil = {"Origin": "https://evil.example"}
    r = httpx.post(open_server.url + "/v1/chat/completions", json=CHAT, headers=evil)
    assert r.status_code == 403 and "https://evil.example" in r.json()["error"]["message"]
    assert "--cors-origin" in r.json()["error"]["message"]
    r = httpx.post(open_server.url + "/v1/models/tiny/unload", headers={**evil, "Content-Type": "text/plain"})
    assert r.status_code == 403
    r = httpx.post(open_server.url + "/v1/models/tiny/load", headers={"Origin": "null"})
    assert r.status_code == 403
    ok = httpx.post(open_server.url + "/v1/chat/completions", json=CHAT, headers={"Origin": "https://studio.example"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://studio.example"
    same = httpx.post(open_server.url + "/v1/chat/completions", json=CHAT, headers={"Origin": open_server.url})
    assert same.status_code == 200  # the server's own pages (e.g. /docs) are same-origin


def test_clients_cannot_load_arbitrary_directories(open_server, models):
    root, tiny, other, broken = models
    r = httpx.post(f"{open_server.url}/v1/models/{other}/load")
    assert r.status_code == 403, r.text
    assert "--allow-load-paths" in r.json()["error"]["message"]
    r = httpx.post(open_server.url + "/v1/chat/completions", json={**CHAT, "model": str(other)})
    assert r.status_code == 403
    assert httpx.post(open_server.url + "/v1/models/tiny/load").status_code == 200


def test_a_flag_opens_directory_loading(models):
    root, tiny, other, broken = models
    with ServerThread(create_app(ModelPool(), allow_load_paths=True)) as s:
        r = httpx.post(f"{s.url}/v1/models/{other}/load", timeout=60)
        assert r.status_code == 200, r.text


def test_key_protects_metrics_and_docs(keyed_server):
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
        r = httpx.get(keyed_server.url + path)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(keyed_server.url + path, headers=auth).status_code == 200, path
    assert httpx.get(keyed_server.url + "/health").status_code == 200


def test_a_flag_opens_metrics_for_a_scraper(models):
    with ServerThread(create_app(ModelPool(), api_key=KEY, metrics_open=True)) as s:
        assert httpx.get(s.url + "/metrics").status_code == 200
        assert httpx.get(s.url + "/openapi.json").status_code == 401


def test_errors_do_not_reveal_server_paths(open_server, models):
    root = models[0]
    r = httpx.post(open_server.url + "/v1/chat/completions", json={**CHAT, "model": "broken"})
    assert r.status_code == 503
    message = r.json()["error"]["message"]
    assert str(root) not in message and "model.safetensors" in message, message
    assert "broken" in message


def test_non_loopback_bind_without_key_warns():
    from ominix.cli.server import exposure_warning

    assert exposure_warning("0.0.0.0", None) and "--api-key" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("192.168.1.5", None)
    assert exposure_warning("0.0.0.0", "k") is None
    for host in ("127.0.0.1", "localhost", "::1"):
        assert exposure_warning(host, None) is None
