"""`verify`: an installed model's files present, of the right size, and of the right hash where one
is known (Hugging Face blobs are named by theirs; store folders carry a manifest)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ominix.hub.files import files_under
from ominix.hub.names import MANIFEST, is_commit_hash, is_sha256, read_manifest
from ominix.hub.store import StoreError, locate
from ominix.hub.verified import remember
from ominix.registry import Catalog, load_catalog


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
    for link in files_under(snapshot):
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
        files = [p.relative_to(loc.path).as_posix() for p in files_under(loc.path)]
        _verify_files_present(loc.path, files, report)
    if report.files_checked == 0 and report.ok:
        report.problems.append("no files found")
    remember(loc.path, report.ok)
    return report
