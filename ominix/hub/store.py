"""What is installed: list, locate, verify, delete (confined to the store), and import existing folders.

Where models live
    hugging_face entries and raw `owner/repo` pulls: the shared Hugging Face cache
        (config.hf_hub_cache()/models--owner--repo/{blobs, snapshots/<commit>, refs/<revision>}),
        so weights already fetched by mlx-lm or transformers are reused, and vice versa.
    model_scope and url entries: config.models_dir()/<id>/ with a manifest `.ominix.json`
        {"id", "source", "revision", "files": {relpath: {"size", "sha256"}}}, written by the downloader
        only after every file was verified. A folder without it is an unfinished download.
    manual entries: the files the user placed under the entry's storage.local_path.

`scan` imports folders that are already on disk (`<dir>/<owner>/<repo>`, plain model folders, or a
Hugging Face cache) by registering a `manual` entry in the user overlay that points at the folder.
Nothing is copied or moved, so the folder stays where the user keeps it and `rm` never deletes it.

Verification results are remembered in ominix_home()/state/verified.json against a fingerprint of
the files' sizes and mtimes, so `ominix list` can show "verified" without re-hashing gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ominix import config, kinds
from ominix.hub.names import (
    HF_PREFIX,
    MANIFEST,
    hf_repo_dir,
    is_commit_hash,
    is_repo_id,
    is_sha256,
    looks_like_path,
    read_manifest,
    repo_id_of_folder,
)
from ominix.registry import (
    Catalog,
    ModelEntry,
    RegistryError,
    UnknownModelError,
    add_user_entries,
    load_catalog,
    make_custom_entry,
)

_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".npz", ".bin", ".pt", ".pth", ".ckpt", ".onnx")


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


@dataclass
class VerifyReport:
    id: str
    path: Path
    files_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"id": self.id, "path": str(self.path), "ok": self.ok, "files_checked": self.files_checked,
                "bytes_checked": self.bytes_checked, "problems": list(self.problems)}


@dataclass
class ScanResult:
    path: Path
    id: str
    format: str
    quantization: str | None
    action: str  # added | would add | already registered | already installed
    repo_id: str | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        return {"path": str(self.path), "id": self.id, "format": self.format,
                "quantization": self.quantization, "action": self.action, "repo_id": self.repo_id,
                "detail": self.detail}


# --- the Hugging Face cache -------------------------------------------------------------------
# Read directly rather than through huggingface_hub.scan_cache_dir: that drops a whole repo from its
# report when one snapshot link is broken, and a broken link is exactly what `verify` must report.


def _hf_repos() -> list[tuple[str, Path]]:
    root = config.hf_hub_cache()
    if not root.is_dir():
        return []
    repos = []
    for d in sorted(root.iterdir()):
        repo_id = repo_id_of_folder(d.name)
        if repo_id and d.is_dir() and (d / "snapshots").is_dir():
            repos.append((repo_id, d))
    return repos


def _hf_snapshot(repo_dir: Path, revision: str | None) -> Path | None:
    """The snapshot for a branch/tag (refs/<revision>) or a commit; with no revision, main or newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    if revision is None:
        return _hf_snapshot(repo_dir, "main") or _newest_snapshot(snapshots)
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
        snap = snapshots / commit
        return snap if snap.is_dir() else None
    if "/" not in revision and (snapshots / revision).is_dir():
        return snapshots / revision
    return None


def _newest_snapshot(snapshots: Path) -> Path | None:
    dirs = [d for d in snapshots.iterdir() if d.is_dir()]
    return max(dirs, key=lambda d: d.stat().st_mtime) if dirs else None


def _entry_snapshot(entry: ModelEntry) -> Path | None:
    repo_dir = hf_repo_dir(entry.repo_id)
    snap = _hf_snapshot(repo_dir, entry.revision)
    if snap is None and entry.revision == "main":
        snap = _hf_snapshot(repo_dir, None)  # pulled at a pinned commit, no refs/main
    return snap


