"""What is installed: list, locate (the one resolver of model names), and delete (confined to the store).

Where models live
    hugging_face entries and raw `owner/repo` pulls: the shared Hugging Face cache
        (config.hf_hub_cache()/models--owner--repo/{blobs, snapshots/<commit>, refs/<revision>}),
        so weights already fetched by mlx-lm or transformers are reused, and vice versa.
    model_scope and url entries: config.models_dir()/<id>/ with a manifest `.ominix.json`
        {"id", "source", "revision", "files": {relpath: {"size", "sha256"}}}, written by the downloader
        only after every file was verified. A folder without it is an unfinished download.
    manual entries: the files the user placed under the entry's storage.local_path.

Beside it: hub/files.py (what a folder holds: HF cache snapshots, format, quantization), hub/verify.py
(checking files against their hashes), hub/verified.py (remembered results), hub/scan.py (importing
folders already on disk).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ominix import config
from ominix.hub.files import detect_format_and_quantization, entry_snapshot, files_under, hf_repos, hf_snapshot, unique_size
from ominix.hub.names import MANIFEST, hf_repo_dir, is_repo_id, looks_like_path, read_manifest, repo_id_of_folder
from ominix.hub.verified import forget_under, load_state, remembered
from ominix.registry import Catalog, ModelEntry, RegistryError, load_catalog


class StoreError(Exception):
    """A store operation that cannot be done; the message says what and why."""


@dataclass
class InstalledModel:
    id: str  # catalog id, or owner/repo for a hub repo the catalog does not list
    path: Path  # the directory a loader opens (an HF snapshot, a store folder, a manual folder)
    size_bytes: int
    quantization: str | None
    format: str
    entry: ModelEntry | None
    revision: str | None
    verified: bool | None  # None: never verified, or files changed since
    kind: str = "hugging_face"  # hugging_face | store | manual

    def to_dict(self) -> dict:
        return {
            "id": self.id, "path": str(self.path), "size_bytes": self.size_bytes,
            "quantization": self.quantization, "format": self.format, "revision": self.revision,
            "verified": self.verified, "kind": self.kind, "in_catalog": self.entry is not None,
            "category": self.entry.category if self.entry else None,
        }


# --- listing ----------------------------------------------------------------------------------


def _manual_present(entry: ModelEntry) -> bool:
    folder = entry.local_path
    return folder.is_dir() and any((folder / f).exists() for f in entry.source.files)


def list_installed(catalog: Catalog | None = None) -> list[InstalledModel]:
    catalog = catalog or load_catalog()
    state = load_state()
    found: list[InstalledModel] = []
    for repo_id, repo_dir in hf_repos():
        entry = catalog.by_repo_id(repo_id)
        snap = entry_snapshot(entry) if entry else None
        snap = snap or hf_snapshot(repo_dir, None)
        if snap is None or not files_under(snap):
            continue
        all_links = [f for s in (repo_dir / "snapshots").iterdir() if s.is_dir() for f in files_under(s)]
        fmt, quant = detect_format_and_quantization(snap, name=repo_id)
        found.append(InstalledModel(
            id=entry.id if entry else repo_id, path=snap, size_bytes=unique_size(all_links),
            quantization=quant, format=fmt, entry=entry, revision=snap.name,
            verified=remembered(state, snap), kind="hugging_face"))
    store = config.models_dir()
    store_dirs = sorted(d for d in store.iterdir() if d.is_dir()) if store.is_dir() else []
    for folder in store_dirs:
        manifest = read_manifest(folder)
        if manifest is None:
            continue  # unfinished download (or a manual entry's folder, listed below)
        model_id = str(manifest.get("id") or folder.name)
        entry = catalog.find(model_id)
        fmt, quant = detect_format_and_quantization(folder, name=model_id)
        found.append(InstalledModel(
            id=model_id, path=folder, size_bytes=unique_size(files_under(folder)), quantization=quant,
            format=fmt, entry=entry, revision=manifest.get("revision"),
            verified=remembered(state, folder), kind="store"))
    listed = {m.path.resolve() for m in found}
    for entry in catalog:
        if entry.source_kind != "manual" or not _manual_present(entry):
            continue
        folder = entry.local_path
        if folder.resolve() in listed:
            continue
        fmt, quant = detect_format_and_quantization(folder, name=entry.name)
        files = [folder / f for f in entry.source.files]
        found.append(InstalledModel(
            id=entry.id, path=folder, size_bytes=unique_size(files),
            quantization=entry.runtime.quantization or quant, format=fmt, entry=entry,
            revision=None, verified=remembered(state, folder), kind="manual"))
    return sorted(found, key=lambda m: m.id.lower())


def incomplete_downloads() -> list[Path]:
    """Store folders without a manifest that no manual entry claims: interrupted downloads."""
    store = config.models_dir()
    if not store.is_dir():
        return []
    claimed = set()
    try:
        claimed = {e.local_path.resolve() for e in load_catalog() if e.source_kind == "manual"}
    except RegistryError:
        pass
    return [d for d in sorted(store.iterdir())
            if d.is_dir() and not d.name.startswith(".") and not (d / MANIFEST).exists()
            and d.resolve() not in claimed]


# --- locating one model -----------------------------------------------------------------------


@dataclass
class Located:
    """Where a requested name points: the one resolver of names (catalog id, alias, installed
    id, path, owner/repo[@rev]) behind the CLI, the server, bench and pull."""

    id: str
    kind: str  # hugging_face | store | manual | folder
    path: Path | None  # None when known but not installed
    entry: ModelEntry | None = None
    repo_id: str | None = None


def locate(name: str, catalog: Catalog | None = None) -> Located:
    """Resolve a model name; `path` is None when it is known but not installed. Raises
    UnknownModelError (with close matches) for a name that is nothing we know."""
    catalog = catalog or load_catalog()
    name = name.strip()
    if not name:
        raise StoreError("no model name given")
    if looks_like_path(name):
        folder = Path(name).expanduser()
        return Located(str(folder), "folder", folder.resolve() if folder.is_dir() else None)
    entry = catalog.find(name)
    if entry is not None:
        kind = entry.source_kind
        if kind == "hugging_face":
            return Located(entry.id, kind, entry_snapshot(entry), entry, entry.repo_id)
        if kind == "manual":
            present = _manual_present(entry)
            return Located(entry.id, kind, entry.local_path if present else None, entry)
        folder = config.models_dir() / entry.id
        return Located(entry.id, "store", folder if (folder / MANIFEST).is_file() else None, entry)
    repo, _, revision = name.partition("@")
    if is_repo_id(repo):
        local = Path(name)
        if not revision and local.is_dir():  # a relative folder named like a repo wins, as in transformers
            return Located(name, "folder", local.resolve())
        entry = catalog.by_repo_id(repo)
        snap = hf_snapshot(hf_repo_dir(repo), revision or (entry.revision if entry else None))
        if snap is None and not revision:
            snap = hf_snapshot(hf_repo_dir(repo), None)
        return Located(repo, "hugging_face", snap, entry, repo)
    folder = config.models_dir() / name
    if "/" not in name and (folder / MANIFEST).is_file():  # an ad-hoc pull's id, e.g. owner--repo
        return Located(name, "store", folder)
    if Path(name).is_dir():
        return Located(name, "folder", Path(name).resolve())
    catalog.get(name)  # raises UnknownModelError with close matches
    raise AssertionError("unreachable")


def model_dir(name: str, catalog: Catalog | None = None) -> Path | None:
    """Local directory for a catalog id/alias, `owner/repo[@revision]`, or a path; None if not installed.

    Raises UnknownModelError for a name that is none of those.
    """
    return locate(name, catalog or load_catalog()).path


# --- removal ----------------------------------------------------------------------------------


def _confine(target: Path, roots: list[Path], name: str) -> Path:
    """`target` must be a real (non-symlink) directory directly inside one of the store roots."""
    target = Path(os.path.abspath(target))
    root = next((r for r in roots if Path(os.path.abspath(r)) == target.parent), None)
    if root is None:
        raise StoreError(f"refusing to delete '{name}': {target} is not a model folder inside the store "
                         f"({', '.join(str(r) for r in roots)})")
    if target.is_symlink():
        raise StoreError(f"refusing to delete '{name}': {target} is a symlink (to {os.readlink(target)}); "
                         "remove the link yourself")
    if not target.exists():
        raise StoreError(f"'{name}' is not installed ({target} does not exist)")
    if not target.is_dir():
        raise StoreError(f"refusing to delete '{name}': {target} is not a folder")
    if target.resolve().parent != root.resolve():
        raise StoreError(f"refusing to delete '{name}': {target} resolves outside the store")
    hf_cache = Path(os.path.abspath(roots[0]))
    if target.name.startswith(".") or (target.parent == hf_cache and repo_id_of_folder(target.name) is None):
        raise StoreError(f"refusing to delete '{name}': {target} is not a model (the store keeps models in "
                         "models--owner--repo folders of the HF cache and in its own model folders)")
    return target


def removal_target(name: str, catalog: Catalog | None = None) -> Path:
    """The folder `remove(name)` would delete, after every confinement check (nothing is deleted)."""
    name = name.strip()
    if not name or ".." in Path(name).parts or "\0" in name:
        raise StoreError(f"refusing to delete '{name}': a model name may not contain '..'")
    hf_root, store_root = config.hf_hub_cache(), config.models_dir()
    roots = [hf_root, store_root]
    catalog = catalog or load_catalog()
    if looks_like_path(name):
        target = Path(name).expanduser()
    elif (entry := catalog.find(name)) is not None:
        if entry.source_kind == "hugging_face":
            target = hf_repo_dir(entry.repo_id)
        elif entry.source_kind == "manual":
            target = entry.local_path
            if Path(os.path.abspath(target)).parent != Path(os.path.abspath(store_root)):
                raise StoreError(
                    f"refusing to delete '{entry.id}': its files at {target} were placed by you outside the "
                    f"store; delete them yourself (and forget the entry with `ominix registry remove {entry.id}`)")
        else:
            target = store_root / entry.id
    elif is_repo_id(name.split("@", 1)[0]):
        if "@" in name:
            raise StoreError(f"`rm` removes a whole repo with all its revisions; drop '@...' from '{name}'")
        target = hf_repo_dir(name)
    elif "/" not in name and os.path.lexists(store_root / name):
        target = store_root / name
    else:
        catalog.get(name)  # UnknownModelError naming close matches
        raise AssertionError("unreachable")
    return _confine(target, roots, name)


def remove(name: str, catalog: Catalog | None = None) -> list[Path]:
    """Delete an installed model's files, only ever inside the HF cache or the OminiX model store."""
    target = removal_target(name, catalog)
    hf_root = Path(os.path.abspath(config.hf_hub_cache()))
    removed = [target]
    shutil.rmtree(target)
    if target.parent == hf_root:
        lock = hf_root / ".locks" / target.name
        if lock.is_dir() and not lock.is_symlink():
            shutil.rmtree(lock)
            removed.append(lock)
    forget_under(target)
    return removed
