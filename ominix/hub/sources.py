"""Where weights come from: resolve what the user typed into a Source, and pick the files inference needs.

Four kinds of source (seed 000): `hugging_face` (listed through huggingface_hub, so HF_ENDPOINT,
HF_TOKEN and the hub's error codes behave as users expect), `model_scope` (its HTTP API),
`url` (one direct file) and `manual` (nothing to download; the user places the files).

Listing a source's files is hub/listing.py; nothing here writes to disk (download.py does that).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ominix.hub.names import UnsafeNameError, is_repo_id, safe_relpath

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


class SizeMismatchError(DownloadError):
    """The listing and the server disagree about a file's length."""


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
        return Source("url", entry.id, url=src["url"], sha256=norm_sha(src.get("sha256")),
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


def norm_sha(value: str | None) -> str | None:
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
