"""The catalog: shipped file, schema validation errors, user overlay, add/export/import, packaging."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ominix import registry
from ominix.registry import RegistryError, UnknownModelError

ROOT = Path(__file__).resolve().parent.parent

SEED_IDS = [
    "qwen2-0.5b", "qwen2-7b", "qwen2-72b", "qwen3-0.6b", "qwen3-8b", "qwen3-14b", "qwen3-72b",
    "qwen3-235b-moe", "glm4-9b", "glm4-moe-9b", "mixtral-8x7b", "mixtral-8x22b", "mistral-7b",
    "minicpm-sala-9b", "moxin-7b-vlm", "funasr-paraformer", "funasr-nano", "funasr-qwen4b",
    "qwen3-asr-0.6b", "qwen3-asr-1.7b", "gpt-sovits", "flux-klein", "zimage-turbo",
]
EXTRA_IDS = ["whisper-tiny", "whisper-base", "whisper-large-v3-turbo", "qwen3-embedding-0.6b", "all-minilm-l6-v2"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("OMINIX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("OMINIX_REGISTRY", str(tmp_path / "overlay.json"))
    monkeypatch.delenv("OMINIX_MODELS", raising=False)
    return tmp_path


def valid_entry(**changes) -> dict:
    entry = {
        "id": "tiny-llm",
        "name": "Tiny LLM",
        "description": "A test entry.",
        "category": "llm",
        "tags": ["llm"],
        "architecture": "qwen3",
        "source": {"kind": "hugging_face", "repo_id": "someone/tiny-llm", "revision": "main"},
        "storage": {"local_path": "~/.cache/huggingface/hub/models--someone--tiny-llm",
                    "size_bytes": 1000, "size_display": "~1 KB"},
        "runtime": {"api_type": "chat_completions", "api_model_id": "tiny-llm", "memory_gb": 0.1},
        "ui": {"panel_type": "llm_chat"},
    }
    entry.update(changes)
    return entry


def doc(*entries) -> dict:
    return {"version": "1.0.0", "models": list(entries)}


# --- the shipped catalog ----------------------------------------------------------------------


def test_shipped_catalog_validates_and_lists_every_seed_model(env):
    catalog = registry.load_catalog(include_user=False)
    ids = [e.id for e in catalog]
    assert len(ids) == len(set(ids))
    for model_id in SEED_IDS + EXTRA_IDS:
        entry = catalog.get(model_id)
        assert entry.architecture, model_id
        assert entry.ui.panel_type == registry.CATEGORY_PANEL[entry.category]
        assert entry.runtime.api_type == registry.CATEGORY_API[entry.category]
        assert entry.size_bytes > 0 and entry.runtime.memory_gb > 0
        if entry.source_kind == "hugging_face":
            # seed 000: HF local_path is the cache folder of that very repo
            assert entry.storage.local_path.endswith("models--" + entry.repo_id.replace("/", "--"))
    assert catalog.get("funasr-paraformer").source_kind == "model_scope"
    assert catalog.get("gpt-sovits").source_kind == "manual"
    assert all(e.runtime.api_type == "speech_recognition" for e in catalog.by_category("asr"))
    assert {e.id for e in catalog.by_category("embedding")} == {"qwen3-embedding-0.6b", "all-minilm-l6-v2"}


def test_shipped_catalog_fixes_the_peer_faults(env):
    catalog = registry.load_catalog(include_user=False)
    moe = catalog.get("glm4-moe-9b")
    assert moe.architecture == "glm4_moe" and "0414" not in moe.repo_id and moe.notes
    asr4b = catalog.get("funasr-qwen4b")
    assert asr4b.repo_id != "mlx-community/Qwen3-4B-8bit"
    assert asr4b.requires == ("qwen3-4b",) and catalog.get("qwen3-4b").repo_id == "mlx-community/Qwen3-4B-8bit"
    q72 = catalog.get("qwen3-72b")
    assert "72B" not in q72.repo_id and "no 72B" in q72.notes
    assert registry.validate_file(ROOT / "registry" / "models_registry.json")


def test_lookup_by_id_alias_and_case(env):
    catalog = registry.load_catalog(include_user=False)
    assert catalog.get("QWEN3-0.6B").id == "qwen3-0.6b"
    assert catalog.get("qwen3:0.6b").id == "qwen3-0.6b"
    assert catalog.get("whisper-1").id == "whisper-large-v3-turbo"
    assert catalog.find("no-such-model") is None
    assert catalog.by_repo_id("MLX-COMMUNITY/qwen3-0.6b-8bit").id == "qwen3-0.6b"
    with pytest.raises(UnknownModelError, match=r"qwen3-8b.*ominix list --all"):
        catalog.get("qwen3-8")


# --- validation errors name the entry and the field -------------------------------------------


def _set(path: str, value):
    def apply(entry):
        target = entry
        *parents, last = path.split(".")
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return apply


_DELETE = object()

BAD_ENTRIES = [
    (_set("name", _DELETE), "'name' is required"),
    (_set("storage.size_display", _DELETE), "'storage.size_display' is required"),
    (_set("category", "chatbot"), "'category' 'chatbot' is not one of"),
    (_set("runtime.api_type", "audio_transcription"), "'runtime.api_type' 'audio_transcription' is not one of"),
    (_set("ui.panel_type", "asr_transcription"), "'ui.panel_type' 'asr_transcription' is not one of"),
    (_set("ui.panel_type", "vlm_chat"), "'ui.panel_type' 'vlm_chat' does not match category 'llm'"),
    (_set("source.repo_id", "no-slash"), "'source.repo_id' 'no-slash' is not of the form owner/repo"),
    (_set("source.repo_id", "a/b/c"), "'source.repo_id'"),
    (_set("source.repo_id", "a/b--c"), "'source.repo_id'"),
    (_set("source.kind", "torrent"), "'source.kind' 'torrent' is not one of"),
    (_set("storage.size_bytes", -5), "'storage.size_bytes' is negative"),
    (_set("storage.size_bytes", "big"), "'storage.size_bytes' must be"),
    (_set("runtime.memory_gb", -1), "'runtime.memory_gb' is negative"),
    (_set("runtime.supports_images", "yes"), "'runtime.supports_images' must be true or false"),
    (_set("source", {"kind": "manual", "url": "x", "files": ["../../etc/passwd"]}), "'source.files'"),
    (_set("source", {"kind": "url", "url": "https://h/x.bin", "sha256": "abc"}), "'source.sha256'"),
    (_set("source", {"kind": "url", "url": "ftp://h/x.bin"}), "'source.url'"),
    (_set("architechture", "qwen3"), "'architechture' is not a known entry field"),
    (_set("architecture", "Qwen3-Model"), "'architecture'"),
]


@pytest.mark.parametrize("mutate, message", BAD_ENTRIES)
def test_validation_error_names_entry_and_field(mutate, message):
    entry = valid_entry()
    mutate(entry)
    with pytest.raises(RegistryError) as info:
        registry.validate_document(doc(valid_entry(id="other", aliases=["x"]), entry), "test.json")
    text = str(info.value)
    assert "test.json" in text and "entry #1 'tiny-llm'" in text
    assert message in text


def test_missing_id_names_the_index():
    entry = valid_entry()
    del entry["id"]
    with pytest.raises(RegistryError, match=r"entry #0: field 'id' is required"):
        registry.validate_document(doc(entry), "t")


def test_duplicate_ids_and_alias_collisions():
    with pytest.raises(RegistryError, match=r"entry 'tiny-llm': field 'id' 'tiny-llm' is already used"):
        registry.validate_document(doc(valid_entry(), valid_entry()), "t")
    with pytest.raises(RegistryError, match=r"entry 'b': field 'aliases' 'TINY-LLM' is already used by entry 'tiny-llm'"):
        registry.validate_document(doc(valid_entry(), valid_entry(id="b", aliases=["TINY-LLM"])), "t")
    with pytest.raises(RegistryError, match=r"field 'requires' names unknown entry 'ghost'"):
        registry.validate_document(doc(valid_entry(requires=["ghost"])), "t")


def test_document_shape_and_bad_json(tmp_path):
    with pytest.raises(RegistryError, match="'version' is required"):
        registry.validate_document({"models": []}, "t")
    with pytest.raises(RegistryError, match="'models' is required"):
        registry.validate_document({"version": "1"}, "t")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "version": "1.0.0",\n  "models": [,]\n}\n')
    with pytest.raises(RegistryError, match=r"bad\.json: invalid JSON at line 3, column 14"):
        registry.validate_file(bad)
    with pytest.raises(RegistryError, match="no such file"):
        registry.validate_file(tmp_path / "missing.json")


# --- the user overlay -------------------------------------------------------------------------


def test_overlay_adds_and_overrides_by_id(env):
    override = valid_entry(id="qwen3-0.6b", name="My Qwen3", source={"kind": "hugging_face",
                           "repo_id": "me/qwen3-0.6b-4bit", "revision": "v2"})
    (env / "overlay.json").write_text(json.dumps(doc(override, valid_entry())))
    catalog = registry.load_catalog()
    assert catalog.get("qwen3-0.6b").repo_id == "me/qwen3-0.6b-4bit"
    assert catalog.get("qwen3-0.6b").revision == "v2"
    assert catalog.get("qwen3-0.6b").origin == str(env / "overlay.json")
    assert catalog.get("tiny-llm").name == "Tiny LLM"
    assert len(catalog) == len(registry.load_catalog(include_user=False)) + 1
    assert registry.load_catalog(include_user=False).get("qwen3-0.6b").repo_id == "mlx-community/Qwen3-0.6B-8bit"


def test_overlay_alias_colliding_with_catalog_is_rejected(env):
    (env / "overlay.json").write_text(json.dumps(doc(valid_entry(aliases=["qwen3-8b"]))))
    with pytest.raises(RegistryError, match=r"overlay\.json.*entry 'tiny-llm'.*'aliases' 'qwen3-8b'.*entry 'qwen3-8b'"):
        registry.load_catalog()
    with pytest.raises(RegistryError):
        registry.add_user_entry(valid_entry(id="other", aliases=["mistral-7b"]))


def test_add_export_import_round_trip(env, tmp_path):
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "model.safetensors").write_bytes(b"x" * 10)
    sha = "ab" * 32
    added = [
        registry.add_user_entry(registry.make_custom_entry("hub-model", repo_id="me/model@dev", category="vlm")),
        registry.add_user_entry(registry.make_custom_entry("url-model", url="https://example.com/m.gguf", sha256=sha.upper())),
        registry.add_user_entry(registry.make_custom_entry("disk-model", path=folder, architecture="qwen3")),
    ]
    assert added[0].source.to_dict() == {"kind": "hugging_face", "repo_id": "me/model", "revision": "dev"}
    assert added[0].ui.panel_type == "vlm_chat" and added[0].runtime.supports_images
    assert added[1].source.sha256 == sha and added[1].source.filename == "m.gguf"
    assert list(added[2].source.files) == ["config.json", "sub/model.safetensors"]
    assert added[2].size_bytes == 12 and added[2].local_path == folder.resolve()

    out = tmp_path / "export.json"
    exported = registry.export_user_entries(out)
    assert [e.id for e in exported] == ["hub-model", "url-model", "disk-model"]
    assert registry.validate_file(out)

    (env / "overlay.json").unlink()
    assert registry.load_catalog().find("hub-model") is None
    imported = registry.import_user_entries(out)
    assert [e.to_dict() for e in imported] == [e.to_dict() for e in added]
    assert registry.load_catalog().get("disk-model").architecture == "qwen3"

    registry.remove_user_entry("url-model")
    assert registry.load_catalog().find("url-model") is None
    with pytest.raises(RegistryError, match="shipped catalog entry"):
        registry.remove_user_entry("qwen3-8b")


def test_import_seed_003_custom_url_list(env, tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({"custom": [{"id": "custom-model-1", "name": "CustomModel.gguf",
                                            "url": "https://example.com/model.gguf", "sha256": None}]}))
    [entry] = registry.import_user_entries(path)
    assert entry.source.to_dict() == {"kind": "url", "url": "https://example.com/model.gguf", "sha256": None,
                            "filename": "model.gguf"}
    assert registry.load_catalog().get("custom-model-1").name == "CustomModel.gguf"


def test_bad_import_leaves_overlay_untouched(env, tmp_path):
    registry.add_user_entry(valid_entry())
    before = (env / "overlay.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(valid_entry(id="x", category="nope"))))
    with pytest.raises(RegistryError, match="entry #0 'x': field 'category'"):
        registry.import_user_entries(bad)
    assert (env / "overlay.json").read_text() == before
    assert not [p for p in env.iterdir() if p.name.endswith(".tmp")]


def test_make_custom_entry_rejects_bad_requests(env, tmp_path):
    with pytest.raises(RegistryError, match="exactly one of"):
        registry.make_custom_entry("x")
    with pytest.raises(RegistryError, match="exactly one of"):
        registry.make_custom_entry("x", repo_id="a/b", url="https://h/f.bin")
    with pytest.raises(RegistryError, match="not a directory"):
        registry.make_custom_entry("x", path=tmp_path / "missing")
    with pytest.raises(RegistryError, match="'id' 'Bad Id'"):
        registry.make_custom_entry("Bad Id", repo_id="a/b")
    with pytest.raises(RegistryError, match="'source.repo_id'"):
        registry.make_custom_entry("x", repo_id="not a repo")
    with pytest.raises(RegistryError, match="'category'"):
        registry.make_custom_entry("x", repo_id="a/b", category="music")


# --- packaging and import hygiene -------------------------------------------------------------


def test_pyproject_lists_every_package():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"([\w.]+)"', re.search(r"(?m)^packages = \[(.*)\]", text).group(1)))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ominix").rglob("__init__.py")}
    assert on_disk | {"ominix._catalog"} == listed, "update [tool.setuptools] packages in pyproject.toml"


def test_catalog_ships_inside_a_non_editable_install(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ominix", src / "ominix", ignore=ignore)
    shutil.copytree(ROOT / "registry", src / "registry", ignore=ignore)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    code = ("import ominix.registry as r; c = r.load_catalog(include_user=False); "
            "print(r.__file__); print(r._shipped_catalog_text()[1]); print(len(c))")
    env = {**os.environ, "PYTHONPATH": str(target), "OMINIX_REGISTRY": str(tmp_path / "none.json")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout.split("\n")
    assert out[0].startswith(str(target)) and out[1].startswith(str(target / "ominix" / "_catalog"))
    assert int(out[2]) == len(json.loads((ROOT / "registry" / "models_registry.json").read_text())["models"])


def test_registry_and_store_import_no_mlx():
    code = ("import sys, ominix.registry, ominix.hub.store, ominix.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'mlx' or m.startswith('ominix.engine')]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_catalog_file_is_stable_json():
    """The shipped file is what `validate_document` + `to_dict` would write back (no stray keys)."""
    data = json.loads((ROOT / "registry" / "models_registry.json").read_text())
    entries = registry.validate_document(copy.deepcopy(data), "catalog")
    assert [e.to_dict() for e in entries] == data["models"]
    assert all(e.storage.size_display.startswith("~") for e in entries)
