"""The downloader against a real HTTP server on 127.0.0.1 that speaks like the HF hub and ModelScope.

Everything goes through the public API (`pull`, `plan`, `ensure_local`) with the endpoints set by
environment variables, exactly as a user would point OminiX at a mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ominix import config, registry
from ominix.hub import download
from ominix.hub.download import (
    ChecksumError,
    GatedRepoError,
    InsufficientDiskError,
    ManualInstallRequired,
    NetworkError,
    RepoNotFoundError,
)
from ominix.hub.download import human_bytes
from ominix.hub.sources import resolve, select_files
from tests.hubserver import GOOD_TOKEN, FakeHub


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, so sizes mean what they say)."""
    out, counter = bytearray(), 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OMINIX_MODELS", raising=False)
    monkeypatch.setenv("OMINIX_REGISTRY", str(tmp_path / "overlay.json"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.stop()


NESTED = {
    "model_index.json": b'{"_class_name": "FluxPipeline"}',
    "transformer/config.json": b'{"num_layers": 2}',
    "transformer/diffusion_pytorch_model.safetensors": blob(300_000, 1),
    "transformer/diffusion_pytorch_model.bin": blob(1000, 2),  # pytorch duplicate: skipped
    "text_encoder/model.safetensors": blob(150_000, 3),
    "tokenizer/tokenizer.json": b'{"model": {}}',
    "tokenizer/chat_template.jinja": b"{{ messages }}",
    "vae/diffusion_pytorch_model.safetensors": blob(50_000, 4),
    "README.md": b"# card",
    "images/sample.png": b"\x89PNG....",
    ".gitattributes": b"*.safetensors filter=lfs",
    "onnx/model.onnx": blob(2000, 5),
}
WANTED = {p for p in NESTED if p.endswith((".json", ".safetensors", ".jinja"))}


# --- selection and resolution ---------------------------------------------------------------


def test_select_files_keeps_what_inference_needs():
    assert set(select_files(sorted(NESTED))) == WANTED
    pytorch_only = ["config.json", "pytorch_model.bin", "vocab.txt", "tokenizer.model", "README.md"]
    assert select_files(pytorch_only) == ["config.json", "pytorch_model.bin", "vocab.txt", "tokenizer.model"]
    llama = ["model.safetensors", "original/consolidated.00.pth", "original/params.json", "tokenizer.json"]
    assert select_files(llama) == ["model.safetensors", "tokenizer.json"]
    assert select_files(["a.gguf", "b.gguf", "config.json"], include=["b.gguf"]) == ["b.gguf"]


def test_resolve_accepts_every_way_of_naming_a_model(hub):
    src = resolve("mlx-community/Qwen3-0.6B-4bit@abc")
    assert (src.kind, src.repo_id, src.revision) == ("hugging_face", "mlx-community/Qwen3-0.6B-4bit", "abc")
    src = resolve("https://huggingface.co/Qwen/Qwen3-8B-GGUF/blob/main/qwen3-8b-q5_k_m.gguf")
    assert (src.repo_id, src.revision, src.only_files) == ("Qwen/Qwen3-8B-GGUF", "main", ["qwen3-8b-q5_k_m.gguf"])
    src = resolve("https://huggingface.co/org/model/tree/v2")
    assert (src.repo_id, src.revision, src.only_files) == ("org/model", "v2", [])
    src = resolve("https://www.modelscope.cn/models/iic/some_model")
    assert (src.kind, src.repo_id, src.revision) == ("model_scope", "iic/some_model", "master")
    src = resolve("https://example.com/weights/Tiny-Model.Q4.gguf")
    assert (src.kind, src.model_id, src.filename) == ("url", "tiny-model.q4", "Tiny-Model.Q4.gguf")
    src = resolve("all-minilm-l6-v2")  # a shipped catalog id with allow_patterns
    assert src.from_catalog and src.repo_id == "sentence-transformers/all-MiniLM-L6-v2" and src.allow_patterns
    with pytest.raises(RepoNotFoundError, match="ominix list --all"):
        resolve("no such thing")


# --- Hugging Face -----------------------------------------------------------------------------


def test_pull_nested_layout_into_the_hf_cache(hub):
    repo = hub.add_hf_repo("acme/flux-tiny", NESTED)
    events = []
    snapshot = download.pull("acme/flux-tiny", on_event=events.append)

    storage = config.hf_hub_cache() / "models--acme--flux-tiny"
    assert snapshot == storage / "snapshots" / repo.commit
    got = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if not p.is_dir()}
    assert got == WANTED
    for rel in WANTED:
        link = snapshot / rel
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative, like huggingface_hub
        assert link.read_bytes() == NESTED[rel]
    weights = NESTED["transformer/diffusion_pytorch_model.safetensors"]
    assert (storage / "blobs" / hashlib.sha256(weights).hexdigest()).is_file()  # LFS blob named by sha256
    assert (storage / "refs" / "main").read_text() == repo.commit
    assert not list(storage.rglob("*.incomplete"))

    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan" and kinds[-1] == "done" and kinds.count("file_done") == len(WANTED)
    assert events[0]["total_bytes"] == sum(len(NESTED[p]) for p in WANTED)
    assert events[-1]["bytes_downloaded"] == events[0]["total_bytes"]

    # huggingface_hub itself finds the snapshot offline: the layout is the real cache layout
    from huggingface_hub import snapshot_download

    found = snapshot_download("acme/flux-tiny", cache_dir=config.hf_hub_cache(), local_files_only=True)
    assert Path(found) == snapshot

    # a second pull transfers nothing
    hub.requests.clear()
    assert download.pull("acme/flux-tiny") == snapshot
    assert not [r for r in hub.requests if "/resolve/" in r.path or "/_cdn/" in r.path]


def test_single_file_url_and_revision_pinning(hub):
    files = {"config.json": b"{}", "a-q4.gguf": blob(20_000, 7), "a-q8.gguf": blob(40_000, 8)}
    repo = hub.add_hf_repo("acme/gguf", files)
    url = f"https://huggingface.co/acme/gguf/blob/{repo.commit}/a-q4.gguf"
    snapshot = download.pull(url)
    assert sorted(p.name for p in snapshot.iterdir()) == ["a-q4.gguf"]
    assert (snapshot / "a-q4.gguf").read_bytes() == files["a-q4.gguf"]
    assert not (snapshot.parent.parent / "refs" / repo.commit).exists()  # a commit is not a ref

    with pytest.raises(RepoNotFoundError, match="no revision 'v9'"):
        download.pull("acme/gguf", revision="v9")


def test_gated_repo_says_how_to_get_access(hub, monkeypatch):
    hub.add_hf_repo("meta/locked", {"config.json": b"{}", "model.safetensors": blob(1000)}, gated=True)
    with pytest.raises(GatedRepoError) as caught:
        download.pull("meta/locked")
    message = str(caught.value)
    assert f"accept the licence at {hub.url}/meta/locked" in message and "HF_TOKEN" in message

    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)  # read at call time, as huggingface_hub users expect
    snapshot = download.pull("meta/locked")
    assert (snapshot / "model.safetensors").read_bytes() == blob(1000)
    cdn = [r for r in hub.requests if r.path.startswith("/_cdn/")]
    assert all(r.authorization == f"Bearer {GOOD_TOKEN}" for r in hub.requests if "/resolve/" in r.path)
    assert cdn and not any(r.authorization for r in cdn)  # the token never leaves the hub's origin


