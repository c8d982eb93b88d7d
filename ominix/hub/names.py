"""The hub's names, in one place: repo ids, cache folder names, commit ids, file names from the
network, the store manifest and byte counts for people.

Every name that comes from a hub listing (file names, commit ids, blob hashes) or from a user's
`owner/repo@revision` is checked here before anything touches the disk: a name that could land a
file outside its snapshot or model folder is refused with a clear error (`UnsafeNameError`).
Imports nothing heavier than the standard library and ominix.config.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path

from ominix import config

MANIFEST = ".ominix.json"  # a store folder's record of its verified files, written last
HF_PREFIX = "models--"

# Hugging Face's rule: alphanumerics with - _ ., not starting or ending with - or .; no "--" or "..".
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_BYTES = 255  # one path component, as most file systems allow


class UnsafeNameError(ValueError):
    """A name from the network (or the command line) that must not become a path on disk."""


def is_repo_id(text: str | None) -> bool:
    return bool(text) and bool(REPO_ID.match(text)) and "--" not in text and ".." not in text


def is_commit_hash(text: str | None) -> bool:
    return bool(text) and bool(_COMMIT.match(text))


def is_sha256(text: str | None) -> bool:
    return bool(text) and bool(_SHA256.match(text))


# --- the Hugging Face cache layout --------------------------------------------------------------


def hf_folder_name(repo_id: str) -> str:
    """`owner/repo` -> `models--owner--repo`, refusing anything that is not a repo id."""
    if not is_repo_id(repo_id):
        raise UnsafeNameError(f"'{repo_id}' is not an owner/repo id")
    return HF_PREFIX + repo_id.replace("/", "--")


def hf_repo_dir(repo_id: str) -> Path:
    return config.hf_hub_cache() / hf_folder_name(repo_id)


def repo_id_of_folder(name: str) -> str | None:
    """`models--owner--repo` -> `owner/repo`; None for anything else (datasets--, .locks, ...)."""
    if not name.startswith(HF_PREFIX):
        return None
    repo_id = name[len(HF_PREFIX):].replace("--", "/", 1)
    return repo_id if is_repo_id(repo_id) else None


def looks_like_path(name: str) -> bool:
    """A name the user meant as a directory (`./x`, `/x`, `~/x`, `a/b/c`), not an id or owner/repo."""
    return name.startswith(("/", "~", "./", "../")) or name in (".", "..") or (
        os.sep in name and not is_repo_id(name.split("@", 1)[0]))


# --- names from the network -----------------------------------------------------------------------


def safe_relpath(name, what: str = "file name") -> str:
    """`name` if it is a plain relative path that stays inside its folder, else UnsafeNameError.

    Refused: empty, absolute, a drive (`C:`), backslashes, NUL and control characters, `.` or `..`
    components, anything normalisation would change (`a//b`, `a/./b`, a trailing `/`), components
    too long for a file system.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeNameError(f"empty or non-text {what} {name!r}")
    problem = None
    if name.startswith("/") or _DRIVE.match(name):
        problem = "it is absolute"
    elif "\\" in name:
        problem = "it contains a backslash"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "it contains a control character"
    elif any(part in ("", ".", "..") for part in name.split("/")) or posixpath.normpath(name) != name:
        problem = "it is not a normalized path inside its folder"
    elif any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in name.split("/")):
        problem = f"a component is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise UnsafeNameError(f"refusing {what} {name!r}: {problem}")
    return name


def inside(root: Path, relpath: str) -> Path:
    """root/relpath, checked once more after resolving the folders on the way (the file itself may
    be a snapshot link into blobs/, which is how the HF cache is meant to be)."""
    path = root / safe_relpath(relpath)
    real_root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(path.parent)).is_relative_to(real_root):
        raise UnsafeNameError(f"refusing file name {relpath!r}: it leads outside {root}")
    return path


# --- the store manifest ---------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a store folder, or None when missing, unreadable or not the right shape."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and a rename, so readers see the old or the new text, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(folder: Path, model_id: str, source: dict, revision: str | None, files: dict) -> None:
    atomic_write(folder / MANIFEST, json.dumps(
        {"id": model_id, "source": source, "revision": revision, "files": files}, indent=2) + "\n")


# --- sizes for people -----------------------------------------------------------------------------


def human_bytes(n: float | None) -> str:
    """Decimal units, like the hub and the disk tools: 1.5 GB is 1.5e9 bytes."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"
