"""The model catalog: load, validate, look up, and the user's overlay file.

The shipped catalog is `registry/models_registry.json` (packaged as `ominix._catalog`). Its schema is
OminiX Studio's (seed 000): `{"version": str, "models": [entry, ...]}`, each entry with

    id, name, description, category, tags?,
    source   {kind, ...}                      (see SOURCE KINDS)
    storage  {local_path, size_bytes, size_display}
    runtime  {api_type, api_model_id, memory_gb, platforms?, supports_images?, supports_streaming?,
              quantization?}
    ui       {panel_type, icon?}

OminiX adds a few optional top-level fields:
    architecture   the module under ominix/models/ that runs the checkpoint ("qwen3", "glm4_moe", ...)
    aliases        other names that resolve to this entry (case-insensitive, e.g. "qwen3:0.6b")
    notes          why an entry is what it is (e.g. why a repo differs from the Studio catalog)
    requires       ids of other entries this one needs at run time (funasr-qwen4b needs qwen3-4b)

Enums are seed 000's, extended minimally for embeddings:
    category    llm, vlm, asr, tts, image_gen, + embedding
    api_type    chat_completions, speech_recognition, text_to_speech, image_generation, + embeddings
    panel_type  llm_chat, vlm_chat, asr, tts, image_gen, + embedding
and category fixes panel_type (llm -> llm_chat, vlm -> vlm_chat, others the same word).

SOURCE KINDS
    hugging_face  {repo_id, revision="main", allow_patterns?}   -> the shared HF cache
    model_scope   {repo_id, revision="master"}                  -> models_dir()/<id>/
    url           {url, sha256 (64 hex or null), filename?}     -> models_dir()/<id>/<filename>
    manual        {url (where to get it), files: [relpaths]}    -> the user places `files` under
                                                                   storage.local_path
`allow_patterns` (glob list) limits a hugging_face pull to the files a runtime needs, for repos that
also carry ONNX/TF/PyTorch copies of the same weights.

The user overlay (config.user_registry_path()) has the same schema; its entries add to the catalog or
replace the shipped entry with the same id.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ominix import config
from ominix.hub.names import hf_repo_dir, is_repo_id
from ominix.entries import (  # noqa: F401  (re-exported: the catalog's vocabulary)
    API_TYPES,
    CATALOG_VERSION,
    CATEGORIES,
    CATEGORY_API,
    CATEGORY_PANEL,
    PANEL_TYPES,
    SOURCE_KINDS,
    ModelEntry,
    RegistryError,
    UnknownModelError,
    entry_from_dict,
    field_error,
)


@dataclass
class Catalog:
    entries: list[ModelEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {}
        for entry in self.entries:
            for name in entry.names():
                self._by_name[name.lower()] = entry

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, name: str) -> ModelEntry | None:
        return self._by_name.get(name.strip().lower())

    def get(self, name: str) -> ModelEntry:
        entry = self.find(name)
        if entry is None:
            close = difflib.get_close_matches(name.lower(), list(self._by_name), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise UnknownModelError(
                f"unknown model '{name}': {hint}run `ominix list --all` to see catalog ids"
            )
        return entry

    def by_category(self, category: str) -> list[ModelEntry]:
        return [e for e in self.entries if e.category == category]

    def by_repo_id(self, repo_id: str) -> ModelEntry | None:
        """The first hugging_face entry that downloads `repo_id` (case-insensitive)."""
        wanted = repo_id.lower()
        for entry in self.entries:
            if entry.source_kind == "hugging_face" and entry.repo_id.lower() == wanted:
                return entry
        return None



def _check_unique(entries: list[ModelEntry], origin: str, check_requires: bool = True) -> None:
    """Every id and alias resolves to one entry; `requires` names known entries."""
    owner: dict[str, str] = {}
    for entry in entries:
        for i, name in enumerate(entry.names()):
            key = name.lower()
            if key in owner and not (i > 0 and owner[key] == entry.id):
                field_name = "id" if i == 0 else "aliases"
                raise RegistryError(
                    f"{origin}: entry '{entry.id}': field '{field_name}' '{name}' is already used by "
                    f"entry '{owner[key]}'"
                )
            owner[key] = entry.id
    ids = {e.id for e in entries}
    for entry in entries if check_requires else ():
        for need in entry.requires:
            if need not in ids:
                raise RegistryError(f"{origin}: entry '{entry.id}': field 'requires' names unknown entry '{need}'")


def validate_document(data: object, origin: str, *, check_requires: bool = True) -> list[ModelEntry]:
    """Validate a parsed catalog document; returns its entries or raises RegistryError."""
    if not isinstance(data, dict):
        raise RegistryError(f"{origin}: the document must be a JSON object with 'version' and 'models'")
    if not isinstance(data.get("version"), str):
        raise RegistryError(f"{origin}: field 'version' is required (a string such as \"1.0.0\")")
    models = data.get("models")
    if not isinstance(models, list):
        raise RegistryError(f"{origin}: field 'models' is required (a list of entries)")
    entries = [entry_from_dict(raw, f"{origin}: entry #{i}", origin) for i, raw in enumerate(models)]
    _check_unique(entries, origin, check_requires)
    return entries


def _read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such file") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def validate_file(path) -> list[ModelEntry]:
    """Validate a catalog or overlay file on its own (`requires` may point at shipped entries)."""
    path = Path(path).expanduser()
    return validate_document(_read_json(path), str(path), check_requires=False)


# --- loading ----------------------------------------------------------------------------------


def _shipped_catalog_text() -> tuple[str, str]:
    """The packaged catalog; from a source checkout whose editable install predates the mapping,
    the repository's registry/ folder."""
    from importlib import resources

    try:
        res = resources.files("ominix._catalog").joinpath("models_registry.json")
        return res.read_text(encoding="utf-8"), str(res)
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parent.parent / "registry" / "models_registry.json"
        return path.read_text(encoding="utf-8"), str(path)