def test_missing_repo_and_unreachable_hub(hub, monkeypatch):
    with pytest.raises(RepoNotFoundError, match="not found.*ominix list --all"):
        download.pull("nobody/nothing")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(NetworkError, match="Cannot reach http://127.0.0.1:9.*HF_ENDPOINT"):
        download.pull("nobody/nothing")


def test_corrupted_file_never_lands_in_the_store(hub):
    files = {"config.json": b"{}", "model.safetensors": blob(200_000, 9), "tokenizer.json": b"{}"}
    hub.add_hf_repo("acme/bad", files)
    hub.corrupt.add("model.safetensors")
    with pytest.raises(ChecksumError) as caught:
        download.pull("acme/bad")
    assert "model.safetensors" in str(caught.value) and "sha256 mismatch" in str(caught.value)
    storage = config.hf_hub_cache() / "models--acme--bad"
    assert not (storage / "snapshots").exists() or not list((storage / "snapshots").rglob("*.safetensors"))
    assert not (storage / "blobs" / hashlib.sha256(files["model.safetensors"]).hexdigest()).exists()
    assert not list(storage.rglob("*.incomplete"))

    hub.corrupt.clear()  # the next pull gets good bytes and completes
    snapshot = download.pull("acme/bad")
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_small_files_are_checked_against_their_git_blob_id(hub):
    files = {"config.json": b'{"hidden_size": 64}', "model.safetensors": blob(1000)}
    hub.add_hf_repo("acme/small", files)
    hub.corrupt.add("config.json")
    with pytest.raises(ChecksumError, match="config.json: git blob sha1 mismatch"):
        download.pull("acme/small")


def test_disk_check_refuses_before_writing_a_byte(hub):
    hub.add_hf_repo("acme/huge", {"config.json": b"{}", "model.safetensors": blob(1000)},
                    size_override={"model.safetensors": 10**16})
    with pytest.raises(InsufficientDiskError) as caught:
        download.pull("acme/huge")
    error = caught.value
    assert error.needed == 2 * (10**16 + 2) and error.free < error.needed and error.where
    assert f"({human_bytes(error.needed)}) free" in str(error) and "20.0 PB" in str(error)
    assert f"{error.where} has {human_bytes(error.free)} free" in str(error)
    assert not [r for r in hub.requests if "/resolve/" in r.path or "/_cdn/" in r.path]
    storage = config.hf_hub_cache() / "models--acme--huge"
    assert not storage.exists() or not any(storage.rglob("*"))


