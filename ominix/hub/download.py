"""Getting weights onto disk: plan the files, check the disk, fetch (hub/fetch.py), place.

Hugging Face repos land in the shared HF cache exactly as huggingface_hub lays it out
(`models--owner--repo/{blobs,snapshots/<commit>,refs/<revision>}`), so transformers, mlx-lm and
`huggingface_hub.snapshot_download(local_files_only=True)` find them. huggingface_hub does the listing,
the token and the endpoint; we stream the bytes ourselves because huggingface_hub 2.x no longer
resumes a download across processes and never checks the content hash. Blobs are written to
`<blob>.incomplete`, resumed with HTTP Range, hashed, then renamed; snapshot links and the ref are
created only once every file is verified, so a snapshot directory is always complete.

ModelScope and URL sources land in `models_dir()/<id>/`: `NAME.part` -> verified -> `NAME`, and a
manifest `.ominix.json` written last (tmp + rename) from the hashes taken while the bytes streamed.

A hub is not trusted with paths: every name in a listing was checked by sources.py (names.py says
what is safe), and each planned path is checked again against its folder before a byte is written.
Retries are bounded, and a size the server disagrees with is an error naming the file.

Events (dicts) go to `on_event`: plan, progress, file_done, done (and manual for manual sources).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from ominix import config
from ominix.hub.names import (
    MANIFEST,
    UnsafeNameError,
    atomic_write,
    hf_repo_dir,
    human_bytes,
    inside,
    is_commit_hash,
    looks_like_path,
    read_manifest,
    write_manifest,
)
from ominix.hub.fetch import CHUNK, fetch_all
from ominix.hub.listing import is_transport_error, list_hf_files, list_modelscope_files, network_message, url_file
from ominix.hub.sources import (
    ChecksumError,
    DownloadError,
    GatedRepoError,
    InsufficientDiskError,
    ManualInstallRequired,
    NetworkError,
    RemoteFile,
    RepoNotFoundError,
    SizeMismatchError,
    Source,
    UnsafeListingError,
    hf_offline,
    modelscope_endpoint,
    resolve,
)

__all__ = [
    "pull", "plan", "ensure_local", "Plan", "MANIFEST",
    "DownloadError", "GatedRepoError", "RepoNotFoundError", "NetworkError",
    "InsufficientDiskError", "ChecksumError", "ManualInstallRequired", "SizeMismatchError",
    "UnsafeListingError",
]

EventHandler = Callable[[dict], None]
DISK_HEADROOM = 2  # seed 003: want twice the bytes still to download free before starting


def _default_workers() -> int:
    return max(1, int(os.environ.get("OMINIX_DOWNLOAD_WORKERS", "4")))


@dataclass
class Plan:
    source: Source
    revision: str | None  # HF: the commit the snapshot is pinned to
    files: list[RemoteFile]
    target: Path  # what pull returns: the snapshot dir or the model dir
    storage: Path  # where bytes are written (HF repo folder or model dir)
    present: dict[str, int] = field(default_factory=dict)  # bytes already on disk per file
    hashed: dict[str, str] = field(default_factory=dict)  # sha256 of each file fetched now (streamed)

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)

    @property
    def remaining_bytes(self) -> int:
        return sum(max((f.size or 0) - self.present.get(f.path, 0), 0) for f in self.files)

    def event(self) -> dict:
        return {
            "event": "plan", "id": self.source.model_id, "kind": self.source.kind,
            "source": self.source.as_dict(), "revision": self.revision, "target": str(self.target),
            "files": [{"path": f.path, "size": f.size, "present": self.present.get(f.path, 0)}
                      for f in self.files],
            "total_bytes": self.total_bytes, "remaining_bytes": self.remaining_bytes,
        }


# ---------------------------------------------------------------------------------------------------
# Public API


def plan(name: str, *, revision: str | None = None, include: list[str] | None = None) -> Plan:
    """List what `pull` would fetch (files, sizes, bytes already present). Writes nothing."""
    source = resolve(name, revision)
    if source.kind == "manual":
        raise DownloadError(f"{source.model_id} is installed by hand; `ominix pull {name}` says where.")
    with http_client() as client:
        return _plan(source, client, include)


def pull(name: str, *, revision: str | None = None, include: list[str] | None = None,
         on_event: EventHandler | None = None, workers: int | None = None) -> Path:
    """Download a catalog id, `owner/repo[@rev]`, hub URL or direct URL; return the local directory."""
    emit = on_event or (lambda event: None)
    source = resolve(name, revision)
    if source.kind == "manual":
        return _check_manual(source, emit)
    if source.kind == "hugging_face" and hf_offline():
        return _offline_snapshot(source, emit)
    started = time.monotonic()
    with http_client() as client:
        the_plan = _plan(source, client, include)
        emit(the_plan.event())
        _check_disk(the_plan)
        fetched = fetch_all(the_plan, client, emit, workers or _default_workers())
    _finish(the_plan)
    _convert_torch_checkpoint(the_plan.target, emit)
    emit({"event": "done", "id": source.model_id, "path": str(the_plan.target),
          "bytes_downloaded": fetched, "total_bytes": the_plan.total_bytes,
          "seconds": round(time.monotonic() - started, 3)})
    for needed in source.requires:  # e.g. an ASR adaptor that runs on a separate LLM entry
        ensure_local(needed, on_event=on_event)
    from ominix.hub.whisper import ensure_tokenizer

    ensure_tokenizer(the_plan.target, on_event=on_event)  # mlx-whisper repos carry no tokenizer
    return the_plan.target


def ensure_local(name: str, *, on_event: EventHandler | None = None) -> Path:
    """The directory holding a model: a path passes through, an installed model is found in the
    store, anything else is pulled first."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if looks_like_path(name):  # never ask a hub about `./typo`
        raise DownloadError(f"{name}: no such directory")
    from ominix.hub import store
    from ominix.registry import UnknownModelError

    try:
        installed = store.model_dir(name)
    except UnknownModelError:
        installed = None  # not a catalog name: pull() decides (repo id, URL) or explains
    if installed is not None:
        return Path(installed)
    return pull(name, on_event=on_event)