def load_shipped_entries() -> list[ModelEntry]:
    text, origin = _shipped_catalog_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{origin}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    return validate_document(data, "catalog")


def load_user_entries() -> list[ModelEntry]:
    path = config.user_registry_path()
    if not path.exists():
        return []
    return validate_document(_read_json(path), str(path), check_requires=False)


def _merge(base: list[ModelEntry], overlay: list[ModelEntry]) -> list[ModelEntry]:
    merged = {e.id: e for e in base}
    for entry in overlay:
        merged[entry.id] = entry
    return list(merged.values())


def load_catalog(include_user: bool = True) -> Catalog:
    """Shipped catalog, plus the user's overlay (which adds entries or replaces them by id)."""
    entries = load_shipped_entries()
    if include_user:
        user = load_user_entries()
        entries = _merge(entries, user)
        _check_unique(entries, str(config.user_registry_path()))
    return Catalog(entries)


# --- the user overlay -------------------------------------------------------------------------


def _write_document(path: Path, entries: list[ModelEntry]) -> None:
    """Write atomically: a crash leaves the old file, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": CATALOG_VERSION, "models": [e.to_dict() for e in entries]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_overlay(user_entries: list[ModelEntry]) -> None:
    """Check the overlay against the shipped catalog, then write it."""
    path = config.user_registry_path()
    _check_unique(_merge(load_shipped_entries(), user_entries), str(path))
    _write_document(path, user_entries)


def add_user_entries(entries: list[dict]) -> list[ModelEntry]:
    """Validate entries and add them to the overlay in one write (replacing entries with their ids)."""
    path = config.user_registry_path()
    new = [entry_from_dict(e, f"{path}: entry", str(path)) for e in entries]
    ids = {e.id for e in new}
    _save_overlay([e for e in load_user_entries() if e.id not in ids] + new)
    return new


def add_user_entry(entry: dict) -> ModelEntry:
    """Validate `entry` and add it to the overlay (replacing an overlay or shipped entry with its id)."""
    return add_user_entries([entry])[0]


def remove_user_entry(entry_id: str) -> None:
    user = load_user_entries()
    kept = [e for e in user if e.id != entry_id.lower()]
    if len(kept) == len(user):
        shipped = {e.id for e in load_shipped_entries()}
        why = "it is a shipped catalog entry" if entry_id.lower() in shipped else "no such entry"
        raise RegistryError(f"cannot remove '{entry_id}' from {config.user_registry_path()}: {why}")
    _save_overlay(kept)


def export_user_entries(path) -> list[ModelEntry]:
    entries = load_user_entries()
    _write_document(Path(path).expanduser(), entries)
    return entries


def import_user_entries(path) -> list[ModelEntry]:
    """Merge a catalog file (or seed 003's `{"custom": [{id, name, url, sha256}]}` list) into the overlay."""
    path = Path(path).expanduser()
    data = _read_json(path)
    if isinstance(data, dict) and "custom" in data and "models" not in data:
        data = {"version": CATALOG_VERSION, "models": [_custom_url_entry(c, path, i)
                                                       for i, c in enumerate(data["custom"] or [])]}
    imported = validate_document(data, str(path), check_requires=False)
    ids = {e.id for e in imported}
    user = [e for e in load_user_entries() if e.id not in ids] + list(imported)
    _save_overlay(user)
    return imported


def _custom_url_entry(raw: object, path: Path, index: int) -> dict:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("url"), str):
        raise RegistryError(f"{path}: custom entry #{index}: fields 'id' and 'url' are required")
    return make_custom_entry(raw["id"], url=raw["url"], sha256=raw.get("sha256"), name=raw.get("name"))


