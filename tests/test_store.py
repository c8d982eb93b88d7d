"""The local store on real files: an HF cache built by hand (blobs, snapshot links, refs), manifest
folders, manual folders; listing, verify, rm confinement, format detection, scan, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ominix import registry
from ominix.cli import app
from ominix.hub import store
from ominix.hub.files import detect_format_and_quantization
from ominix.hub.scan import scan
from ominix.hub.verify import verify
from ominix.hub.store import StoreError
from ominix.registry import UnknownModelError

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("OMINIX_REGISTRY", str(tmp_path / "overlay.json"))
    monkeypatch.delenv("OMINIX_MODELS", raising=False)
    return tmp_path


def safetensors_bytes(dtype: str = "BF16", n: int = 4) -> bytes:
    width = {"BF16": 2, "F16": 2, "F32": 4, "U32": 4}[dtype]
    header = json.dumps({"w": {"dtype": dtype, "shape": [n], "data_offsets": [0, n * width]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(range(n * width))


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def build_hf_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT_A,
                  ref: str | None = "main") -> Path:
    """The layout huggingface_hub writes: LFS blobs named by sha256, small files by git blob id,
    snapshot files as relative symlinks into blobs/, refs/<branch> holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / commit
    for rel, data in files.items():
        lfs = rel.endswith((".safetensors", ".gguf"))
        blob = hashlib.sha256(data).hexdigest() if lfs else git_blob_id(data)
        (repo / "blobs" / blob).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


def qwen3_files(config: dict | None = None) -> dict[str, bytes]:
    cfg = config or {"model_type": "qwen3", "quantization": {"group_size": 64, "bits": 8}}
    return {"config.json": json.dumps(cfg).encode(), "tokenizer.json": b'{"model": {}}',
            "model.safetensors": safetensors_bytes("U32", 16)}


def build_store_dir(root: Path, model_id: str, files: dict[str, bytes], manifest: bool = True) -> Path:
    folder = root / model_id
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    if manifest:
        (folder / store.MANIFEST).write_text(json.dumps({
            "id": model_id, "source": {"kind": "model_scope", "repo_id": "iic/x", "revision": "master"},
            "revision": "master",
            "files": {rel: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for rel, d in files.items()},
        }))
    return folder


def snapshot_of(env) -> Path:
    return env / "hf" / "models--mlx-community--Qwen3-0.6B-8bit" / "snapshots" / COMMIT_A


# --- listing and locating ---------------------------------------------------------------------


def test_list_hf_cache_counts_shared_blobs_once(env):
    files = qwen3_files()
    snap = build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", files)
    # a second revision sharing every blob plus one new file: blobs count once
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", {**files, "extra.txt": b"12345"},
                  commit=COMMIT_B, ref="v2")
    build_hf_repo(env / "hf", "someone/tiny-bf16", {
        "config.json": json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}).encode(),
        "model.safetensors": safetensors_bytes("BF16")})
    (env / "hf" / "models--empty--repo" / "snapshots").mkdir(parents=True)  # nothing usable: not listed

    installed = {m.id: m for m in store.list_installed()}
    assert set(installed) == {"qwen3-0.6b", "someone/tiny-bf16"}
    qwen = installed["qwen3-0.6b"]
    assert qwen.path == snap and qwen.revision == COMMIT_A and qwen.kind == "hugging_face"
    assert qwen.size_bytes == sum(len(d) for d in files.values()) + 5
    assert (qwen.format, qwen.quantization) == ("safetensors", "8bit")
    assert qwen.entry.id == "qwen3-0.6b" and qwen.verified is None
    tiny = installed["someone/tiny-bf16"]
    assert tiny.entry is None and tiny.quantization == "bf16"


def test_manifest_folders_listed_and_unfinished_ones_not(env):
    store_root = env / "home" / "models"
    build_store_dir(store_root, "funasr-paraformer", {"model.pt": b"weights", "config.yaml": b"a: 1"})
    build_store_dir(store_root, "half-done", {"model.pt.part": b"wei"}, manifest=False)
    installed = store.list_installed()
    assert [m.id for m in installed] == ["funasr-paraformer"]
    assert installed[0].kind == "store" and installed[0].size_bytes == 11 and installed[0].format == "pytorch"
    assert installed[0].entry.source_kind == "model_scope"
    assert store.incomplete_downloads() == [store_root / "half-done"]
    assert store.model_dir("funasr-paraformer") == store_root / "funasr-paraformer"