# ---------------------------------------------------------------------------------------------------
# Planning


def http_client():
    import httpx

    from ominix import __version__

    return httpx.Client(
        follow_redirects=True,  # httpx drops Authorization when a redirect leaves the host (CDN)
        timeout=httpx.Timeout(60.0, connect=15.0),
        headers={"User-Agent": f"ominix/{__version__}", "Accept-Encoding": "identity"},
    )


def _plan(source: Source, client, include: list[str] | None) -> Plan:
    if source.kind == "hugging_face":
        commit, files = list_hf_files(source, include)
        storage = hf_repo_dir(source.repo_id)
        target = storage / "snapshots" / commit
        _confine_plan(source, storage, target, files)
        present = {f.path: _hf_present(storage, target, f) for f in files}
        return Plan(source, commit, files, target, storage, present)
    try:
        if source.kind == "model_scope":
            revision, files = list_modelscope_files(source, client, include)
        elif source.kind == "url":
            revision, files = None, [url_file(source, client)]
        else:
            raise DownloadError(f"Unknown source kind {source.kind!r} for {source.model_id}.")
    except DownloadError:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            where = urlsplit(source.url).netloc if source.url else modelscope_endpoint()
            raise NetworkError(network_message(where, exc)) from None
        raise
    target = config.models_dir() / source.model_id
    _confine_plan(source, config.models_dir(), target, files)
    present = {f.path: _local_present(target, f) for f in files}
    return Plan(source, revision, files, target, target, present)


def _confine_plan(source: Source, root: Path, target: Path, files: list[RemoteFile]) -> None:
    """The sources checked every name; check once more where the paths land, symlinks resolved."""
    try:
        inside(root, target.relative_to(root).as_posix())
        for f in files:
            inside(target, f.path)
            if f.blob is not None:
                inside(root / "blobs", f.blob)
    except (UnsafeNameError, ValueError) as e:
        raise UnsafeListingError(f"Cannot pull {source.model_id}: {e}; nothing was downloaded.") from None


def _hf_present(storage: Path, snapshot: Path, f: RemoteFile) -> int:
    if (snapshot / f.path).exists() or (storage / "blobs" / f.blob).exists():
        return f.size or 0
    part = storage / "blobs" / (f.blob + ".incomplete")
    return min(part.stat().st_size, f.size or 0) if part.exists() else 0


def _local_present(target: Path, f: RemoteFile) -> int:
    final = target / f.path
    if final.exists():
        return final.stat().st_size
    part = Path(str(final) + ".part")
    return part.stat().st_size if part.exists() else 0


def _check_disk(the_plan: Plan) -> None:
    """Refuse before writing a byte when the disk cannot take the download with headroom."""
    remaining = the_plan.remaining_bytes
    if remaining == 0:
        return
    where = the_plan.storage
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    needed = DISK_HEADROOM * remaining
    if free < needed:
        raise InsufficientDiskError(
            f"Not enough disk space for {the_plan.source.model_id}: {human_bytes(remaining)} still to "
            f"download and OminiX wants {DISK_HEADROOM}x that ({human_bytes(needed)}) free, but {where} has "
            f"{human_bytes(free)} free. Free some space, or point HF_HUB_CACHE / OMINIX_MODELS at a "
            "bigger disk.",
            needed=needed, free=free, where=str(where),
        )


