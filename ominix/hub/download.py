"""Getting weights onto disk: plan the files, check the disk, fetch in parallel with resume, verify, place.

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

import errno
import hashlib
import os
import shutil
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
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
from ominix.hub.sources import (
    ChecksumError,
    DownloadError,
    GatedRepoError,
    InsufficientDiskError,
    ManualInstallRequired,
    NetworkError,
    RemoteFile,
    RepoNotFoundError,
    Source,
    UnsafeListingError,
    hf_endpoint,
    hf_offline,
    is_transport_error,
    list_hf_files,
    list_modelscope_files,
    modelscope_endpoint,
    network_message,
    resolve,
    url_file,
)

__all__ = [
    "pull", "plan", "ensure_local", "Plan", "MANIFEST",
    "DownloadError", "GatedRepoError", "RepoNotFoundError", "NetworkError",
    "InsufficientDiskError", "ChecksumError", "ManualInstallRequired", "SizeMismatchError",
    "UnsafeListingError",
]

EventHandler = Callable[[dict], None]
DISK_HEADROOM = 2  # seed 003: want twice the bytes still to download free before starting
CHUNK = 1 << 20
MAX_RETRIES = 5  # consecutive network failures without progress before giving up on a file
MAX_RESTARTS = 2  # times a part may be thrown away (Range ignored, 416) before the file is an error


class SizeMismatchError(DownloadError):
    """The listing and the server disagree about a file's length."""


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
    with _client() as client:
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
    with _client() as client:
        the_plan = _plan(source, client, include)
        emit(the_plan.event())
        _check_disk(the_plan)
        fetched = _fetch_all(the_plan, client, emit, workers or _default_workers())
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


def _client():
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
# Fetching


class _Cancelled(Exception):
    pass


class _Progress:
    """Aggregates bytes from the worker threads and emits throttled progress events."""

    def __init__(self, the_plan: Plan, emit: EventHandler):
        self.emit = emit
        self.total = the_plan.total_bytes
        self.done = the_plan.total_bytes - the_plan.remaining_bytes
        self.fetched = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()
        self.cancel = threading.Event()

    def add(self, path: str, n: int) -> None:
        if self.cancel.is_set():
            raise _Cancelled()
        with self.lock:
            self.done += n
            self.fetched += n
            now = time.monotonic()
            if now - self.last < 0.2:
                return
            self.last = now
            speed = self.fetched / max(now - self.started, 1e-6)
            eta = (self.total - self.done) / speed if speed > 0 else None
            self.emit({"event": "progress", "file": path, "bytes": self.done, "total": self.total,
                       "speed": round(speed), "eta": None if eta is None else round(eta, 1)})

    def rollback(self, n: int) -> None:
        """A server ignored our Range (or a part was bad): those bytes come again."""
        with self.lock:
            self.done -= n


def _fetch_all(the_plan: Plan, client, emit: EventHandler, workers: int) -> int:
    progress = _Progress(the_plan, emit)
    jobs = sorted(the_plan.files, key=lambda f: -(f.size or 0))  # big files first: best overlap
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="ominix-pull")
    futures = [pool.submit(_fetch_one, the_plan, f, client, progress, emit) for f in jobs]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        errors = [fut.exception() for fut in futures if fut.done() and fut.exception()]
        if errors:
            progress.cancel.set()
            wait(futures)
            first = next(e for e in errors if not isinstance(e, _Cancelled))
            raise first
    except BaseException:
        progress.cancel.set()  # Ctrl-C or an error: workers stop at their next chunk, parts stay
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return progress.fetched


def _fetch_one(the_plan: Plan, f: RemoteFile, client, progress: _Progress, emit: EventHandler) -> None:
    """One file: already there -> skip; else download to its part file under a lock, verify, rename."""
    if the_plan.source.kind == "hugging_face":
        final = the_plan.storage / "blobs" / f.blob
        part = Path(str(final) + ".incomplete")  # the name huggingface_hub used for resumable blobs
        lock_path = config.hf_hub_cache() / ".locks" / the_plan.storage.name / f"{f.blob}.lock"
        headers = _hf_headers()
        already = final.exists() or (the_plan.target / f.path).exists()
    else:
        final = the_plan.target / f.path
        part = Path(str(final) + ".part")
        lock_name = f.path.replace("/", "--") + ".lock"
        lock_path = config.models_dir() / ".locks" / the_plan.source.model_id / lock_name
        headers = {}
        already = final.exists()
    sha256 = None
    if not already:
        from huggingface_hub.utils import WeakFileLock

        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock_path):
            if not final.exists():  # another process may have finished it while we waited
                final.parent.mkdir(parents=True, exist_ok=True)
                sha256 = _download(client, f, part, headers, progress)
                os.replace(part, final)
                the_plan.hashed[f.path] = sha256
    emit({"event": "file_done", "file": f.path, "size": f.size, "sha256": sha256 or f.sha256,
          "skipped": already})


def _hf_headers() -> dict:
    from huggingface_hub.utils import build_hf_headers

    from ominix import __version__

    return build_hf_headers(library_name="ominix", library_version=__version__)