def test_model_dir_resolves_every_name_form(env, monkeypatch):
    snap = build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    assert store.model_dir("qwen3-0.6b") == snap
    assert store.model_dir("Qwen3:0.6B") == snap  # alias, any case
    assert store.model_dir("mlx-community/Qwen3-0.6B-8bit") == snap
    assert store.model_dir(f"mlx-community/Qwen3-0.6B-8bit@{COMMIT_A}") == snap
    assert store.model_dir("mlx-community/Qwen3-0.6B-8bit@main") == snap
    assert store.model_dir("mlx-community/Qwen3-0.6B-8bit@v9") is None
    assert store.model_dir(str(snap)) == snap
    monkeypatch.chdir(snap.parent)
    assert store.model_dir(f"./{COMMIT_A}") == snap
    assert store.model_dir("qwen3-8b") is None  # in the catalog, not installed
    assert store.model_dir("nobody/nothing") is None
    with pytest.raises(UnknownModelError, match="ominix list --all"):
        store.model_dir("not-a-model")


# --- verify -----------------------------------------------------------------------------------


def test_verify_hf_detects_corrupted_blob_and_remembers(env):
    snap = build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    report = verify("qwen3-0.6b")
    assert report.ok and report.files_checked == 3
    assert store.list_installed()[0].verified is True

    blob = (snap / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped byte
    blob.write_bytes(bytes(data))
    assert store.list_installed()[0].verified is None  # files changed since the last check
    report = verify("mlx-community/Qwen3-0.6B-8bit")
    assert not report.ok
    assert report.problems == [f"model.safetensors: sha256 does not match (corrupted blob {blob.name[:12]}...)"]
    assert store.list_installed()[0].verified is False

    (snap / "config.json").resolve().write_text('{"model_type": "qwen2"}')  # small file: git blob id
    assert any("config.json: git blob id does not match" in p for p in verify("qwen3-0.6b").problems)


def test_verify_hf_detects_missing_blob_and_shard(env):
    files = {**qwen3_files(), "model.safetensors.index.json": json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}).encode(),
        "model-00001-of-00002.safetensors": safetensors_bytes("F16")}
    snap = build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", files)
    (snap / "tokenizer.json").resolve().unlink()
    problems = verify("qwen3-0.6b").problems
    assert any(p.startswith("tokenizer.json: missing (broken link") for p in problems)
    assert "model-00002-of-00002.safetensors: missing (listed in model.safetensors.index.json)" in problems
    assert store.model_dir("qwen3-0.6b") == snap  # still listed, so the damage can be seen and fixed


def test_verify_manifest_folder(env):
    folder = build_store_dir(env / "home" / "models", "funasr-paraformer",
                             {"model.pt": b"weights", "am.mvn": b"mvn", "sub/tokens.json": b"[]"})
    assert verify("funasr-paraformer").ok
    (folder / "model.pt").write_bytes(b"weightz")
    (folder / "am.mvn").write_bytes(b"mvn-longer")
    (folder / "sub" / "tokens.json").unlink()
    assert verify("funasr-paraformer").problems == [
        "am.mvn: size 10 bytes, expected 3", "model.pt: sha256 does not match the manifest", "sub/tokens.json: missing"]


def test_verify_manual_entry_checks_listed_files(env):
    place = env / "sovits"
    entry = registry.load_catalog().get("gpt-sovits").to_dict()
    entry["storage"]["local_path"] = str(place)
    registry.add_user_entry(entry)
    assert store.model_dir("gpt-sovits") is None
    with pytest.raises(StoreError, match="'gpt-sovits' is not installed"):
        verify("gpt-sovits")
    first = entry["source"]["files"][0]
    (place / first).parent.mkdir(parents=True)
    (place / first).write_text("{}")
    report = verify("gpt-sovits")
    assert report.files_checked == 1 and len(report.problems) == len(entry["source"]["files"]) - 1
    assert [m.id for m in store.list_installed()] == ["gpt-sovits"]