def test_dropped_connection_is_resumed_with_range(hub):
    data = blob(400_000, 11)
    hub.add_hf_repo("acme/flaky", {"config.json": b"{}", "model.safetensors": data})
    hub.cut_after["model.safetensors"] = 150_000
    snapshot = download.pull("acme/flaky")
    assert (snapshot / "model.safetensors").read_bytes() == data
    gets = hub.sent_requests("model.safetensors")
    cdn = [r for r in gets if r.path.startswith("/_cdn/")]
    assert len(cdn) == 2 and cdn[0].range is None and cdn[1].range == "bytes=150000-"
    assert hub.bytes_sent["model.safetensors"] == len(data)  # nothing fetched twice


def test_plan_lists_without_writing(hub):
    hub.add_hf_repo("acme/flux-tiny", NESTED)
    the_plan = download.plan("acme/flux-tiny")
    assert {f.path for f in the_plan.files} == WANTED
    assert the_plan.remaining_bytes == the_plan.total_bytes > 0
    assert not config.hf_hub_cache().exists() or not any(config.hf_hub_cache().rglob("blobs/*"))


def test_offline_mode_uses_the_cache_only(hub, monkeypatch):
    hub.add_hf_repo("acme/offline", {"config.json": b"{}", "model.safetensors": blob(5000)})
    snapshot = download.pull("acme/offline")
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download.pull("acme/offline") == snapshot
    assert hub.requests == []
    with pytest.raises(NetworkError, match="HF_HUB_OFFLINE is set"):
        download.pull("acme/never-pulled")


def test_ensure_local(hub, tmp_path):
    hub.add_hf_repo("acme/lazy", {"config.json": b"{}", "model.safetensors": blob(3000)})
    assert download.ensure_local(str(tmp_path)) == tmp_path  # a folder passes through
    snapshot = download.ensure_local("acme/lazy")  # not installed: pulled
    assert (snapshot / "model.safetensors").is_file()
    hub.requests.clear()
    assert download.ensure_local("acme/lazy") == snapshot  # installed: no network at all
    assert hub.requests == []


# --- ModelScope, URL and manual sources ------------------------------------------------------


def add_entry(entry_id: str, source: dict, local_path: str | None = None) -> None:
    entry = registry.make_custom_entry(entry_id, url="https://example.com/placeholder.bin")
    entry["source"] = source
    entry["storage"]["local_path"] = local_path or str(config.models_dir() / entry_id)
    registry.add_user_entry(entry)


MS_FILES = {
    "configuration.json": b'{"framework": "pytorch"}',
    "config.yaml": b"encoder: sanm\n",
    "model.pt": blob(120_000, 21),
    "am.mvn": b"<Nnet>\n",
    "tokens.json": b'["a", "b"]',
    "fig/struct.png": b"\x89PNG",
    "README.md": b"# paraformer",
}


def test_modelscope_pull_writes_a_verified_manifest(hub):
    hub.add_ms_repo("iic/paraformer-tiny", MS_FILES)
    add_entry("paraformer-tiny", {"kind": "model_scope", "repo_id": "iic/paraformer-tiny", "revision": "master"})
    folder = download.pull("paraformer-tiny")
    assert folder == config.models_dir() / "paraformer-tiny"
    wanted = {"configuration.json", "config.yaml", "model.pt", "am.mvn", "tokens.json"}
    manifest = json.loads((folder / ".ominix.json").read_text())
    assert manifest["id"] == "paraformer-tiny" and manifest["revision"] == "master"
    assert manifest["source"] == {"kind": "model_scope", "repo_id": "iic/paraformer-tiny", "revision": "master"}
    assert set(manifest["files"]) == wanted
    for name in wanted:
        assert (folder / name).read_bytes() == MS_FILES[name]
        assert manifest["files"][name] == {"size": len(MS_FILES[name]),
                                           "sha256": hashlib.sha256(MS_FILES[name]).hexdigest()}
    assert not list(folder.rglob("*.part"))
    assert [r.range for r in hub.sent_requests("model.pt")] == [None]

    hub.requests.clear()  # pulling again lists the repo and transfers nothing
    assert download.pull("paraformer-tiny") == folder
    assert not [r for r in hub.requests if "FilePath=" in r.path]

    with pytest.raises(RepoNotFoundError, match="ModelScope repo iic/gone"):
        download.pull("modelscope:iic/gone")


