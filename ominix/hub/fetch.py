"""Fetching the planned files in parallel: resumable with HTTP Range, bounded retries, hashed while
the bytes stream, verified before a part is renamed into place (download.py plans and places)."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from ominix import config
from ominix.hub.names import human_bytes
from ominix.hub.listing import gated_message, network_message
from ominix.hub.sources import (
    ChecksumError, DownloadError, GatedRepoError, InsufficientDiskError, NetworkError, RemoteFile,
    RepoNotFoundError, SizeMismatchError, hf_endpoint,
)

if TYPE_CHECKING:
    from ominix.hub.download import Plan

EventHandler = Callable[[dict], None]
CHUNK = 1 << 20
MAX_RETRIES = 5  # consecutive network failures without progress before giving up on a file
MAX_RESTARTS = 2  # times a part may be thrown away (Range ignored, 416) before the file is an error


class _Cancelled(Exception):
    pass


class Progress:
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


def fetch_all(the_plan: Plan, client, emit: EventHandler, workers: int) -> int:
    progress = Progress(the_plan, emit)
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


def _fetch_one(the_plan: Plan, f: RemoteFile, client, progress: Progress, emit: EventHandler) -> None:
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
                sha256 = stream_to_part(client, f, part, headers, progress)
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

    def append(self, response, progress: Progress) -> None:
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


def stream_to_part(client, f: RemoteFile, part_path: Path, headers: dict, progress: Progress) -> str:
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


def _restart(f: RemoteFile, part: _Part, progress: Progress, restarts: int) -> int:
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