# --- rm and its confinement -------------------------------------------------------------------


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_rm_deletes_the_repo_and_nothing_else(env):
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    other = build_hf_repo(env / "hf", "someone/keep-me", qwen3_files())
    lock = env / "hf" / ".locks" / "models--mlx-community--Qwen3-0.6B-8bit"
    lock.mkdir(parents=True)
    verify("qwen3-0.6b")
    removed = store.remove("qwen3-0.6b")
    assert removed == [env / "hf" / "models--mlx-community--Qwen3-0.6B-8bit", lock]
    assert not removed[0].exists() and not lock.exists()
    assert store.model_dir("someone/keep-me") == other and verify("someone/keep-me").ok
    assert str(removed[0]) not in json.loads((env / "home" / "state" / "verified.json").read_text())


def test_rm_refuses_to_leave_the_store(env):
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    store_root = env / "home" / "models"
    build_store_dir(store_root, "funasr-paraformer", {"model.pt": b"w"})
    outside = env / "precious"
    outside.mkdir()
    (outside / "thesis.txt").write_text("do not delete")
    (store_root / "sneaky").symlink_to(outside)
    (store_root / "sneaky-2").symlink_to(outside)
    before = tree(env)

    cases = {
        "../precious": "may not contain '..'",
        "funasr-paraformer/../../precious": "may not contain '..'",
        str(outside): "not a model folder inside the store",
        str(store_root): "not a model folder inside the store",
        str(store_root / "funasr-paraformer" / "model.pt"): "not a model folder inside the store",
        "sneaky": "is a symlink",
        str(store_root / "sneaky-2"): "is a symlink",
        "mlx-community/Qwen3-0.6B-8bit@main": "drop '@...'",
        "qwen3-8b": "is not installed",
        "/": "not a model folder inside the store",
    }
    for name, message in cases.items():
        with pytest.raises(StoreError, match=message):
            store.remove(name)
    with pytest.raises(UnknownModelError):
        store.remove("no-such-model")
    assert tree(env) == before

    entry = registry.load_catalog().get("gpt-sovits").to_dict()
    entry["storage"]["local_path"] = str(outside)
    entry["source"]["files"] = ["thesis.txt"]
    registry.add_user_entry(entry)
    with pytest.raises(StoreError, match="placed by you outside the store"):
        store.remove("gpt-sovits")
    assert (outside / "thesis.txt").read_text() == "do not delete"


def test_rm_by_path_inside_the_store(env):
    folder = build_store_dir(env / "home" / "models", "funasr-paraformer", {"model.pt": b"w"})
    assert store.remove(str(folder)) == [folder] and not folder.exists()


# --- format and quantization detection --------------------------------------------------------