class _Part:
    """A partial download on disk: its length so far, and the running hashes of those bytes
    (sha256 always; the git blob id too when the hub published one for a small file)."""

    def __init__(self, path: Path, f: RemoteFile):
        self.path, self.f = path, f
        self._reset_hashes()
        self.have = path.stat().st_size if path.exists() else 0
        if f.size is not None and self.have > f.size:
            self.restart()  # longer than the file can be: not a prefix of it
        if self.have:  # resuming: the hashes must cover the bytes already there
            with open(path, "rb") as old:
                while chunk := old.read(CHUNK):
                    self._hash(chunk)

    def _reset_hashes(self) -> None:
        self.sha256 = hashlib.sha256()
        self.git = None
        if self.f.git_sha1 and self.f.size is not None:
            self.git = hashlib.sha1(f"blob {self.f.size}\0".encode())

    def _hash(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self.git is not None:
            self.git.update(chunk)

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self._reset_hashes()
        self.have = 0

    def append(self, response, progress: "_Progress") -> None:
        """Write the response body after what is there; `have` stays exact if the stream breaks."""
        try:
            with open(self.path, "ab") as out:
                for chunk in response.iter_raw():
                    out.write(chunk)
                    self._hash(chunk)
                    self.have += len(chunk)
                    progress.add(self.f.path, len(chunk))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            why = ("the file system refused to grow it (file size limit)" if exc.errno == errno.EFBIG
                   else "the disk is full")
            kept = self.path.stat().st_size if self.path.exists() else 0
            raise InsufficientDiskError(
                f"Cannot write {self.f.path} in {self.path.parent}: {why}. The {human_bytes(kept)} already "
                f"received are kept in {self.path.name}; free some space and run the same pull again to "
                "resume from there.",
                where=str(self.path.parent),
            ) from None


def _download(client, f: RemoteFile, part_path: Path, headers: dict, progress: _Progress) -> str:
    """Fetch f.url into `part_path`, resuming from its current length; verify; return the sha256.

    Retries are bounded: network failures without progress (MAX_RETRIES), and parts thrown away
    because the server ignored Range or refused it (MAX_RESTARTS). A server whose length disagrees
    with the listing is an error at once: retrying cannot make the file the listed size.
    """
    part = _Part(part_path, f)
    size = f.size
    failures = restarts = 0
    while size is None or part.have < size:
        request_headers = dict(headers)
        if part.have:
            request_headers["Range"] = f"bytes={part.have}-"
        before = part.have
        try:
            with client.stream("GET", f.url, headers=request_headers) as response:
                if response.status_code == 416 and part.have:
                    _check_length(f, size, _total_length(response))
                    restarts = _restart(f, part, progress, restarts)  # our part does not fit the remote file
                    continue
                _raise_for_status(response, f)
                if part.have and response.status_code != 206:
                    restarts = _restart(f, part, progress, restarts)  # the server ignored Range: start over
                total = _total_length(response, part.have)
                _check_length(f, size, total)
                if size is None:
                    size = total
                part.append(response, progress)
                if size is None:
                    size = part.have  # no length announced: the clean end of the stream is the end
                if part.have < size:
                    raise _ShortRead()
        except (_ShortRead, *_transport_errors()) as exc:
            failures = 1 if part.have > before else failures + 1
            if failures > MAX_RETRIES:
                where = urlsplit(f.url).netloc
                raise NetworkError(f"{f.path}: the download kept failing after {part.have} of {size} bytes. "
                                   + network_message(where, exc) + " Run the same pull again to resume.") from None
            time.sleep(min(0.25 * 2 ** (failures - 1), 8.0))
    _verify(f, part)
    return part.sha256.hexdigest()


def _total_length(response, offset: int = 0) -> int | None:
    """The whole remote file's length as this response tells it (Content-Range, else Content-Length)."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].strip().isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    if response.status_code == 200 and length is not None and length.isdigit():
        return int(length)
    if response.status_code == 206 and length is not None and length.isdigit():
        return offset + int(length)
    return None


def _check_length(f: RemoteFile, listed: int | None, served: int | None) -> None:
    if listed is not None and served is not None and listed != served:
        raise SizeMismatchError(
            f"{f.path}: the listing says {listed} bytes but the server sends {served} bytes for {f.url}. "
            "The hub or mirror is inconsistent; nothing was kept for this file. Try again later or "
            "report it to the hub.")


def _restart(f: RemoteFile, part: _Part, progress: _Progress, restarts: int) -> int:
    progress.rollback(part.have)
    part.restart()
    if restarts + 1 > MAX_RESTARTS:
        raise DownloadError(f"{f.path}: the server keeps refusing to resume it (started over {restarts + 1} "
                            f"times) at {f.url}. Try again later.")
    return restarts + 1


class _ShortRead(Exception):
    def __str__(self) -> str:
        return "connection closed before the whole file arrived"


def _transport_errors() -> tuple:
    import httpx

    return (httpx.TransportError, ConnectionError, TimeoutError)


def _raise_for_status(response, f: RemoteFile) -> None:
    code = response.status_code
    if code < 400:
        return
    error_code = response.headers.get("X-Error-Code", "")
    if code in (401, 403) and error_code != "RepoNotFound":
        if "/resolve/" in f.url:
            from ominix.hub.sources import gated_message

            repo = "/".join(f.url.split("/resolve/")[0].split("/")[-2:])
            raise GatedRepoError(gated_message(repo, hf_endpoint()))
        raise GatedRepoError(f"{f.path}: the server answered {code}; the file needs credentials or a "
                             "licence accepted on the hub's website.")
    if code in (401, 404):
        raise RepoNotFoundError(f"{f.path}: not found at {f.url} ({code}). Check the id, revision and file name.")
    raise DownloadError(f"{f.path}: the server answered {code} for {f.url}. Try again later.")


def _verify(f: RemoteFile, part: _Part) -> None:
    """Size, then sha256, then the git blob id: a mismatch deletes the part and names the file."""
    checks = [("size", f"{f.size} bytes" if f.size is not None else None, f"{part.have} bytes"),
              ("sha256", f.sha256, part.sha256.hexdigest())]
    if part.git is not None:
        checks.append(("git blob sha1", f.git_sha1, part.git.hexdigest()))
    for algorithm, expected, actual in checks:
        if expected and expected != actual:
            part.path.unlink(missing_ok=True)
            raise ChecksumError(f.path, expected, actual, algorithm)


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