# --- building custom entries ------------------------------------------------------------------


def size_display(size_bytes: int) -> str:
    if size_bytes <= 0:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size_bytes >= scale:
            return f"~{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def make_custom_entry(
    id: str,
    *,
    repo_id: str | None = None,
    url: str | None = None,
    sha256: str | None = None,
    path=None,
    category: str = "llm",
    architecture: str | None = None,
    name: str | None = None,
) -> dict:
    """An overlay entry for a Hugging Face repo, a direct URL, or a folder already on disk.

    A folder becomes a `manual` entry whose `files` are what is there now, so `ominix verify` notices
    if any of them go missing later.
    """
    where = f"entry '{id}'"
    if sum(x is not None for x in (repo_id, url, path)) != 1:
        raise RegistryError(f"{where}: give exactly one of a repo id, a URL or a path")
    if category not in CATEGORIES:
        raise field_error(where, "category", f"'{category}' is not one of {', '.join(CATEGORIES)}")
    size = 0
    if repo_id is not None:
        repo, _, revision = repo_id.partition("@")
        source = {"kind": "hugging_face", "repo_id": repo, "revision": revision or "main"}
        # an invalid repo id is refused by the validation below, naming the field
        local_path = str(hf_repo_dir(repo) if is_repo_id(repo) else config.hf_hub_cache() / repo)
    elif url is not None:
        source = {"kind": "url", "url": url, "sha256": sha256.lower() if sha256 else None,
                  "filename": Path(urlparse(url).path).name or None}
        local_path = str(config.models_dir() / id)
    else:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise RegistryError(f"{where}: path '{path}' is not a directory")
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not files:
            raise RegistryError(f"{where}: path '{folder}' has no files")
        size = sum((folder / f).stat().st_size for f in files)
        source = {"kind": "manual", "url": folder.as_uri(), "files": files}
        local_path = str(folder)
    entry = {
        "id": id,
        "name": name or id,
        "description": f"User-added model ({source['kind']}).",
        "category": category,
        "tags": ["custom"],
        "source": source,
        "storage": {"local_path": local_path, "size_bytes": size, "size_display": size_display(size)},
        "runtime": {
            "api_type": CATEGORY_API[category],
            "api_model_id": id,
            "memory_gb": round(size * 1.2 / 1e9, 1),
            "platforms": ["apple_silicon"],
            "supports_images": category == "vlm",
            "supports_streaming": category in ("llm", "vlm"),
        },
        "ui": {"panel_type": CATEGORY_PANEL[category]},
    }
    if architecture:
        entry["architecture"] = architecture
    entry_from_dict(entry, "custom entry", "user")  # fail now, naming the field, rather than at save time
    return entry
