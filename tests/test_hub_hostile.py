"""A hostile hub: names and sizes from the network that must never steer where or how much we write.

The fake hub (tests/hubserver.py) lists whatever names a test gives it, reports a commit id or LFS
hash of the test's choosing, and can lie about sizes. Every pull here must be refused whole, before
a byte is written, with an error naming the bad name; nothing may appear outside the stores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ominix import config
from ominix.hub import download, fetch
from ominix.hub.download import DownloadError
from ominix.hub.names import UnsafeNameError, safe_relpath
from tests.test_download import blob, hub  # noqa: F401  (the fake hub fixture)


def files_outside_the_stores(root: Path) -> list[Path]:
    stores = [Path(os.environ["HF_HOME"]), Path(os.environ["OMINIX_HOME"])]
    return [p for p in root.rglob("*") if not p.is_dir()
            and not any(p.is_relative_to(s) for s in stores) and p.name != "overlay.json"]


def written_in_stores() -> list[Path]:
    return [p for root in (config.hf_hub_cache(), config.models_dir()) if root.exists()
            for p in root.rglob("*") if not p.is_dir() and ".locks" not in p.parts]


def test_safe_relpath_accepts_plain_names_and_refuses_escapes():
    for good in ("config.json", "a/b/c.safetensors", "tokenizer/vocab.txt", "x..y", "日本/語.json"):
        assert safe_relpath(good) == good
    bad = ["", "/X/pwned.json", "../../X/pwned.json", "a/../../b", "a//b", "a/./b", "./a", "a/",
           "C:/x", "c:x", "a\\..\\b", "a\0b", "a\nb", "..", ".", "x/" + "y" * 300]
    for name in bad:
        with pytest.raises(UnsafeNameError):
            safe_relpath(name)


@pytest.mark.parametrize("name, include", [
    ("{tmp}/X/pwned.json", None),  # absolute, under this test's folder so a failure harms nothing
    ("../../X/pwned.json", ["*.json"]),
    ("sub/../../../X/pwned.json", ["*.json"]),
])
def test_hf_listing_with_an_escaping_file_name_is_refused_whole(hub, tmp_path, name, include):
    name = name.format(tmp=tmp_path)
    (tmp_path / "X").mkdir(exist_ok=True)
    hub.add_hf_repo("evil/names", {"config.json": b"{}", "model.safetensors": blob(2000), name: b"{}"})
    with pytest.raises(DownloadError, match="evil/names.*refusing file name") as caught:
        download.pull("evil/names", include=include)
    assert repr(name) in str(caught.value) or name in str(caught.value)
    assert not (tmp_path / "X" / "pwned.json").exists()
    assert files_outside_the_stores(tmp_path) == []
    assert written_in_stores() == []  # refused before any byte of the good files was written


def test_hf_listing_with_a_hostile_commit_id_is_refused(hub, tmp_path):
    repo = hub.add_hf_repo("evil/commit", {"config.json": b"{}", "model.safetensors": blob(2000)})
    repo.listed_sha = "../../X/dir"
    with pytest.raises(DownloadError, match="commit id '../../X/dir'"):
        download.pull("evil/commit")
    assert not (tmp_path / "X").exists() and files_outside_the_stores(tmp_path) == []
    assert written_in_stores() == []


def test_hf_listing_with_a_hostile_blob_hash_is_refused(hub, tmp_path):
    repo = hub.add_hf_repo("evil/blob", {"config.json": b"{}", "model.safetensors": blob(2000)})
    repo.lfs_sha_override["model.safetensors"] = "../../../X/pwned"
    with pytest.raises(DownloadError, match="sha256"):
        download.pull("evil/blob")
    assert not (tmp_path / "X").exists() and written_in_stores() == []


def test_user_revision_cannot_escape_the_refs_folder(hub, tmp_path):
    hub.add_hf_repo("acme/ok", {"config.json": b"{}"})
    with pytest.raises(DownloadError, match="revision"):
        download.pull("acme/ok@../../../X/ref")
    assert not (tmp_path / "X").exists() and written_in_stores() == []


@pytest.mark.parametrize("name", ["{tmp}/X/pwned.json", "../../X/pwned.json"])
def test_modelscope_listing_with_an_escaping_file_name_is_refused(hub, tmp_path, name):
    name = name.format(tmp=tmp_path)
    hub.add_ms_repo("evil/ms", {"config.json": b"{}", "model.pt": blob(2000), name: b"{}"})
    with pytest.raises(DownloadError, match="refusing file name"):
        download.pull("modelscope:evil/ms", include=["*.json", "*.pt"])
    assert not (tmp_path / "X" / "pwned.json").exists() and files_outside_the_stores(tmp_path) == []
    assert written_in_stores() == []


def test_modelscope_repo_id_must_be_a_repo_id(hub):
    for name in ("modelscope:..", "modelscope:../x", "modelscope:a/../../b"):
        with pytest.raises(DownloadError, match="owner/repo"):
            download.pull(name)
    assert written_in_stores() == []


def test_url_pull_names_the_file_after_the_last_path_segment_only(hub, tmp_path):
    url = hub.add_file("a/../../X/pwned.gguf", blob(1000))  # %2F-quoted slashes in one segment
    folder = download.pull(url.replace("/", "%2F").replace("http:%2F%2F", "http://", 1)
                           .replace("%2Ffiles%2Fdl%2F", "/files/dl/", 1))
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == ["pwned.gguf"]
    assert files_outside_the_stores(tmp_path) == []


# --- sizes that lie ---------------------------------------------------------------------------


def test_a_hub_that_lists_a_bigger_size_than_it_serves_fails_fast_naming_the_file(hub):
    data = blob(150_000, 3)
    hub.add_hf_repo("liar/size", {"config.json": b"{}", "model.safetensors": data},
                    size_override={"model.safetensors": len(data) + 1000})
    started = time.monotonic()
    with pytest.raises(DownloadError, match="model.safetensors") as caught:
        download.pull("liar/size")
    assert time.monotonic() - started < 30
    assert "size" in str(caught.value)
    gets = hub.sent_requests("model.safetensors")
    assert len(gets) <= 2 * (fetch.MAX_RETRIES + 1)  # bounded, not hundreds
    assert sum(r.sent for r in gets) <= 3 * len(data)
