"""`scan` imports folders that are already on disk (`<dir>/<owner>/<repo>`, plain model folders, or a
Hugging Face cache) by registering a `manual` entry in the user overlay that points at the folder.
Nothing is copied or moved, so the folder stays where the user keeps it and `rm` never deletes it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ominix import config, kinds
from ominix.hub.files import detect_format_and_quantization, hf_snapshot, read_config
from ominix.hub.names import HF_PREFIX, repo_id_of_folder
from ominix.hub.store import StoreError
from ominix.registry import add_user_entries, load_catalog, make_custom_entry


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
        snap = hf_snapshot(d, None) if repo_id else None
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
    model_type = str(read_config(folder).get("model_type") or "").lower().replace("-", "_")
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