@pytest.mark.parametrize("files, name, expected", [
    ({"config.json": {"quantization": {"group_size": 64, "bits": 4}}, "model.safetensors": "U32"}, "m", ("safetensors", "4bit")),
    ({"config.json": {"quantization": {"group_size": 32, "bits": 4}}, "model.safetensors": "U32"}, "m", ("safetensors", "4bit-g32")),
    ({"config.json": {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}},
      "model.safetensors": "U32"}, "m", ("safetensors", "awq-w4g128")),
    ({"config.json": {"quantization": {"mode": "mxfp4", "bits": 4, "group_size": 32}}, "model.safetensors": "U32"}, "m", ("safetensors", "mxfp4")),
    ({"config.json": {"torch_dtype": "bfloat16"}, "model.safetensors": "F32"}, "m", ("safetensors", "bf16")),
    ({"config.json": {"dtype": "float16"}, "model.safetensors": "F32"}, "m", ("safetensors", "fp16")),  # transformers 5
    ({"config.json": {"text_config": {"torch_dtype": "float32"}}, "model.safetensors": "BF16"}, "m", ("safetensors", "fp32")),
    ({"config.json": {}, "model.safetensors": "F16"}, "m", ("safetensors", "fp16")),  # from the header
    ({"config.json": {}, "model.safetensors": "F16"}, "Mistral-7B-Instruct-v0.3-4bit", ("safetensors", "4bit")),
    ({"Qwen3-8B-Q4_K_M.gguf": b"GGUF"}, "m", ("gguf", "q4_k_m")),
    ({"llama-3.2-1b-instruct-q8_0.gguf": b"GGUF"}, "m", ("gguf", "q8_0")),
    ({"Model.IQ4_XS.gguf": b"GGUF"}, "m", ("gguf", "iq4_xs")),
    ({"weights.npz": b"PK"}, "whisper-tiny-mlx", ("npz", None)),
    ({"model.pt": b"x"}, "paraformer", ("pytorch", None)),
    ({"README.md": b"x"}, "m", ("unknown", None)),
])
def test_detect_format_and_quantization(tmp_path, files, name, expected):
    for rel, content in files.items():
        if isinstance(content, dict):
            data = json.dumps(content).encode()
        elif isinstance(content, str):
            data = safetensors_bytes(content)
        else:
            data = content
        (tmp_path / rel).write_bytes(data)
    assert detect_format_and_quantization(tmp_path, name=name) == expected


# --- scan -------------------------------------------------------------------------------------


def build_scan_tree(root: Path) -> None:
    org = root / "acme" / "Tiny-Chat-8bit"
    org.mkdir(parents=True)
    (org / "config.json").write_text(json.dumps({"model_type": "qwen3", "quantization": {"bits": 8, "group_size": 64}}))
    (org / "model.safetensors").write_bytes(safetensors_bytes("U32"))
    plain = root / "qwen3-0.6b"  # same name as a catalog id: must not shadow it
    plain.mkdir()
    (plain / "Qwen3-0.6B-Q8_0.gguf").write_bytes(b"GGUF")
    build_hf_repo(root / "hub", "openai/whisper-tiny", {
        "config.json": json.dumps({"model_type": "whisper", "torch_dtype": "float32"}).encode(),
        "model.safetensors": safetensors_bytes("F32")})


def test_scan_registers_folders_without_copying(env):
    root = env / "downloads"
    build_scan_tree(root)
    dry = scan(root, dry_run=True)
    assert {(r.id, r.action, r.format, r.quantization) for r in dry} == {
        ("tiny-chat-8bit", "would add", "safetensors", "8bit"),
        ("qwen3-0.6b-local", "would add", "gguf", "q8_0"),
        ("whisper-tiny-local", "would add", "safetensors", "fp32"),
    }
    assert not (env / "overlay.json").exists()

    results = {r.id: r for r in scan(root)}
    catalog = registry.load_catalog()
    tiny = catalog.get("acme/Tiny-Chat-8bit")  # the owner/repo alias
    assert tiny.id == "tiny-chat-8bit" and tiny.architecture == "qwen3" and tiny.source_kind == "manual"
    # names already in the catalog are never shadowed
    assert catalog.get("whisper-tiny").repo_id == "mlx-community/whisper-tiny-mlx"
    assert catalog.get("qwen3-0.6b").repo_id == "mlx-community/Qwen3-0.6B-8bit"
    whisper = catalog.get("openai/whisper-tiny")
    assert (whisper.id, whisper.category, whisper.architecture) == ("whisper-tiny-local", "asr", "whisper")
    assert store.model_dir("tiny-chat-8bit") == root / "acme" / "Tiny-Chat-8bit"
    assert store.model_dir("qwen3-0.6b-local") == root / "qwen3-0.6b"
    assert results["whisper-tiny-local"].path.parent.parent.name == "models--openai--whisper-tiny"
    assert {m.id for m in store.list_installed()} >= {"tiny-chat-8bit", "qwen3-0.6b-local"}
    assert verify("tiny-chat-8bit").ok

    again = scan(root)
    assert {r.action for r in again} == {"already registered"}
    # rm never deletes a scanned folder
    with pytest.raises(StoreError, match="placed by you outside the store"):
        store.remove("tiny-chat-8bit")
    assert (root / "acme" / "Tiny-Chat-8bit" / "model.safetensors").exists()


