"""Where weights come from: resolve what the user typed, and list the files a source offers.

Four kinds of source (seed 000): `hugging_face` (listed through huggingface_hub, so HF_ENDPOINT,
HF_TOKEN and the hub's error codes behave as users expect), `model_scope` (its HTTP API),
`url` (one direct file) and `manual` (nothing to download; the user places the files).

Nothing here writes to disk; download.py does that.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlencode, urlsplit

from ominix.hub.names import UnsafeNameError, is_commit_hash, is_repo_id, is_sha256, safe_relpath

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"


# ---------------------------------------------------------------------------------------------------
# Errors. Each message says what went wrong and what to do about it.


class DownloadError(Exception):
    """Base class: a pull that cannot go on. str(error) is the message to show the user."""


class RepoNotFoundError(DownloadError):
    pass


class UnsafeListingError(DownloadError):
    """A listing (or a name typed by the user) with a name that could write outside the store."""


class GatedRepoError(DownloadError):
    pass


class NetworkError(DownloadError):
    pass


class InsufficientDiskError(DownloadError):
    def __init__(self, message: str, *, needed: int = 0, free: int = 0, where: str = ""):
        super().__init__(message)
        self.needed, self.free, self.where = needed, free, where


class ChecksumError(DownloadError):
    def __init__(self, path: str, expected: str, actual: str, algorithm: str = "sha256"):
        super().__init__(
            f"{path}: {algorithm} mismatch (expected {expected}, got {actual}). The corrupted download "
            "was deleted; run the same pull again to fetch it afresh."
        )
        self.path, self.expected, self.actual = path, expected, actual


class ManualInstallRequired(DownloadError):
    """A `manual` source whose files are not (all) in place yet."""

    def __init__(self, message: str, *, missing: list[str]):
        super().__init__(message)
        self.missing = missing


# ---------------------------------------------------------------------------------------------------
# Endpoints and switches, read at call time so tests and users can set them per process.


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_HF_ENDPOINT).rstrip("/")


def modelscope_endpoint() -> str:
    return os.environ.get("MODELSCOPE_ENDPOINT", DEFAULT_MODELSCOPE_ENDPOINT).rstrip("/")


def hf_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------------------------------------------
# What the user asked for.


@dataclass
class Source:
    kind: str  # hugging_face | model_scope | url | manual
    model_id: str  # catalog id, or an id derived from the repo / file name for ad-hoc pulls
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    sha256: str | None = None
    filename: str | None = None
    only_files: list[str] = field(default_factory=list)  # a single-file URL narrows the repo to it
    manual_files: list[str] = field(default_factory=list)
    local_path: str | None = None
    allow_patterns: list[str] = field(default_factory=list)  # catalog: limit a repo to these globs
    from_catalog: bool = False
    requires: list[str] = field(default_factory=list)  # catalog ids this model needs at run time

    def as_dict(self) -> dict:
        """The catalog-shaped source dict recorded in manifests and events."""
        if self.kind in ("hugging_face", "model_scope"):
            out = {"kind": self.kind, "repo_id": self.repo_id, "revision": self.revision}
            return {**out, "allow_patterns": list(self.allow_patterns)} if self.allow_patterns else out
        if self.kind == "url":
            return {"kind": "url", "url": self.url, "sha256": self.sha256, "filename": self.filename}
        return {"kind": "manual", "url": self.url, "files": list(self.manual_files)}


@dataclass
class RemoteFile:
    path: str  # relative path inside the repo / model directory, always with '/'
    size: int | None
    url: str
    sha256: str | None = None  # published content hash (HF LFS, ModelScope, catalog url entries)
    git_sha1: str | None = None  # HF small files: the git blob id, checkable too
    blob: str | None = None  # HF cache blob name (the hub's etag: sha256 for LFS, git sha1 otherwise)


def resolve(name: str, revision: str | None = None) -> Source:
    """Turn a catalog id or alias, `owner/repo[@rev]`, a hub URL or a direct URL into a Source."""
    name = name.strip()
    if name.startswith(("http://", "https://")):
        return _resolve_url(name, revision)
    if name.startswith("modelscope:"):
        repo_id, rev = _split_revision(name[len("modelscope:") :])
        return _checked(Source("model_scope", _ms_model_id(repo_id), repo_id=repo_id,
                               revision=revision or rev or "master"))

    from ominix import registry

    entry = registry.load_catalog().find(name)
    if entry is not None:
        return _checked(_from_entry(entry, revision))

    repo_id, rev = _split_revision(name)
    if is_repo_id(repo_id):
        return _checked(Source("hugging_face", repo_id, repo_id=repo_id, revision=revision or rev or "main"))
    raise RepoNotFoundError(
        f"'{name}' is not a catalog id, an owner/repo Hugging Face id or a URL. "
        "Run `ominix list --all` to see the catalog."
    )


def _ms_model_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise UnsafeListingError(f"'{repo_id}' is not an owner/repo ModelScope id.")
    return repo_id.replace("/", "--")


def _checked(source: Source) -> Source:
    """Names from the user or the catalog that become paths: repo id, revision (HF refs/<revision>),
    the file name of a URL source, the files a hub URL narrows to."""
    try:
        if source.kind in ("hugging_face", "model_scope") and not is_repo_id(source.repo_id):
            raise UnsafeNameError(f"'{source.repo_id}' is not an owner/repo id")
        if source.revision is not None:
            safe_relpath(source.revision, "revision")
        if source.kind == "url":
            safe_relpath(source.filename, "file name")
        for path in source.only_files:
            safe_relpath(path, "file name")
        safe_relpath(source.model_id.replace("/", "--"), "model id")
    except UnsafeNameError as e:
        raise UnsafeListingError(f"Cannot pull {source.model_id}: {e}.") from None
    return source


def _split_revision(text: str) -> tuple[str, str | None]:
    if "@" in text:
        repo_id, rev = text.split("@", 1)
        return repo_id, rev or None
    return text, None


def _from_entry(entry, revision: str | None) -> Source:
    source = _source_of_entry(entry, revision)
    source.requires = list(entry.requires)
    return source


def _source_of_entry(entry, revision: str | None) -> Source:
    src = entry.source.to_dict()
    kind = src.get("kind")
    if kind in ("hugging_face", "model_scope"):
        default_rev = "main" if kind == "hugging_face" else "master"
        return Source(kind, entry.id, repo_id=src["repo_id"],
                      revision=revision or src.get("revision") or default_rev,
                      allow_patterns=list(src.get("allow_patterns") or []), from_catalog=True)
    if kind == "url":
        filename = src.get("filename") or _filename_from_url(src["url"])
        return Source("url", entry.id, url=src["url"], sha256=_norm_sha(src.get("sha256")),
                      filename=filename, from_catalog=True)
    if kind == "manual":
        return Source("manual", entry.id, url=src.get("url"), manual_files=list(src.get("files") or []),
                      local_path=entry.storage.local_path, from_catalog=True)
    raise DownloadError(f"Catalog entry '{entry.id}' has an unknown source kind {kind!r}.")


def _resolve_url(url: str, revision: str | None) -> Source:
    parts = urlsplit(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    hf_hosts = {"huggingface.co", "hf.co", urlsplit(hf_endpoint()).netloc}
    if parts.netloc in hf_hosts and len(segments) >= 2 and segments[0] not in ("api", "datasets", "spaces"):
        repo_id = "/".join(segments[:2])
        rest = segments[2:]
        # .../tree/<rev>, .../blob/<rev>/<file>, .../resolve/<rev>/<file>
        if len(rest) >= 2 and rest[0] in ("tree", "blob", "resolve"):
            rev = revision or rest[1]
            only = ["/".join(rest[2:])] if rest[0] != "tree" and len(rest) > 2 else []
            return _checked(Source("hugging_face", repo_id, repo_id=repo_id, revision=rev, only_files=only))
        if not rest:
            return _checked(Source("hugging_face", repo_id, repo_id=repo_id, revision=revision or "main"))
    if parts.netloc.endswith("modelscope.cn") and len(segments) >= 3 and segments[0] == "models":
        repo_id = "/".join(segments[1:3])
        return _checked(Source("model_scope", _ms_model_id(repo_id), repo_id=repo_id,
                               revision=revision or "master"))
    filename = _filename_from_url(url)
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    model_id = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "download"
    from ominix import registry

    if registry.load_catalog().find(model_id) is not None:
        model_id += "-url"  # never let an ad-hoc file pose as a catalog model in the store
    return _checked(Source("url", model_id, url=url, filename=filename))


def _filename_from_url(url: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if not name or name in (".", ".."):
        raise DownloadError(f"Cannot tell a file name from {url}; give the catalog entry a 'filename'.")
    return name


def _norm_sha(value: str | None) -> str | None:
    return value.lower().removeprefix("sha256:") if value else None


# ---------------------------------------------------------------------------------------------------
# Which files inference needs. Everything is kept except docs, media, other frameworks' exports and
# duplicate weights; a repo that has safetensors never also downloads its pytorch .bin copies.

_SKIP_SUFFIXES = (
    ".md", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".pdf", ".mp4", ".mp3", ".wav",
    ".flac", ".ogg", ".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".tflite", ".mlmodel",
)
_SKIP_NAMES = {".gitattributes", ".gitignore"}
_SKIP_DIRS = {"onnx", "openvino", "coreml", "tf", "flax"}
_PREFERRED_WEIGHTS = (".safetensors", ".gguf", ".npz")
_PYTORCH_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt")


def select_files(paths: list[str], include: list[str] | None = None) -> list[str]:
    """The subset of a repo listing to download. `include` globs replace the default rules."""
    if include:
        return [p for p in paths if any(fnmatch.fnmatch(p, pattern) for pattern in include)]
    has_preferred = any(p.endswith(_PREFERRED_WEIGHTS) for p in paths)
    chosen = []
    for path in paths:
        parts = path.split("/")
        name = parts[-1]
        if name in _SKIP_NAMES or name.lower().endswith(_SKIP_SUFFIXES):
            continue
        if any(part in _SKIP_DIRS or part.startswith(".") for part in parts[:-1]):
            continue
        if has_preferred and (name.endswith(_PYTORCH_WEIGHTS) or parts[0] == "original"):
            continue  # pytorch duplicates of weights we already get as safetensors
        chosen.append(path)
    return chosen


# ---------------------------------------------------------------------------------------------------
# Listing. Each returns (resolved revision, files).


def list_hf_files(source: Source, include: list[str] | None = None) -> tuple[str, list[RemoteFile]]:
    """All files of the repo at the revision, with sizes and hashes, through huggingface_hub."""
    from huggingface_hub import HfApi, hf_hub_url

    endpoint = hf_endpoint()
    api = HfApi(endpoint=endpoint, library_name="ominix")
    try:
        info = api.model_info(source.repo_id, revision=source.revision, files_metadata=True)
    except Exception as exc:  # mapped to our own errors below, anything else propagates
        raise hf_error(exc, source) from None
    commit = info.sha or source.revision
    siblings = info.siblings or []
    where = f"{endpoint} listed {source.repo_id}@{source.revision}"
    if not is_commit_hash(commit):
        raise UnsafeListingError(f"{where} at commit id {commit!r}, which is not 40 hex digits; "
                                 "nothing was downloaded.")
    _check_listing(where, [s.rfilename for s in siblings])
    for sibling in siblings:  # blob names come from these hashes: they must be hashes
        if sibling.lfs is not None and not is_sha256(sibling.lfs.sha256):
            raise UnsafeListingError(f"{where} with sha256 {sibling.lfs.sha256!r} for {sibling.rfilename!r}, "
                                     "which is not 64 hex digits; nothing was downloaded.")
        if sibling.lfs is None and sibling.blob_id is not None and not is_commit_hash(sibling.blob_id):
            raise UnsafeListingError(f"{where} with blob id {sibling.blob_id!r} for {sibling.rfilename!r}, "
                                     "which is not 40 hex digits; nothing was downloaded.")
    by_path = {s.rfilename: s for s in siblings}
    if source.only_files:
        missing = [p for p in source.only_files if p not in by_path]
        if missing:
            raise RepoNotFoundError(f"{source.repo_id}@{source.revision} has no file {missing[0]!r}.")
        wanted = list(source.only_files)
    else:
        wanted = select_files(sorted(by_path), include or source.allow_patterns)
    files = []
    for path in wanted:
        sibling = by_path[path]
        lfs = sibling.lfs
        if lfs is None and sibling.blob_id is None:
            raise DownloadError(f"{endpoint} listed {source.repo_id} without file hashes (blobs=true); "
                                "is HF_ENDPOINT a Hugging Face compatible hub?")
        files.append(RemoteFile(
            path=path,
            size=lfs.size if lfs else sibling.size,
            url=hf_hub_url(source.repo_id, path, revision=commit, endpoint=endpoint),
            sha256=lfs.sha256 if lfs else None,
            git_sha1=None if lfs else sibling.blob_id,
            blob=lfs.sha256 if lfs else sibling.blob_id,
        ))
    if not files:
        raise RepoNotFoundError(f"{source.repo_id}@{source.revision} has no files to download"
                                + (f" matching {include}." if include else "."))
    return commit, files


def _check_listing(where: str, names: list) -> None:
    """Every name of a listing, wanted or not, must be a safe relative path: else refuse it whole."""
    for name in names:
        try:
            safe_relpath(name)
        except UnsafeNameError as e:
            raise UnsafeListingError(f"{where} with an unsafe name, so nothing was downloaded: {e}.") from None


def hf_error(exc: Exception, source: Source) -> Exception:
    """Translate huggingface_hub / transport errors into ours, with the fix in the message."""
    from huggingface_hub import errors as hf_errors

    web = hf_endpoint()
    repo = source.repo_id
    if isinstance(exc, hf_errors.GatedRepoError) or _status(exc) == 403:
        return GatedRepoError(gated_message(repo, web))
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return RepoNotFoundError(f"{repo} has no revision '{source.revision}'. Check the branch, tag or commit.")
    if isinstance(exc, hf_errors.RepositoryNotFoundError) or _status(exc) in (401, 404):
        return RepoNotFoundError(not_found_message(source, web))
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return NetworkError(f"HF_HUB_OFFLINE is set, so {repo} cannot be listed on {web}. "
                            "Unset HF_HUB_OFFLINE to download it.")
    if is_transport_error(exc):
        return NetworkError(network_message(web, exc))
    if isinstance(exc, hf_errors.HfHubHTTPError):
        return DownloadError(f"{web} answered {_status(exc)} for {repo}: {str(exc).splitlines()[0]}")
    return exc


def gated_message(repo: str, web: str) -> str:
    has_token = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    fix = ("your HF_TOKEN has no access yet: accept the licence at " if has_token
           else "accept the licence at ")
    return (f"{repo} is gated: {fix}{web}/{repo} and set HF_TOKEN to a read token "
            f"from {web}/settings/tokens.")


def not_found_message(source: Source, web: str) -> str:
    hint = ("the catalog entry points at it; the catalog may be out of date"
            if source.from_catalog else "check the id (case matters); `ominix list --all` shows catalog ids")
    return f"Repo {source.repo_id} not found on {web}: {hint}. Private repos also need HF_TOKEN."


def network_message(where: str, exc: Exception) -> str:
    return (f"Cannot reach {where} ({type(exc).__name__}: {exc}). Check your network connection, "
            "HF_ENDPOINT / MODELSCOPE_ENDPOINT and proxy settings; models already downloaded keep "
            "working offline (HF_HUB_OFFLINE=1).")


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transport_error(exc: Exception) -> bool:
    """Connection refused, DNS failure, timeout: from our httpx or huggingface_hub's httpx fork."""
    import httpx

    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    try:
        import httpx2  # huggingface_hub >= 2 ships its own httpx fork

        if isinstance(exc, httpx2.TransportError):
            return True
    except ImportError:
        pass
    try:
        import requests  # huggingface_hub < 1 used requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    except ImportError:
        return False