def _files_under(folder: Path) -> list[Path]:
    """Regular files and links (broken ones too) under folder, skipping hidden names and temp files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and not name.endswith((".part", ".incomplete")):
                out.append(Path(dirpath) / name)
    return out


def _unique_size(paths) -> int:
    """Bytes on disk, each blob counted once however many snapshot links point at it."""
    seen: dict[Path, int] = {}
    for p in paths:
        try:
            real = p.resolve()
            if real not in seen:
                seen[real] = real.stat().st_size
        except OSError:
            continue  # broken link: reported by verify, counts nothing here
    return sum(seen.values())


# --- listing ----------------------------------------------------------------------------------


def _manual_present(entry: ModelEntry) -> bool:
    folder = entry.local_path
    return folder.is_dir() and any((folder / f).exists() for f in entry.source.files)


def list_installed(catalog: Catalog | None = None) -> list[InstalledModel]:
    catalog = catalog or load_catalog()
    state = _load_state()
    found: list[InstalledModel] = []
    for repo_id, repo_dir in _hf_repos():
        entry = catalog.by_repo_id(repo_id)
        snap = _entry_snapshot(entry) if entry else None
        snap = snap or _hf_snapshot(repo_dir, None)
        if snap is None or not _files_under(snap):
            continue
        all_links = [f for s in (repo_dir / "snapshots").iterdir() if s.is_dir() for f in _files_under(s)]
        fmt, quant = detect_format_and_quantization(snap, name=repo_id)
        found.append(InstalledModel(
            id=entry.id if entry else repo_id, path=snap, size_bytes=_unique_size(all_links),
            quantization=quant, format=fmt, entry=entry, revision=snap.name,
            verified=_remembered(state, snap), kind="hugging_face"))
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
            id=model_id, path=folder, size_bytes=_unique_size(_files_under(folder)), quantization=quant,
            format=fmt, entry=entry, revision=manifest.get("revision"),
            verified=_remembered(state, folder), kind="store"))
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
            id=entry.id, path=folder, size_bytes=_unique_size(files),
            quantization=entry.runtime.quantization or quant, format=fmt, entry=entry,
            revision=None, verified=_remembered(state, folder), kind="manual"))
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
            return Located(entry.id, kind, _entry_snapshot(entry), entry, entry.repo_id)
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
        snap = _hf_snapshot(hf_repo_dir(repo), revision or (entry.revision if entry else None))
        if snap is None and not revision:
            snap = _hf_snapshot(hf_repo_dir(repo), None)
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


# --- format and quantization ------------------------------------------------------------------

_GGUF_QUANT = re.compile(r"(?<![a-z0-9])(iq\d_[a-z]+|q\d_k_[sml]|q\d_k|q\d_\d|q\d|bf16|f16|f32)(?![a-z0-9])")
_NAME_QUANT = re.compile(r"(?<![a-z0-9])(\d{1,2})-?bits?(?![a-z0-9])|(?<![a-z0-9])(bf16|fp16|f16|fp32|fp8|mxfp4|int4|int8|awq|gptq)(?![a-z0-9])")
_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
           "BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def _read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _quant_from_block(block: dict) -> str | None:
    bits = block.get("bits", block.get("w_bit"))
    group = block.get("group_size", block.get("q_group_size"))
    method = str(block.get("quant_method") or "").lower()
    mode = str(block.get("mode") or "").lower()
    if method in ("awq", "gptq") and bits:
        return f"{method}-w{bits}g{group}" if group else f"{method}-w{bits}"
    if mode and mode != "affine":
        return mode  # mxfp4, nvfp4, ...
    if bits:
        # MLX's default group is 64; name the group only when it differs
        return f"{bits}bit" if group in (None, 64) else f"{bits}bit-g{group}"
    return method or None


def _safetensors_dtype(path: Path) -> str | None:
    """The dtype of the first tensor in a safetensors header (8-byte length + JSON)."""
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    for key, meta in header.items():
        if key != "__metadata__" and isinstance(meta, dict):
            return _DTYPES.get(meta.get("dtype"))
    return None


def detect_format_and_quantization(folder, name: str | None = None) -> tuple[str, str | None]:
    """("safetensors" | "gguf" | "npz" | "pytorch" | "onnx" | "unknown", quantization or None).

    Quantization, first match wins: an MLX `quantization` / HF `quantization_config` block in
    config.json ("4bit", "8bit", "4bit-g32" when the group is not MLX's default 64, "awq-w4g128",
    "mxfp4"); a GGUF quant token in a .gguf file name ("q4_k_m", "q8_0", "iq4_xs", "f16"); a token in
    the model's name or weight file names ("4bit", "bf16", ...); config.json's torch_dtype / dtype;
    the dtype stored in the first safetensors header.
    """
    folder = Path(folder)
    weights = [p for p in _files_under(folder) if p.suffix in _WEIGHT_SUFFIXES] if folder.is_dir() else []
    suffixes = {p.suffix for p in weights}
    if ".gguf" in suffixes:
        fmt = "gguf"
    elif ".safetensors" in suffixes:
        fmt = "safetensors"
    elif ".npz" in suffixes:
        fmt = "npz"
    elif suffixes & {".bin", ".pt", ".pth", ".ckpt"}:
        fmt = "pytorch"
    elif ".onnx" in suffixes:
        fmt = "onnx"
    else:
        fmt = "unknown"

    cfg = _read_config(folder) if folder.is_dir() else {}
    for key in ("quantization", "quantization_config"):
        if isinstance(cfg.get(key), dict) and (quant := _quant_from_block(cfg[key])):
            return fmt, quant
    if fmt == "gguf":
        for p in weights:
            if p.suffix == ".gguf" and (m := _GGUF_QUANT.search(p.stem.lower())):
                return fmt, m.group(1)
    for text in [name or folder.name, *(p.stem for p in weights)]:
        if m := _NAME_QUANT.search(text.lower()):
            return fmt, f"{m.group(1)}bit" if m.group(1) else {"f16": "fp16"}.get(m.group(2), m.group(2))
    for source in (cfg, cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}):
        dtype = source.get("torch_dtype") or source.get("dtype")
        if isinstance(dtype, str) and dtype in _DTYPES:
            return fmt, _DTYPES[dtype]
    for p in weights:
        if p.suffix == ".safetensors" and (dtype := _safetensors_dtype(p)):
            return fmt, dtype
    return fmt, None


# --- verification -----------------------------------------------------------------------------


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        if algo == "sha1":  # a git blob id: sha1 of "blob <size>\0" + content
            h.update(f"blob {path.stat().st_size}\0".encode())
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_index_shards(folder: Path, report: VerifyReport) -> None:
    """A sharded checkpoint lists its shards in *.index.json; each must be there."""
    for index in folder.rglob("*.index.json"):
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            report.problems.append(f"{index.relative_to(folder)}: unreadable index")
            continue
        for shard in sorted(set(weight_map.values())):
            if not (index.parent / shard).exists():
                report.problems.append(f"{shard}: missing (listed in {index.name})")


def _verify_hf(snapshot: Path, report: VerifyReport) -> None:
    """HF blobs are named by their hash: sha256 for LFS files, the git blob sha1 for small ones."""
    for link in _files_under(snapshot):
        rel = link.relative_to(snapshot).as_posix()
        blob = link.resolve()
        if not blob.exists():
            report.problems.append(f"{rel}: missing (broken link to {blob.name})")
            continue
        report.files_checked += 1
        report.bytes_checked += blob.stat().st_size
        if is_sha256(blob.name):
            if _hash_file(blob, "sha256") != blob.name:
                report.problems.append(f"{rel}: sha256 does not match (corrupted blob {blob.name[:12]}...)")
        elif is_commit_hash(blob.name):
            if _hash_file(blob, "sha1") != blob.name:
                report.problems.append(f"{rel}: git blob id does not match (corrupted blob {blob.name[:12]}...)")
    _check_index_shards(snapshot, report)


def _verify_manifest(folder: Path, report: VerifyReport) -> None:
    manifest = read_manifest(folder)
    if manifest is None:
        report.problems.append(f"{MANIFEST}: missing or unreadable (an unfinished download)")
        return
    for rel, meta in sorted(manifest["files"].items()):
        path = folder / rel
        if not path.is_file():
            report.problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        report.files_checked += 1
        report.bytes_checked += size
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("size") is not None and meta["size"] != size:
            report.problems.append(f"{rel}: size {size} bytes, expected {meta['size']}")
        elif meta.get("sha256") and _hash_file(path, "sha256") != str(meta["sha256"]).lower():
            report.problems.append(f"{rel}: sha256 does not match the manifest")


def _verify_files_present(folder: Path, files: list[str], report: VerifyReport) -> None:
    for rel in files:
        path = folder / rel
        if not path.is_file():
            report.problems.append(f"{rel}: missing (expected under {folder})")
            continue
        report.files_checked += 1
        report.bytes_checked += path.stat().st_size
    _check_index_shards(folder, report)


def verify(name: str, catalog: Catalog | None = None) -> VerifyReport:
    """Check an installed model's files: present, right size, right hash where a hash is known."""
    loc = locate(name, catalog or load_catalog())
    if loc.path is None:
        raise StoreError(f"'{name}' is not installed" + (f" (pull it with `ominix pull {loc.id}`)"
                                                         if loc.kind != "folder" else ""))
    report = VerifyReport(loc.id, loc.path)
    if loc.kind == "hugging_face":
        _verify_hf(loc.path, report)
    elif loc.kind == "store":
        _verify_manifest(loc.path, report)
    elif loc.kind == "manual":
        _verify_files_present(loc.path, loc.entry.source.files, report)
    else:
        files = [p.relative_to(loc.path).as_posix() for p in _files_under(loc.path)]
        _verify_files_present(loc.path, files, report)
    if report.files_checked == 0 and report.ok:
        report.problems.append("no files found")
    _remember(loc.path, report.ok)
    return report