# ---------------------------------------------------------------------------------------------------
# Placing


def _finish(the_plan: Plan) -> None:
    if the_plan.source.kind == "hugging_face":
        _link_snapshot(the_plan)
    else:
        _write_manifest(the_plan)


def _link_snapshot(the_plan: Plan) -> None:
    """Snapshot links and the ref, exactly like huggingface_hub's cache (relative symlinks)."""
    blobs = the_plan.storage / "blobs"
    for f in the_plan.files:
        pointer = the_plan.target / f.path
        if pointer.exists():
            continue
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(pointer):
            pointer.unlink()  # a dangling link from an older, removed blob
        blob = blobs / f.blob
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        except OSError:
            shutil.copyfile(blob, pointer)  # filesystems without symlinks
    revision = the_plan.source.revision
    if revision and revision != the_plan.revision and not is_commit_hash(revision):
        atomic_write(the_plan.storage / "refs" / revision, the_plan.revision)


def _convert_torch_checkpoint(target: Path, emit: EventHandler) -> None:
    """FunASR repos ship PyTorch `model.pt`: write `model.safetensors` next to it once, so loading
    never needs torch. A file that is not a torch zip checkpoint is left for the loader to report."""
    import zipfile

    from ominix.hub import torch_pickle

    source = target / "model.pt"
    if (target / "model.safetensors").exists() or not source.is_file() or not zipfile.is_zipfile(source):
        return
    emit({"event": "convert", "file": "model.pt", "to": "model.safetensors"})
    torch_pickle.convert_dir(target)


def _write_manifest(the_plan: Plan) -> None:
    """Record every file with its verified size and sha256. Files fetched now were hashed while they
    streamed; files a previous run completed keep their manifest record (hashed only without one)."""
    old = (read_manifest(the_plan.target) or {}).get("files", {})
    files = {}
    for f in the_plan.files:
        path = the_plan.target / f.path
        size = path.stat().st_size
        digest = the_plan.hashed.get(f.path)
        known = old.get(f.path)
        if digest is None and isinstance(known, dict) and known.get("size") == size and known.get("sha256") \
                and (not f.sha256 or known["sha256"] == f.sha256):
            digest = known["sha256"]
        if digest is None:  # completed by a run that stopped before writing the manifest
            digest = file_sha256(path)
            if f.sha256 and digest != f.sha256:
                path.unlink()
                raise ChecksumError(f.path, f.sha256, digest)
        files[f.path] = {"size": size, "sha256": digest}
    write_manifest(the_plan.target, the_plan.source.model_id, the_plan.source.as_dict(), the_plan.revision, files)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Sources that need no download


def _offline_snapshot(source: Source, emit: EventHandler) -> Path:
    storage = hf_repo_dir(source.repo_id)
    commit = source.revision
    if not is_commit_hash(commit):
        ref = storage / "refs" / (source.revision or "main")
        commit = ref.read_text().strip() if ref.exists() else None
    snapshot = storage / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        raise NetworkError(f"HF_HUB_OFFLINE is set and {source.repo_id}@{source.revision} is not in the cache "
                           f"({config.hf_hub_cache()}). Unset HF_HUB_OFFLINE to download it.")
    emit({"event": "done", "id": source.model_id, "path": str(snapshot), "bytes_downloaded": 0,
          "offline": True})
    return snapshot


def _check_manual(source: Source, emit: EventHandler) -> Path:
    if not source.local_path:
        raise DownloadError(f"Catalog entry {source.model_id} is manual but has no storage.local_path.")
    where = Path(source.local_path).expanduser()
    present = {p: (where / p).exists() for p in source.manual_files}
    missing = [p for p, ok in present.items() if not ok]
    emit({"event": "manual", "id": source.model_id, "where": str(where), "url": source.url,
          "files": [{"path": p, "present": ok} for p, ok in present.items()]})
    if missing or not where.is_dir():
        lines = [f"{source.model_id} is installed by hand: OminiX does not download it."]
        if source.url:
            lines.append(f"Get the files from {source.url} and place them under {where}:")
        else:
            lines.append(f"Place these files under {where}:")
        lines += [f"  {'ok     ' if present[p] else 'MISSING'} {where / p}" for p in source.manual_files]
        lines.append(f"Then run `ominix pull {source.model_id}` again to check.")
        raise ManualInstallRequired("\n".join(lines), missing=missing or [str(where)])
    emit({"event": "done", "id": source.model_id, "path": str(where), "bytes_downloaded": 0})
    return where