def list_modelscope_files(source: Source, client, include: list[str] | None = None) -> tuple[str, list[RemoteFile]]:
    """ModelScope's recursive file listing: Data.Files[] with Path, Size, Sha256, Type."""
    base = f"{modelscope_endpoint()}/api/v1/models/{source.repo_id}/repo"
    query = urlencode({"Revision": source.revision, "Recursive": "true"})
    response = client.get(f"{base}/files?{query}")
    if response.status_code in (401, 403):
        raise GatedRepoError(f"ModelScope repo {source.repo_id} needs access: accept its licence at "
                             f"{modelscope_endpoint()}/models/{source.repo_id}.")
    if response.status_code == 404:
        raise RepoNotFoundError(_ms_not_found(source))
    if response.status_code >= 400:
        raise DownloadError(f"ModelScope answered {response.status_code} when listing {source.repo_id}.")
    try:
        body = response.json()
    except ValueError:
        raise DownloadError(f"ModelScope returned a non-JSON file list for {source.repo_id}.") from None
    if body.get("Success") is False or body.get("Code") not in (None, 200):
        raise RepoNotFoundError(_ms_not_found(source) + f" ({body.get('Message', 'no message')})")
    entries = [f for f in (body.get("Data") or {}).get("Files") or [] if isinstance(f, dict)]
    _check_listing(f"ModelScope listed {source.repo_id}@{source.revision}", [f.get("Path") for f in entries])
    entries = [f for f in entries if f.get("Type") != "tree"]
    by_path = {f["Path"]: f for f in entries}
    files = []
    for path in select_files(sorted(by_path), include or source.allow_patterns):
        entry = by_path[path]
        query = urlencode({"Revision": source.revision, "FilePath": path})
        files.append(RemoteFile(path=path, size=entry.get("Size"), url=f"{base}?{query}",
                                sha256=_norm_sha(entry.get("Sha256"))))
    if not files:
        raise RepoNotFoundError(f"ModelScope repo {source.repo_id}@{source.revision} has no files to download.")
    return source.revision, files


def _ms_not_found(source: Source) -> str:
    hint = ("the catalog entry points at it; the catalog may be out of date"
            if source.from_catalog else "check the id; `ominix list --all` shows catalog ids")
    return f"ModelScope repo {source.repo_id} (revision {source.revision}) not found: {hint}."


def url_file(source: Source, client) -> RemoteFile:
    """A direct download: its size comes from a HEAD when the server tells (else from the GET)."""
    size = None
    try:
        head = client.head(source.url)
        if head.status_code == 404:
            raise RepoNotFoundError(f"{source.url} answered 404: check the URL.")
        if head.status_code in (401, 403):
            raise GatedRepoError(f"{source.url} answered {head.status_code}: the file needs credentials.")
        if head.status_code < 400 and head.headers.get("Content-Length"):
            size = int(head.headers["Content-Length"])
    except DownloadError:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            raise NetworkError(network_message(urlsplit(source.url).netloc, exc)) from None
        raise
    return RemoteFile(path=source.filename, size=size, url=source.url, sha256=source.sha256)