def test_scan_reports_the_store_itself_as_installed(env):
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    [result] = scan(env / "hf")
    assert (result.id, result.action) == ("qwen3-0.6b", "already installed")
    with pytest.raises(StoreError, match="not a directory"):
        scan(env / "missing")


# --- CLI --------------------------------------------------------------------------------------


def run(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def test_cli_list_show_verify(env):
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["id"] == "qwen3-0.6b" and row["installed"] and row["quantization"] == "8bit"

    rows = json.loads(run("list", "--all", "--json", "--category", "asr").stdout)
    assert {r["category"] for r in rows} == {"asr"} and not any(r["installed"] for r in rows)
    assert "qwen3-0.6b" in run("list").stdout
    assert "qwen3-asr-1.7b" in run("list", "--all").stdout
    assert run("list", "--category", "music").exit_code == 2

    shown = json.loads(run("show", "qwen3:0.6b", "--json").stdout)
    assert shown["id"] == "qwen3-0.6b" and shown["installed"] and shown["architecture"] == "qwen3"
    assert "notes" in run("show", "glm4-moe-9b").stdout

    verified = run("verify")
    assert verified.exit_code == 0 and "ok      qwen3-0.6b" in verified.stdout
    assert json.loads(run("list", "--json").stdout)[0]["verified"] is True
    (snapshot_of(env) / "model.safetensors").resolve().write_bytes(b"broken")
    failed = run("verify", "qwen3-0.6b")
    assert failed.exit_code == 1 and "sha256 does not match" in failed.stderr


def test_cli_errors_are_one_line(env):
    for args in (["show", "not-a-model"], ["verify", "qwen3-8b"], ["rm", "-y", "../etc"], ["scan", str(env / "nope")]):
        result = run(*args)
        assert result.exit_code == 1, args
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.output


def test_cli_rm_asks_first(env):
    build_hf_repo(env / "hf", "mlx-community/Qwen3-0.6B-8bit", qwen3_files())
    repo = env / "hf" / "models--mlx-community--Qwen3-0.6B-8bit"
    declined = run("rm", "qwen3-0.6b", input="n\n")
    assert declined.exit_code == 1 and repo.exists() and "Nothing deleted" in declined.stdout
    accepted = run("rm", "qwen3-0.6b", "-y")
    assert accepted.exit_code == 0 and f"deleted {repo}" in accepted.stdout and not repo.exists()


def test_cli_registry_commands(env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1", "models": [}')
    result = run("registry", "validate", str(bad))
    assert result.exit_code == 1 and "invalid JSON at line 1, column 29" in result.stderr

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"version": "1", "models": [registry.make_custom_entry("a-model", repo_id="a/b")]}))
    assert "1 entries, valid" in run("registry", "validate", str(good)).stdout

    assert run("registry", "add", "x").exit_code == 2
    assert run("registry", "add", "x", "--repo", "a/b", "--url", "https://h/f.gguf").exit_code == 2
    added = run("registry", "add", "my-model", "--repo", "me/my-model", "--category", "vlm", "--architecture", "llava")
    assert added.exit_code == 0, added.output
    assert run("registry", "add", "my-file", "--url", "https://h.example/f.gguf", "--sha256", "0" * 64).exit_code == 0
    assert run("registry", "add", "bad", "--url", "https://h.example/f.gguf", "--sha256", "xyz").exit_code == 1
    assert registry.load_catalog().get("my-model").ui.panel_type == "vlm_chat"

    out = tmp_path / "mine.json"
    assert "exported 2 entries" in run("registry", "export", str(out)).stdout
    assert run("registry", "remove", "my-model").exit_code == 0
    assert registry.load_catalog().find("my-model") is None
    assert "imported 2 entries" in run("registry", "import", str(out)).stdout
    assert registry.load_catalog().get("my-file").source.sha256 == "0" * 64

    root = tmp_path / "dl"
    build_scan_tree(root)
    scanned = json.loads(run("scan", str(root), "--dry-run", "--json").stdout)
    assert {r["action"] for r in scanned} == {"would add"}
