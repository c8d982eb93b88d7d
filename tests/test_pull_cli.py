"""`ominix pull` end to end: the real CLI in a subprocess, pointed at the fake hub by environment only."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from ominix import registry
from tests.hubserver import FakeHub
from tests.test_download import blob


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub().start()
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "OMINIX_MODELS", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=server.url, MODELSCOPE_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"),
               OMINIX_HOME=str(tmp_path / "home"), OMINIX_REGISTRY=str(tmp_path / "overlay.json"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", COLUMNS="100")
    for key, value in env.items():  # the test process reads the same store and overlay
        monkeypatch.setenv(key, value)
    server.env = env
    server.hf_cache = tmp_path / "hf" / "hub"
    yield server
    server.stop()


def ominix(hub, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ominix", *args], env=hub.env, capture_output=True,
                          text=True, timeout=timeout)


def test_killed_pull_resumes_where_it_stopped(hub):
    data = blob(2_000_000, 51)
    hub.add_hf_repo("acme/big", {"config.json": b"{}", "model.safetensors": data})
    hub.throttle["model.safetensors"] = 500_000  # bytes/s: the whole file would take 4 s
    proc = subprocess.Popen([sys.executable, "-m", "ominix", "pull", "acme/big", "--json"], env=hub.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while hub.bytes_sent["model.safetensors"] < 700_000:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup code runs, as with a crash or a closed laptop lid
    proc.communicate()

    storage = hub.hf_cache / "models--acme--big"
    part = storage / "blobs" / (hashlib.sha256(data).hexdigest() + ".incomplete")
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    assert not (storage / "snapshots").exists()  # no half snapshot

    hub.throttle.clear()
    hub.requests.clear()
    result = ominix(hub, "pull", "acme/big")
    assert result.returncode == 0, result.stderr
    cdn = [r for r in hub.sent_requests("model.safetensors") if r.path.startswith("/_cdn/")]
    assert [r.range for r in cdn] == [f"bytes={kept}-"]
    assert cdn[0].sent == len(data) - kept  # only the missing tail went over the wire
    snapshot = result.stdout.strip().splitlines()[-1]
    with open(os.path.join(snapshot, "model.safetensors"), "rb") as fh:
        assert fh.read() == data
    assert not part.exists()


def test_json_events(hub):
    files = {"config.json": b'{"model_type": "qwen3"}', "model.safetensors": blob(300_000, 52),
             "tokenizer.json": b"{}"}
    repo = hub.add_hf_repo("acme/events", files)
    hub.throttle["model.safetensors"] = 1_000_000
    result = ominix(hub, "pull", "acme/events", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and "progress" in kinds
    assert events[0]["total_bytes"] == sum(len(d) for d in files.values())
    assert sorted(f["path"] for f in events[0]["files"]) == sorted(files)
    assert sorted(e["file"] for e in events if e["event"] == "file_done") == sorted(files)
    progress = [e for e in events if e["event"] == "progress"]
    assert all(0 < e["bytes"] <= e["total"] and e["speed"] >= 0 for e in progress)
    assert events[-1]["path"].endswith(f"snapshots/{repo.commit}")

    hub.add_hf_repo("acme/gated", {"config.json": b"{}"}, gated=True)
    result = ominix(hub, "pull", "acme/gated", "--json")
    assert result.returncode == 1
    error = json.loads(result.stdout.strip().splitlines()[-1])
    assert error["event"] == "error" and error["error"] == "GatedRepoError"
    assert f"{hub.url}/acme/gated" in error["message"]


def test_errors_are_one_clear_line_and_a_nonzero_exit(hub):
    result = ominix(hub, "pull", "nobody/nothing")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: Repo nobody/nothing not found") and "ominix list --all" in result.stderr

    hub.add_hf_repo("acme/gated", {"config.json": b"{}"}, gated=True)
    result = ominix(hub, "pull", "acme/gated")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"accept the licence at {hub.url}/acme/gated and set HF_TOKEN" in result.stderr

    hub.add_hf_repo("acme/bad", {"config.json": b"{}", "model.safetensors": blob(50_000, 53)})
    hub.corrupt.add("model.safetensors")
    result = ominix(hub, "pull", "acme/bad")
    assert result.returncode == 1 and "model.safetensors: sha256 mismatch" in result.stderr
    assert not (hub.hf_cache / "models--acme--bad" / "snapshots").exists()


def test_progress_bar_run_and_dry_run(hub):
    files = {"config.json": b"{}", "model.safetensors": blob(100_000, 54), "README.md": b"# hi"}
    repo = hub.add_hf_repo("acme/plain", files)
    result = ominix(hub, "pull", "acme/plain", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "model.safetensors" in result.stdout and "README.md" not in result.stdout
    assert not [r for r in hub.requests if "/resolve/" in r.path or "/_cdn/" in r.path]

    result = ominix(hub, "pull", "acme/plain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(hub.hf_cache / "models--acme--plain" / "snapshots" / repo.commit)
    assert "acme/plain" in result.stderr  # the progress bar's label


def test_manual_entry_exit_codes(hub, tmp_path):
    where = tmp_path / "voices"
    entry = registry.make_custom_entry("voice-tiny", url="https://example.com/placeholder.bin", category="tts")
    entry["source"] = {"kind": "manual", "url": "https://example.com/voice", "files": ["s1.ckpt", "bert/config.json"]}
    entry["storage"]["local_path"] = str(where)
    registry.add_user_entry(entry)

    result = ominix(hub, "pull", "voice-tiny")
    assert result.returncode == 1
    assert "https://example.com/voice" in result.stderr
    assert str(where / "s1.ckpt") in result.stderr and str(where / "bert" / "config.json") in result.stderr

    (where / "bert").mkdir(parents=True)
    (where / "s1.ckpt").write_bytes(b"w")
    (where / "bert" / "config.json").write_text("{}")
    result = ominix(hub, "pull", "voice-tiny")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(where)


def _limit_file_size():  # runs in the child: writes past 200 kB fail with EFBIG, like a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))


def test_a_failed_write_keeps_the_part_for_resume(hub):
    data = blob(600_000, 55)
    hub.add_hf_repo("acme/full", {"config.json": b"{}", "model.safetensors": data})
    result = subprocess.run([sys.executable, "-m", "ominix", "pull", "acme/full"], env=hub.env,
                            capture_output=True, text=True, timeout=60, preexec_fn=_limit_file_size)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Cannot write model.safetensors" in result.stderr and "run the same pull again" in result.stderr
    storage = hub.hf_cache / "models--acme--full"
    part = storage / "blobs" / (hashlib.sha256(data).hexdigest() + ".incomplete")
    kept = part.stat().st_size
    assert 0 < kept <= 200_000
    assert not (storage / "snapshots").exists()

    hub.requests.clear()
    result = ominix(hub, "pull", "acme/full")
    assert result.returncode == 0, result.stderr
    cdn = [r for r in hub.sent_requests("model.safetensors") if r.path.startswith("/_cdn/")]
    assert [(r.range, r.sent) for r in cdn] == [(f"bytes={kept}-", len(data) - kept)]