def test_url_source_with_sha256_good_and_bad(hub):
    data = blob(80_000, 31)
    url = hub.add_file("tiny.Q4_K_M.gguf", data)
    add_entry("tiny-gguf", {"kind": "url", "url": url, "sha256": hashlib.sha256(data).hexdigest(),
                            "filename": "tiny.Q4_K_M.gguf"})
    folder = download.pull("tiny-gguf")
    assert (folder / "tiny.Q4_K_M.gguf").read_bytes() == data
    manifest = json.loads((folder / ".ominix.json").read_text())
    assert manifest["files"] == {"tiny.Q4_K_M.gguf": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}

    bad_url = hub.add_file("other.gguf", data)
    add_entry("bad-gguf", {"kind": "url", "url": bad_url, "sha256": "0" * 64, "filename": "other.gguf"})
    with pytest.raises(ChecksumError, match="other.gguf: sha256 mismatch"):
        download.pull("bad-gguf")
    bad_folder = config.models_dir() / "bad-gguf"
    assert not (bad_folder / "other.gguf").exists() and not (bad_folder / "other.gguf.part").exists()
    assert not (bad_folder / ".ominix.json").exists()


def test_raw_url_pull_resumes_a_cut_transfer(hub):
    data = blob(300_000, 41)
    url = hub.add_file("weights.npz", data)
    hub.cut_after["weights.npz"] = 100_000
    folder = download.pull(url)
    assert folder == config.models_dir() / "weights"
    assert (folder / "weights.npz").read_bytes() == data
    ranges = [r.range for r in hub.sent_requests("weights.npz")]
    assert ranges == [None, "bytes=100000-"]
    assert json.loads((folder / ".ominix.json").read_text())["source"]["kind"] == "url"


def test_manual_entry_explains_where_files_go(hub, tmp_path):
    where = tmp_path / "sovits"
    add_entry("sovits-tiny", {"kind": "manual", "url": "https://example.com/sovits",
                              "files": ["g/s1.ckpt", "s2.pth"]}, local_path=str(where))
    with pytest.raises(ManualInstallRequired) as caught:
        download.pull("sovits-tiny")
    message = str(caught.value)
    assert "https://example.com/sovits" in message
    assert f"MISSING {where / 'g/s1.ckpt'}" in message and f"MISSING {where / 's2.pth'}" in message
    assert hub.requests == []
    (where / "g").mkdir(parents=True)
    (where / "g" / "s1.ckpt").write_bytes(b"x")
    (where / "s2.pth").write_bytes(b"y")
    assert download.pull("sovits-tiny") == where


def test_catalog_entry_shares_blobs_with_huggingface_hub(hub):
    files = {"config.json": b"{}", "model.safetensors": blob(120_000, 61), "extra.safetensors": blob(9000, 62),
             "tokenizer.json": b"{}"}
    repo = hub.add_hf_repo("acme/shared", files)
    add_entry("shared-tiny", {"kind": "hugging_face", "repo_id": "acme/shared", "revision": "main",
                              "allow_patterns": ["*.json", "model.safetensors"]})
    # huggingface_hub (as mlx-lm or transformers would) fetches the big file first, from the fake hub
    from huggingface_hub import hf_hub_download

    first = hf_hub_download("acme/shared", "model.safetensors", cache_dir=config.hf_hub_cache(),
                            endpoint=hub.url)
    assert Path(first).read_bytes() == files["model.safetensors"]

    hub.requests.clear()
    snapshot = download.pull("shared-tiny")
    assert snapshot == config.hf_hub_cache() / "models--acme--shared" / "snapshots" / repo.commit
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert hub.sent_requests("model.safetensors") == []  # the blob huggingface_hub wrote is reused
    assert download.ensure_local("shared-tiny") == snapshot


def test_pull_fetches_the_entries_a_model_requires(hub):
    hub.add_hf_repo("acme/adaptor", {"config.json": b'{"a": 1}', "adaptor.safetensors": blob(5000, 71)})
    llm = hub.add_hf_repo("acme/llm", {"config.json": b'{"b": 2}', "model.safetensors": blob(7000, 72)})
    add_entry("llm-tiny", {"kind": "hugging_face", "repo_id": "acme/llm", "revision": "main"})
    entry = registry.make_custom_entry("adaptor-tiny", repo_id="acme/adaptor")
    entry["requires"] = ["llm-tiny"]
    registry.add_user_entry(entry)

    download.pull("adaptor-tiny")
    llm_snapshot = config.hf_hub_cache() / "models--acme--llm" / "snapshots" / llm.commit
    assert (llm_snapshot / "model.safetensors").read_bytes() == blob(7000, 72)
    hub.requests.clear()
    download.pull("adaptor-tiny")  # both already installed: the requirement is not fetched again
    assert hub.sent_requests("model.safetensors") == []