# --- remembered verification ------------------------------------------------------------------


def _state_path() -> Path:
    return config.ominix_home() / "state" / "verified.json"


def _load_state() -> dict:
    try:
        data = json.loads(_state_path().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha1()
    for p in _files_under(folder):
        try:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p.relative_to(folder)}\0missing\n".encode())
    return h.hexdigest()


def _remembered(state: dict, folder: Path) -> bool | None:
    record = state.get(str(folder))
    if isinstance(record, dict) and record.get("fingerprint") == _fingerprint(folder):
        return bool(record.get("ok"))
    return None


def _save_state(state: dict) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remember(folder: Path, ok: bool) -> None:
    state = _load_state()
    state[str(folder)] = {"ok": ok, "fingerprint": _fingerprint(folder), "checked_at": int(time.time())}
    _save_state(state)


def _forget_under(root: Path) -> None:
    state = _load_state()
    kept = {k: v for k, v in state.items() if not Path(k).is_relative_to(root)}
    if len(kept) != len(state):
        _save_state(kept)


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
    _forget_under(target)
    return removed


# --- scan: import folders already on disk -----------------------------------------------------


def _is_model_folder(folder: Path) -> bool:
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return False
    return any(n in ("config.json", "model_index.json") or n.endswith((".safetensors", ".gguf")) for n in names)


def _candidates(root: Path) -> list[tuple[Path, str | None]]:
    """(model folder, owner/repo or None) under root: root itself, <root>/<name>, <root>/<owner>/<repo>,
    and Hugging Face cache repos (models--owner--repo) at depth one or two."""
    if _is_model_folder(root):
        return [(root, None)]
    found: list[tuple[Path, str | None]] = []

    def children(d: Path) -> list[Path]:
        try:
            return sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return []

    def hf_repo(d: Path) -> tuple[Path, str] | None:
        repo_id = repo_id_of_folder(d.name)
        snap = _hf_snapshot(d, None) if repo_id else None
        return (snap, repo_id) if snap is not None else None

    for child in children(root):
        if child.name.startswith(HF_PREFIX):
            found += [hf_repo(child)] if hf_repo(child) else []
        elif _is_model_folder(child):
            found.append((child, None))
        else:
            for grandchild in children(child):
                if grandchild.name.startswith(HF_PREFIX):
                    found += [hf_repo(grandchild)] if hf_repo(grandchild) else []
                elif _is_model_folder(grandchild):
                    found.append((grandchild, f"{child.name}/{grandchild.name}"))
    return found


def _category_and_architecture(folder: Path) -> tuple[str, str | None]:
    model_type = str(_read_config(folder).get("model_type") or "").lower().replace("-", "_")
    arch = model_type if re.match(r"^[a-z][a-z0-9_]*$", model_type) else None
    return kinds.detect(folder).category, arch


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "model"


def scan(directory, dry_run: bool = False) -> list[ScanResult]:
    """Register model folders found under `directory` as user-overlay entries (nothing is copied).

    Folders inside the store itself are reported as already installed; folders an entry already
    points at are reported as already registered. With dry_run nothing is written.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise StoreError(f"cannot scan '{directory}': not a directory")
    root = root.resolve()
    catalog = load_catalog()
    registered = {e.local_path.resolve(): e.id for e in catalog if e.source_kind == "manual"}
    store_roots = [config.hf_hub_cache().resolve(), config.models_dir().resolve()]
    taken = {n.lower() for e in catalog for n in e.names()}
    new_entries: list[dict] = []
    results: list[ScanResult] = []
    for folder, repo_id in _candidates(root):
        folder = folder.resolve()
        fmt, quant = detect_format_and_quantization(folder, name=repo_id or folder.name)
        base = ScanResult(folder, "", fmt, quant, "", repo_id)
        if any(folder.is_relative_to(r) for r in store_roots):
            known = catalog.by_repo_id(repo_id) if repo_id else None
            base.id, base.action = (known.id if known else repo_id or folder.name), "already installed"
            results.append(base)
            continue
        if folder in registered:
            base.id, base.action = registered[folder], "already registered"
            results.append(base)
            continue
        base_id = _slug(repo_id.split("/")[-1] if repo_id else folder.name)
        model_id, n = base_id, 1
        while model_id in taken:  # never shadow a catalog id: suffix -local, -local-2, ...
            model_id = f"{base_id}-local" if n == 1 else f"{base_id}-local-{n}"
            n += 1
        category, arch = _category_and_architecture(folder)
        entry = make_custom_entry(model_id, path=folder, category=category, architecture=arch,
                                  name=repo_id or folder.name)
        entry["description"] = f"Imported by `ominix scan` from {folder}."
        entry["tags"] = ["local", "scanned"]
        entry["runtime"]["quantization"] = quant
        if repo_id and repo_id.lower() not in taken:
            entry["aliases"] = [repo_id]
            taken.add(repo_id.lower())
        taken.add(model_id)
        new_entries.append(entry)
        base.id, base.action = model_id, "would add" if dry_run else "added"
        results.append(base)
    if new_entries and not dry_run:
        add_user_entries(new_entries)
    return results


__all__ = [
    "InstalledModel", "ScanResult", "StoreError", "UnknownModelError", "VerifyReport",
    "detect_format_and_quantization", "incomplete_downloads", "list_installed", "model_dir", "remove",
    "removal_target",
    "scan", "verify",
]
